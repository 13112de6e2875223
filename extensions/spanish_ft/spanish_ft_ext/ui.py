"""The extension's tab: its three parts, each built (widgets and handlers) by its own module.

script.ui() calls `build_ui(params)` inside the webui's tab for the extension (`is_tab`).
"""

from __future__ import annotations

import gradio as gr

from .adapter_tab import build_adapter_tab
from .compare_tab import build_compare_tab
from .memory_tab import build_memory_tab


def build_ui(params: dict) -> None:
    """The Fuentes switch, then Adaptador (profile and multi-adapter guard), Comparar (side by side),
    Memoria (calculator)."""
    fuentes = gr.Checkbox(
        value=bool(params.get("fuentes", True)), label="Fuentes: artículos de la ley en el prompt",
        info="En modo instruct, con un adaptador leyes-ec o fusionado de spanish_ft: cada pregunta recibe los "
             "artículos que la responden; se listan bajo la respuesta y se marca toda cita no verificada. "
             "No es asesoría legal; los textos pueden no estar al día.")
    fuentes.change(lambda value: params.update(fuentes=bool(value)), fuentes, None)
    with gr.Tab("Adaptador"):
        build_adapter_tab(params)
    with gr.Tab("Comparar"):
        build_compare_tab(params)
    with gr.Tab("Memoria"):
        build_memory_tab(params)
