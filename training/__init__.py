"""spanish_ft training: QLoRA recipes, adapter fusion and merging, evaluation. `python -m training --help`.

The map, bottom layer first (an import never runs up this list; tests/test_layers.py checks it):
    files.py       the bundle root, the output rule (check_output), atomic writes, locks, sha256
    safeyaml.py    YAML from users with anchors and aliases refused; error values shortened
    userdata.py    the door for user JSON and YAML: parsed safely, checked against a schema, mistakes by key path
    sandbox.py     the webui's Jinja sandbox with bounds: no template renders a huge text or runs for long
    strict_json.py JSON rows read strictly: lone surrogates, repeated keys, huge integers, deep nesting refused
    families.py    the three model families: architecture, LoRA targets, template, preset
    templates.py   the webui-identical prompt renderer (+ the `render` command)
    config.py      recipe YAML -> overrides -> schema.json -> frozen settings, paths resolved once
    data/          rows read -> conversations -> token ids with answer-only labels -> batches -> prepared splits
    adapters/      adapter folders: the one door every reader passes (folder.py: config allow-list,
                   safetensors header, pickle, names), the training record (record.py: its one home),
                   card, factors, what fuses exactly, fuse, merge, and gguf/: the merged model as a GGUF file
                   for llama.cpp (export, checks, writer, layout, vocab, record; llamacpp: its binaries)
    memory/        the memory estimator (torch-free) with its settings dataclass, report + CLI, configs/
    datasets/      the shipped Spanish datasets, citations, validation, article-question derivation, and corpus/:
                   the law's articles built from the norms' PDFs (pdf, articles, build: the `corpus` command,
                   read, verify: the validator's check of every row against its article)
    model/         4-bit base model + LoRA, frozen embeddings, stacking on a frozen adapter, LoRA dropout
                   drawn once per input, NF4 layers in the autocast dtype, gradient checkpointing `auto`
    retrieval/     the article search behind "Fuentes" over datasets/' law corpus, one function for the trainer
                   and the extension; the index cached by corpus sha256 (the `retrieve` command); fuentes:
                   the articles in the user's turn (training, evaluation and the chat), RAFT rows, citation check
    trainer/       TRL's SFTTrainer configured in one place, progress, Ctrl-C -> checkpoint, resume only with the
                   recipe the checkpoint recorded, the folders a run
                   claims (locked) and leaves
    evaluate/      base vs adapters on held-out data: compare, generate, report, the machine and data it ran on;
                   across: several families' reports in one (the `compare` command)
    train.py       THE recipe, top to bottom: config -> template -> data -> model -> trainer -> folder
    pipeline/      one family end to end: the plan (memory, time, refusal), adapters trained in order, reused
                   or resumed, fused; evaluation; webui install (the `pipeline` command)
    demo/          the CPU demo: the pipeline on the demo model, plus its model and the side by side
    __main__.py    one command table; each command's module is imported only when it runs
"""
