"""spanish_ft: Spanish adapters for text-generation-webui.

Webui hooks only; the logic lives in small modules beside this file so tests can import
it without a webui. The webui loads this file either as `extensions.spanish_ft.script`
or, from user_data/extensions, with no parent package: imports are therefore absolute,
from this folder put on sys.path.
"""

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

params = {
    "display_name": "spanish_ft (adaptadores en español)",
    "is_tab": False,
}


def setup():
    """Runs once when the webui imports the extension."""
    print("spanish_ft: extensión cargada. Elige un adaptador <familia>-fusionado en el menú LoRA.")


def ui():
    """Builds the extension's controls in the webui (grows with the extension issue)."""
    import gradio as gr

    gr.Markdown(
        "**spanish_ft**: elige un adaptador en *Model → LoRA(s)*, usa el modo *instruct* con la "
        "plantilla `spanish_ft-<Familia>` y el preset del mismo nombre."
    )
