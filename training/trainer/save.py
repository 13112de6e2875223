"""The adapter folder a training run leaves: LoRA weights, training record, model card, loss curve.

The folder is written to a temporary sibling and renamed into place, so an interrupted run
leaves the previous adapter or the new one, never half of one. Only the main process
writes; under FSDP every process first takes part in gathering the adapter's weights.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from training.adapters.card import render_model_card
from training.adapters.record import TrainingRecord, write_record
from training.config import RunConfig
from training.files import atomic_output_dir
from training.model.load import fsdp_enabled

LOSS_PLOT_NAME = "loss.png"


def save_adapter(trainer, config: RunConfig, record: TrainingRecord) -> Path:
    """Write the adapter folder atomically; drop the work folder's checkpoints unless kept."""
    accelerator = trainer.accelerator
    # Under FSDP the LoRA weights are sharded: gathering them is collective, on every process.
    state_dict = accelerator.get_state_dict(trainer.model) if fsdp_enabled() else None
    if accelerator.is_main_process:
        with atomic_output_dir(config.output_dir) as folder:
            model = accelerator.unwrap_model(trainer.model)
            state = adapter_state(model, state_dict, config.lora.save_dtype)
            model.save_pretrained(folder, state_dict=state, safe_serialization=True)
            write_record(folder, record)
            # replaces the card PEFT writes with ours, made from the record
            (folder / "README.md").write_text(render_model_card(record), encoding="utf-8")
            save_loss_plot(trainer.state.log_history, folder / LOSS_PLOT_NAME, title=config.name)
        if not config.training.keep_checkpoints:
            remove_checkpoints(config.work_dir)
    accelerator.wait_for_everyone()
    return config.output_dir


def adapter_state(model, state_dict: dict | None, save_dtype: str) -> dict:
    """The state dict to save, LoRA weights cast to `lora.save_dtype` (4-bit base tensors untouched)."""
    state = state_dict if state_dict is not None else model.state_dict()
    dtype = getattr(torch, save_dtype)
    return {key: value.to(dtype) if "lora_" in key and value.is_floating_point() else value
            for key, value in state.items()}


def remove_checkpoints(work_dir: Path) -> None:
    """Delete `checkpoint-*` folders (TensorBoard logs stay) once the adapter is safely written."""
    for checkpoint in Path(work_dir).glob("checkpoint-*"):
        shutil.rmtree(checkpoint, ignore_errors=True)


def save_loss_plot(log_history: list[dict], path: Path, title: str) -> None:
    """Plot the train and eval losses of a Trainer's `state.log_history` to a PNG file."""
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    train = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry]
    evaluation = [(entry["step"], entry["eval_loss"]) for entry in log_history if "eval_loss" in entry]
    figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    for points, label, style in ((train, "train", "-"), (evaluation, "eval", "o--")):
        if points:
            steps, losses = zip(*points, strict=True)
            axes.plot(steps, losses, style, label=label)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss (answer tokens)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if train or evaluation:
        axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
