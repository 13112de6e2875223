"""The estimate for one training recipe, and the rule that turns gradient checkpointing off.

Shared by training (training/model/checkpointing.py: `gradient_checkpointing: auto` at the start of
a run, from the run's longest row) and the pipeline's plan (training/pipeline/plan.py: before
anything is downloaded, from the recipe's max_tokens), so that both decide alike. Torch-free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from training.memory.estimate import MemorySettings, estimate

if TYPE_CHECKING:
    from training.config import RunConfig

CHECKPOINTING_HEADROOM = 0.8  # at most this share of the free memory: the estimate is +-10-15 %, others allocate too


def recipe_peak_bytes(config: RunConfig, model_config: dict, device: str, seq_len: int, gradient_checkpointing: bool,
                      compute: str = "auto", trained_share: float = 1.0) -> int:
    """Peak bytes of one training step of `config` on `device` ("cuda" or "cpu") at batch x `seq_len` tokens;
    a stacked adapter (lora.stack_on) adds its frozen weights."""
    quant, training = config.quantization, config.training
    eight_bit = "8bit" in training.optimizer or (training.optimizer == "auto" and device == "cuda")
    settings = MemorySettings(
        method="qlora" if quant.bits < 16 else "lora", bits=quant.bits, seq_len=max(1, seq_len),
        batch=training.batch_size, rank=config.lora.rank, gradient_checkpointing=gradient_checkpointing,
        optimizer="paged_adamw_8bit" if eight_bit else "adamw", device=device, lora_dropout=config.lora.dropout,
        double_quant=quant.double_quant, compute=compute, embeddings=quant.embeddings,
        trained_share=min(1.0, max(0.01, trained_share)),
    )
    result = estimate(model_config, settings)
    return result.total_bytes + (result.breakdown["lora_weights"] if config.lora.stack_on else 0)


def checkpointing_needed(peak_without_bytes: int, free_bytes: int, bits: int = 16) -> bool:
    """`gradient_checkpointing: auto`: on for a 4/8-bit base; otherwise on when the step's peak without it
    does not fit the free memory with the headroom.

    A 4/8-bit base is chosen to spend less memory, and checkpointing is what keeps it small: at the
    recipes' batch 4 x 1024 tokens a 7B QLoRA step needs 7-9 GiB with checkpointing and 25-40 GiB
    without, more than 16-bit LoRA with checkpointing (16-19 GiB). QLoRA as its paper, PEFT and TRL
    set it up checkpoints too; `gradient_checkpointing: false` trades the memory for speed.
    """
    return bits < 16 or peak_without_bytes > CHECKPOINTING_HEADROOM * free_bytes
