"""The extension's tab: its three parts, each built (widgets and handlers) by its own module.

script.ui() calls `build_ui(params)` inside the webui's tab for the extension (`is_tab`).
"""

from __future__ import annotations

import gradio as gr

from .adapter_tab import build_adapter_tab
from .compare_tab import build_compare_tab
from .memory_tab import build_memory_tab


def build_ui(params: dict) -> None:
    """Adaptador (profile and multi-adapter guard), Comparar (side by side), Memoria (calculator)."""
    with gr.Tab("Adaptador"):
        build_adapter_tab(params)
    with gr.Tab("Comparar"):
        build_compare_tab(params)
    with gr.Tab("Memoria"):
        build_memory_tab(params)
