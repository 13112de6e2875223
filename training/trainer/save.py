"""The two folders a training run writes: the adapter folder it leaves and the work folder it uses.

Both are claimed before anything loads (`claim_folders`): the adapter folder must be new, or an
adapter of ours with `--replace` (training/files.py: check_output); the work folder is new or ours,
and is locked against a second run for the whole training. `check_folders` is the same check
without taking anything (the pipeline runs it for every training before the first starts). A
failure to write a checkpoint names the work folder and the likely cause (files.py: writing).

Essentials first: the LoRA weights, the training record and the model card are written to a
temporary sibling and renamed into place together, so an interrupted run leaves the previous
adapter or the new one, never half of one. The loss plot is an extra, drawn after that rename:
if it fails (matplotlib missing or broken) the run warns and the adapter stays. Only the main
process writes; under FSDP every process first takes part in gathering the adapter's weights.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch

from training.adapters.card import write_card
from training.adapters.record import RECORD_NAME, TrainingRecord, write_record
from training.config import RunConfig
from training.files import (
    OUTPUT_MARKER,
    atomic_output_dir,
    check_output,
    find_bundle_file,
    hold_lock,
    own_folder,
    write_extra,
    writing,
)
from training.model.load import fsdp_enabled

LOSS_PLOT_NAME = "loss.png"
ADAPTER = "adapter folder"
WORK = "training work folder (checkpoints, logs)"


@contextlib.contextmanager
def claim_folders(config: RunConfig, replace: bool) -> Iterator[None]:
    """Check the adapter folder and take the work folder (ours, locked) before anything is loaded."""
    if os.environ.get("RANK", "0") != "0":  # under accelerate launch the main process claims for all
        yield
        return
    check_folders(config, replace)
    new = not config.work_dir.exists()
    own_folder(config.work_dir, WORK)
    try:
        with hold_lock(config.work_dir), writing(config.work_dir, WORK):
            yield
    finally:
        if new and [p.name for p in config.work_dir.iterdir()] == [OUTPUT_MARKER]:  # stopped before training
            shutil.rmtree(config.work_dir, ignore_errors=True)


def check_folders(config: RunConfig, replace: bool) -> None:
    """The adapter folder (new, or ours with `replace`) and the work folder (new or ours), taking neither."""
    check_output(config.output_dir, replace=replace, marker=RECORD_NAME, what=ADAPTER, inputs=run_inputs(config))
    check_output(config.work_dir, replace=True, what=WORK)


def run_inputs(config: RunConfig) -> list[Path]:
    """What the run reads or keeps (data, template, base, frozen adapter, work folder): never under the output."""
    given = [config.data.train, config.data.eval, config.data.replay and config.data.replay.train,
             config.model.base_model]
    found = [find_bundle_file(text) for text in given if text]
    return [*(p for p in found if p), config.template_path, config.work_dir,
            *([config.lora.stack_on_path] if config.lora.stack_on_path else [])]


def save_adapter(trainer, config: RunConfig, record: TrainingRecord, replace: bool = False) -> Path:
    """Write the adapter folder atomically, then the loss plot (best effort); drop the checkpoints unless kept."""
    accelerator = trainer.accelerator
    # Under FSDP the LoRA weights are sharded: gathering them is collective, on every process.
    state_dict = accelerator.get_state_dict(trainer.model) if fsdp_enabled() else None
    if accelerator.is_main_process:
        with atomic_output_dir(config.output_dir, replace=replace, marker=RECORD_NAME, what=ADAPTER) as folder:
            model = accelerator.unwrap_model(trainer.model)
            state = adapter_state(model, state_dict, config.lora.save_dtype)
            model.save_pretrained(folder, state_dict=state, safe_serialization=True)
            write_record(folder, record)
            # replaces the card PEFT writes with ours, made from the record
            write_card(folder, record)
        if not config.training.keep_checkpoints:
            remove_checkpoints(config.work_dir)
        history = trainer.state.log_history
        write_extra(config.output_dir / LOSS_PLOT_NAME, lambda path: save_loss_plot(history, path, config.name),
                    "the loss plot")
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
