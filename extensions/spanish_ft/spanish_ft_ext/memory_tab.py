"""The "Memoria" tab: which config to estimate (loaded model, webui model, file, hub id), and the table.

The numbers and the table are memory.py's (the same as `python -m training memory`); this
file holds the tab's widgets and its handler.
"""

from __future__ import annotations

import gradio as gr

from training.memory.arch import load_model_config

from . import webui
from .memory import memory_markdown, memory_rows


def build_memory_tab(params: dict) -> None:
    gr.Markdown("Memoria necesaria para inferencia (16, 8 y 4 bits) y entrenamiento (completo, LoRA, QLoRA), con "
                "el desglose. Son los mismos números que `python -m training memory`.")
    with gr.Row():
        source = gr.Textbox(label="Modelo: vacío = el cargado; si no, id del hub o ruta a config.json", value="")
        seq_len = gr.Number(label="Longitud de secuencia (tokens)", value=params["memory_seq_len"], precision=0)
        batch = gr.Number(label="Lote (batch)", value=params["memory_batch"], precision=0)
        rank = gr.Number(label="Rango LoRA (r)", value=params["memory_rank"], precision=0)
        checkpointing = gr.Checkbox(label="Gradient checkpointing", value=True)
    run = gr.Button("Calcular", variant="primary")
    table = gr.Markdown(elem_id="sft-memory")
    run.click(memory_click, [source, seq_len, batch, rank, checkpointing], table)


def model_config(source: str) -> dict:
    """The loaded model's config when `source` is empty; else a model of the webui's models folder,
    or what `python -m training memory` accepts (config.json, folder, shipped name, hub id)."""
    source = (source or "").strip()
    if not source:
        config = webui.loaded_model_full_config()
        if config is None:
            raise ValueError("no hay ningún modelo cargado: carga uno en Model, o escribe un id del hub "
                             "o la ruta de un config.json")
        return config
    in_webui = webui.models_dir() / source
    return load_model_config(str(in_webui) if in_webui.is_dir() else source)


def memory_click(source, seq_len, batch, rank, checkpointing) -> str:
    """"Calcular": the table, or a Spanish error in the browser."""
    try:
        config = model_config(source)
        rows = memory_rows(config, int(seq_len or 0), int(batch or 0), int(rank or 0), bool(checkpointing))
    except (ValueError, FileNotFoundError) as err:
        webui.logger.warning(f"spanish_ft: memoria: {err}")
        raise gr.Error(f"No se pudo calcular la memoria: {err}") from err
    return memory_markdown(rows)
