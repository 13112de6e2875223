"""`training.gradient_checkpointing: auto`: recompute activations only where memory needs it.

Checkpointing trades compute for memory: it keeps one hidden state per decoder layer and runs
each layer's forward again in the backward pass. Measured on this project's 2-core CPU
(bench/train_throughput.py), turning it off trained 1.4-1.6x more tokens per CPU-second; on a
7B model at 1024 tokens it saves several GiB. `auto` asks the bundle's own memory estimator
(training/memory) for the peak of one step without checkpointing, at the run's batch size and
its longest row, and compares it with the memory free on the training device now (CUDA:
`torch.cuda.mem_get_info`; CPU: available RAM). With a 16-bit base it turns checkpointing off
only when that peak fits with a margin; with a 4/8-bit base (QLoRA) it keeps it on, because
turning it off would spend more memory than the 4 bits save (training/memory/recipe.py, shared
with the pipeline's plan). The decision and both figures go to the training log.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil
import torch
from transformers import AutoConfig

from training.config import RunConfig
from training.files import GIB
from training.memory.recipe import checkpointing_needed, recipe_peak_bytes


@dataclass(frozen=True)
class Checkpointing:
    """The decision for one run and the line that explains it."""

    enabled: bool
    note: str


def free_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return psutil.virtual_memory().available


def peak_without_checkpointing(config: RunConfig, longest_row: int, trained_share: float,
                               dtype: torch.dtype, device: torch.device) -> int:
    """The estimator's peak of one training step of this run with checkpointing off, in bytes."""
    model_config = AutoConfig.from_pretrained(config.model.base_model, revision=config.model.revision,
                                              trust_remote_code=config.model.trust_remote_code).to_dict()
    return recipe_peak_bytes(config, model_config, "cuda" if device.type == "cuda" else "cpu", longest_row,
                             gradient_checkpointing=False, compute=str(dtype).removeprefix("torch."),
                             trained_share=trained_share)


def decide_checkpointing(config: RunConfig, longest_row: int, trained_share: float, dtype: torch.dtype,
                         device: torch.device, free_bytes: int | None = None) -> Checkpointing:
    """The recipe's choice when it is true/false; for `auto`, off where the estimate fits the free memory."""
    setting = config.training.gradient_checkpointing
    if setting != "auto":
        return Checkpointing(bool(setting), f"gradient checkpointing: {'on' if setting else 'off'} (the recipe's)")
    free = free_memory_bytes(device) if free_bytes is None else free_bytes
    peak = peak_without_checkpointing(config, longest_row, trained_share, dtype, device)
    bits = config.quantization.bits
    figures = (f"estimated peak without it {peak / GIB:.2f} GiB at batch {config.training.batch_size} x "
               f"{longest_row} tokens, {free / GIB:.1f} GiB free on {device.type}")
    if not checkpointing_needed(peak, free, bits):
        return Checkpointing(False, f"gradient checkpointing: off, faster (auto: {figures})")
    if bits < 16:
        return Checkpointing(True, f"gradient checkpointing: on, as QLoRA keeps memory low with a {bits}-bit base "
                                   f"(auto; {figures}; training.gradient_checkpointing=false is faster)")
    return Checkpointing(True, f"gradient checkpointing: on, to fit (auto: {figures}; "
                               "training.gradient_checkpointing=false forces it off)")
