"""spanish_ft: Spanish adapters for text-generation-webui.

Start the webui with `--extensions spanish_ft`; the extension's tab has three parts:
- Adaptador: recognises the active spanish_ft adapter (its training record), checks that
  the loaded base model fits it, applies its instruction template, preset and instruct
  mode in the webui's own controls ("Aplicar perfil", or on its own after the LoRA menu's
  Apply), and guards against loading several adapters at once (the webui cannot combine
  them), offering the fused adapter or an exact fusion of the selection; "Exportar a GGUF"
  merges the active adapter into its base as a GGUF file for the llama.cpp loader, and a GGUF
  model exported so gets its profile when loaded.
- Comparar: one question answered by the base model and each adapter of its family.
- Memoria: memory needed for inference and training, as `python -m training memory`.
Fuentes (a switch above the three parts): the law articles for each question in the prompt, listed
under the answer, citations checked (spanish_ft_ext/fuentes.py).

Webui hooks only; the logic lives in the package `spanish_ft_ext` beside this file (its
__init__ maps it). The webui loads this file as `extensions.spanish_ft.script` or, from
user_data/extensions, with no parent package: this folder is therefore put on sys.path and
the package imported by its own distinctive name, the one top-level name the extension adds
(the installer copies the parts of the bundle's `training` package it uses here too).
"""

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

# The package's modules import the webui's modules.shared, so the hooks import them when called:
# this file stays importable without a webui (tests read `params` and the hook signatures).

# Every key can be overridden in the webui's settings.yaml as `spanish_ft-<key>: value`.
params = {
    # Name of the extension's tab.
    "display_name": "spanish_ft",
    # The controls need room (side-by-side answers, tables): the extension gets its own tab.
    "is_tab": True,
    # Apply the adapter's template, preset and instruct mode once each time a new adapter is
    # applied (LoRA menu, --lora at start-up, the guard's buttons). False: only on "Aplicar perfil".
    "auto_profile": True,
    # Comparar: seed shared by every variant, tokens per answer, and greedy decoding instead of
    # sampling with the preset (both are reproducible; greedy ignores the preset's samplers).
    "compare_seed": 42,
    "compare_max_new_tokens": 200,
    "compare_greedy": False,
    # Fuentes: in instruct mode, with a spanish_ft leyes-ec or fusionado adapter active, each question
    # gets the law articles retrieved for it in the prompt, as the adapter was trained; they are listed
    # under the answer, and a citation of an article not given is marked "cita no verificada".
    "fuentes": True,
    # Memoria: default sequence length (tokens), batch size and LoRA rank of the calculator.
    "memory_seq_len": 2048,
    "memory_batch": 1,
    "memory_rank": 16,
}


def setup():
    """Runs once when the webui imports the extension (after the start-up model and --lora load)."""
    from spanish_ft_ext import startup

    startup.check_at_startup(params)


def state_modifier(state):
    """Before each generation (chat, API): warn in the console about a broken adapter state.

    The state is returned unchanged: the user's template and preset choices are never overridden.
    """
    from spanish_ft_ext import startup

    startup.check_before_generation(state)
    return state


def chat_input_modifier(text, visible_text, state):
    """Fuentes: the law articles for the question go into the user's turn (UI and API chats alike);
    the chat shows the question as typed."""
    from spanish_ft_ext import chat

    return chat.chat_input(params, text, visible_text, state)


def output_modifier(string, state, is_chat=False):
    """Fuentes: the articles given and any unverified citation, under the answer shown in the chat."""
    from spanish_ft_ext import chat

    return chat.output(string, is_chat)


def ui():
    """Builds the extension's tab and its listeners on the webui's LoRA menu and model status."""
    from spanish_ft_ext.ui import build_ui

    build_ui(params)
