"""spanish_ft training: QLoRA recipes, adapter fusion and merging, evaluation. `python -m training --help`.

The map, bottom layer first: an import never runs up the layers nor in a circle, counting imports
inside functions. tests/test_layers.py checks the code against this map (every module named, in its
layer) and this map against README's. Each command lives in a module named after it (__main__.py).
1 files.py        the bundle root, the output rule (check_output), atomic writes, locks, sha256, GIB
1 safeyaml.py     YAML from users with anchors and aliases refused; error values shortened
1 userdata.py     the door for user JSON and YAML: parsed safely, checked against a schema, mistakes by key path
1 sandbox.py      the webui's Jinja sandbox with bounds: no template renders a huge text or runs for long
1 strict_json.py  JSON rows read strictly: lone surrogates, repeated keys, huge integers, deep nesting refused
1 families.py     the model families and every fact about them: architecture, LoRA targets, template, preset,
                  decoder layout, shipped memory config, llama.cpp architecture
1 templates.py    the webui-identical prompt renderer (+ the `render` command)
1 config.py       recipe YAML -> overrides -> schema.json -> frozen settings, paths resolved once
2 data/           rows read (`read`) -> `conversations` -> token ids with answer-only labels (`tokens`) ->
                  `batches` -> prepared splits (`prepare`)
2 adapters/       adapter folders: the one door every reader passes (`folder`: config allow-list with
                  `adapter_config`, safetensors header with `safetensors_header`, pickle, the files' names, an
                  adapter's base model), the training record (`record`: its one home), `card`, `factors`, what
                  fuses exactly (`fusable`), `fuse`, `merge`, and gguf/: the merged model as a GGUF file for
                  llama.cpp (`export`: the `export-gguf` command, `checks`, `writer`, `layout`, `gemma3`, `vocab`,
                  `file_record`: FILE.gguf.json; `llamacpp`: its binaries, the `build-llama-cpp` command)
2 memory/         the memory estimator (torch-free): `estimate` with its settings dataclass, its parts (`arch`,
                  `weights`, `activations`, `loss`), a recipe's peak (`recipe`), the table and the `memory`
                  command (`report`), configs/
2 datasets/       the shipped Spanish datasets, `citations`, validation (`validate`: the `validate-data`
                  command), the article-question rule (`derivation`) and the `derive-questions` command
                  (`derive`), and corpus/: the law's articles from the norms' PDFs (`pdf`, `articles`, `build`:
                  the `corpus` command, `read`, `verify`: every row checked against its article)
3 model/          4-bit base model + LoRA (`load`), frozen embeddings (`embeddings`), stacking on a frozen
                  adapter (`stacking`), LoRA dropout drawn once per input (`dropout`), NF4 layers in the
                  autocast dtype (`autocast`), gradient checkpointing `auto` (`checkpointing`)
3 retrieval/      the article search behind "Fuentes" over datasets/' law corpus, one function for the trainer
                  and the extension (`analyze`, `query`, `definitions`, `index`, `scoring`, `cache`: by corpus
                  sha256, `search`, `retrieve`: the `retrieve` command), and the retrieved articles as the
                  model reads them in training and in the chat (`fuentes`)
4 trainer/        TRL's SFTTrainer built in one place (`build`), `progress`, Ctrl-C -> checkpoint
                  (`interrupt`), resume only with the recipe the checkpoint recorded (`resume`), the folders a
                  run claims (locked) and leaves (`save`)
4 evaluate/       base vs adapters on held-out data (`evaluate`: the `evaluate` command), `generate`, `report`,
                  the machine and presets a report records (`machine`); several families' reports in one
                  (`compare`: the `compare` command)
5 train.py        THE recipe, top to bottom: config -> template -> data -> model -> trainer -> folder
6 pipeline/       one family end to end (`pipeline`: the `pipeline` command): the plan (`plan`: memory, time,
                  refusal), adapters trained in order, reused or resumed, fused (`steps`), the webui install
                  (`webui`)
7 demo/           the CPU demo (`demo`: the `demo` command): the pipeline on the demo model, its model (`model`:
                  the `fetch-demo-model` command) and where its packages come from (`sources`)
8 __main__.py     one command table; each command's module is imported only when it runs
"""
