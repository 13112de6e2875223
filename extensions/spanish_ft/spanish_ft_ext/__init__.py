"""The spanish_ft extension's code: everything script.py's webui hooks call.

One package with a distinctive name, so the extension adds a single top-level name to the
webui's Python (besides the `training` package that install.py copies beside it). The map:
    webui.py        the only reader of the webui's modules (shared state, LoRA loading, generation)
    adapters.py     adapter folders of the LoRA menu and their training records; base-model checks
    profile.py      an adapter's template, preset and mode, and when to apply them
    guard.py        the multi-adapter guard and the exact fusion it offers
    comparison.py   one question answered by the base model and each adapter of its family
    memory.py       the memory table, from training.memory's estimator
    gguf.py         "Exportar a GGUF" (the export in a subprocess) and recognising an exported GGUF model
    startup.py      console checks at start-up and before each generation
    fuentes.py      Fuentes: when it applies, the user's turn with the law articles (as training rendered it),
                    the block under the answer with unverified citations marked
    chat.py         Fuentes in the chat hooks (chat_input_modifier, output_modifier): the turn being answered
    ui.py           the extension's tab, made of:
      adapter_tab.py  "Adaptador": status, profile, guard, GGUF export (widgets and handlers)
      compare_tab.py  "Comparar": side-by-side answers, Markdown export
      memory_tab.py   "Memoria": the memory calculator
Importing this package imports nothing: the modules are imported by the hooks that use them.
"""
