"""The adapter folder a training run leaves: LoRA weights, training record, model card, loss curve.

The folder is written to a temporary sibling and renamed into place, so an interrupted run
leaves the previous adapter or the new one, never half of one. Only the main process
writes; under FSDP every process first takes part in gathering the adapter's weights.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

from training.artifacts import RECORD_NAME, atomic_output_dir, library_versions, write_json_atomic
from training.card import RECORD_FORMAT, render_model_card
from training.config import RunConfig
from training.data import PreparedData
from training.model import fsdp_enabled
from training.plots import save_loss_plot
from training.templates import InstructionTemplate

LOSS_PLOT_NAME = "loss.png"


def build_record(config: RunConfig, template: InstructionTemplate, data: PreparedData, metrics: dict, model) -> dict:
    """The training record (fields documented in training/card.py)."""
    base = model.config
    return {
        "format": RECORD_FORMAT,
        "kind": "trained",
        "name": config.name,
        "family": config.model.family,
        "task": config.task,
        "base_model": {
            "name_or_path": config.model.base_model,
            "revision": config.model.revision or getattr(base, "_commit_hash", None),
        },
        "base_shape": {
            key: getattr(base, key, None) for key in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")
        },
        "template": {"name": template.name, "file": config.template, "sha256": template.sha256},
        "preset": config.preset,
        "dataset": data.record,
        "config": config.as_dict(),
        "metrics": metrics,
        "libraries": library_versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def save_adapter(trainer, config: RunConfig, record: dict) -> Path:
    """Write the adapter folder atomically; drop the work folder's checkpoints unless kept."""
    accelerator = trainer.accelerator
    # Under FSDP the LoRA weights are sharded: gathering them is collective, on every process.
    state_dict = accelerator.get_state_dict(trainer.model) if fsdp_enabled() else None
    if accelerator.is_main_process:
        with atomic_output_dir(config.output_dir) as folder:
            model = accelerator.unwrap_model(trainer.model)
            state = adapter_state(model, state_dict, config.lora.save_dtype)
            model.save_pretrained(folder, state_dict=state, safe_serialization=True)
            write_json_atomic(folder / RECORD_NAME, record)
            # replaces the card PEFT writes with ours, made from the record
            (folder / "README.md").write_text(render_model_card(record), encoding="utf-8")
            save_loss_plot(trainer.state.log_history, folder / LOSS_PLOT_NAME, title=config.name)
        if not config.training.keep_checkpoints:
            remove_checkpoints(config.work_dir)
    accelerator.wait_for_everyone()
    return config.output_dir


def adapter_state(model, state_dict: dict | None, save_dtype: str) -> dict:
    """The state dict to save, LoRA weights cast to `lora.save_dtype` (4-bit base tensors untouched)."""
    import torch

    state = state_dict if state_dict is not None else model.state_dict()
    dtype = getattr(torch, save_dtype)
    return {key: value.to(dtype) if "lora_" in key and value.is_floating_point() else value
            for key, value in state.items()}


def remove_checkpoints(work_dir: Path) -> None:
    """Delete `checkpoint-*` folders (TensorBoard logs stay) once the adapter is safely written."""
    for checkpoint in Path(work_dir).glob("checkpoint-*"):
        shutil.rmtree(checkpoint, ignore_errors=True)
