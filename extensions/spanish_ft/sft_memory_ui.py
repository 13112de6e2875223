"""The "Memoria" tab's handler: which config to estimate (loaded model, webui model, file, hub id), and the table."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import sft_webui as webui
from sft_memory import memory_markdown, memory_rows

from training.memory.arch import load_model_config


def model_config(source: str) -> dict:
    """The loaded model's config when `source` is empty; else a model of the webui's models folder,
    or what `python -m training memory` accepts (config.json, folder, shipped name, hub id)."""
    source = (source or "").strip()
    if not source:
        config = getattr(webui.shared.model, "config", None)
        if config is None:
            raise ValueError("no hay ningún modelo cargado: carga uno en Model, o escribe un id del hub "
                             "o la ruta de un config.json")
        return config.to_dict()
    in_webui = Path(webui.shared.args.model_dir) / source
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
