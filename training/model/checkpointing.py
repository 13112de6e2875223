"""`training.gradient_checkpointing: auto`: recompute activations only where memory needs it.

Checkpointing trades compute for memory: it keeps one hidden state per decoder layer and runs
each layer's forward again in the backward pass. Measured on this project's 2-core CPU
(bench/train_throughput.py), turning it off trained 1.4-1.6x more tokens per CPU-second; on a
7B model at 1024 tokens it saves several GiB. `auto` asks the bundle's own memory estimator
(training/memory) for the peak of one step without checkpointing, at the run's batch size and
its longest row, and compares it with the memory free on the training device now (CUDA:
`torch.cuda.mem_get_info`; CPU: available RAM). It turns checkpointing off only when that peak
fits with a margin (HEADROOM) and says so, with both figures, in the training log.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil
import torch
from transformers import AutoConfig

from training.config import RunConfig
from training.memory.estimate import MemorySettings, estimate

GIB = 1024**3
HEADROOM = 0.8  # use at most this share of the free memory: the estimate is +-10-15 %, and others allocate too


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
    quant, training = config.quantization, config.training
    settings = MemorySettings(
        method="qlora" if quant.bits < 16 else "lora", bits=quant.bits, seq_len=max(1, longest_row),
        batch=training.batch_size, rank=config.lora.rank, gradient_checkpointing=False,
        optimizer="paged_adamw_8bit" if "8bit" in training.optimizer else "adamw",
        device="cuda" if device.type == "cuda" else "cpu", lora_dropout=config.lora.dropout,
        double_quant=quant.double_quant, compute=str(dtype).removeprefix("torch."), embeddings=quant.embeddings,
        trained_share=min(1.0, max(0.01, trained_share)),
    )
    return estimate(model_config, settings).total_bytes


def decide_checkpointing(config: RunConfig, longest_row: int, trained_share: float, dtype: torch.dtype,
                         device: torch.device, free_bytes: int | None = None) -> Checkpointing:
    """The recipe's choice when it is true/false; for `auto`, off where the estimate fits the free memory."""
    setting = config.training.gradient_checkpointing
    if setting != "auto":
        return Checkpointing(bool(setting), f"gradient checkpointing: {'on' if setting else 'off'} (the recipe's)")
    free = free_memory_bytes(device) if free_bytes is None else free_bytes
    peak = peak_without_checkpointing(config, longest_row, trained_share, dtype, device)
    figures = (f"estimated peak without it {peak / GIB:.2f} GiB at batch {config.training.batch_size} x "
               f"{longest_row} tokens, {free / GIB:.1f} GiB free on {device.type}")
    if peak <= HEADROOM * free:
        return Checkpointing(False, f"gradient checkpointing: off, faster (auto: {figures})")
    return Checkpointing(True, f"gradient checkpointing: on, to fit (auto: {figures}; "
                               "training.gradient_checkpointing=false forces it off)")
