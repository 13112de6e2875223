"""The one place where our training settings become TRL/transformers argument names.

The datasets reach the trainer already tokenised, with our own labels (-100 on every prompt
token): TRL's own preparation (templating, EOS appending, truncation) is skipped and our
collator pads. Checkpoints and TensorBoard logs go to the work folder, never to the
adapter folder.
"""

from __future__ import annotations

from pathlib import Path

import torch

from training.config import TrainingSettings
from training.model import GRADIENT_CHECKPOINTING_KWARGS


def optimizer_name(setting: str, device: torch.device) -> str:
    """`auto`: paged 8-bit AdamW on a GPU (its states page to CPU RAM under pressure); AdamW on CPU."""
    if setting != "auto":
        return setting
    return "paged_adamw_8bit" if device.type == "cuda" else "adamw_torch"


def sft_config(
    training: TrainingSettings, work_dir: Path, device: torch.device, dtype: torch.dtype, has_eval: bool, packed: bool
):
    """SFTConfig for one run; every library name we rely on appears only here.

    `packed`: batches are padding-free rows (training/packing.py), so rows keep a random
    order; padded batches group rows of similar length, which wastes less on padding.
    """
    from trl import SFTConfig

    evaluate = "steps" if has_eval else "no"
    early_stopping = has_eval and training.early_stopping_patience is not None
    return SFTConfig(
        output_dir=str(work_dir),
        num_train_epochs=training.epochs,
        max_steps=training.max_steps or -1,
        per_device_train_batch_size=training.batch_size,
        per_device_eval_batch_size=training.batch_size,
        gradient_accumulation_steps=training.grad_accumulation,
        learning_rate=training.learning_rate,
        lr_scheduler_type=training.scheduler,
        warmup_steps=training.warmup_ratio,  # transformers 5: a float below 1 is a share of the steps
        weight_decay=training.weight_decay,
        max_grad_norm=training.max_grad_norm,
        optim=optimizer_name(training.optimizer, device),
        seed=training.seed,
        train_sampling_strategy="random" if packed else "group_by_length",
        data_seed=training.seed,
        bf16=device.type == "cuda" and dtype == torch.bfloat16,
        fp16=device.type == "cuda" and dtype == torch.float16,
        use_cpu=device.type == "cpu",
        gradient_checkpointing=training.gradient_checkpointing,
        gradient_checkpointing_kwargs=dict(GRADIENT_CHECKPOINTING_KWARGS),
        logging_steps=training.logging_steps,
        logging_first_step=True,
        report_to=[] if training.report_to == "none" else [training.report_to],
        eval_strategy=evaluate,
        eval_steps=training.eval_steps,
        save_strategy="steps",
        save_steps=training.save_steps,
        save_total_limit=training.save_total_limit,
        load_best_model_at_end=early_stopping,
        metric_for_best_model="eval_loss" if early_stopping else None,
        greater_is_better=False if early_stopping else None,
        include_num_input_tokens_seen="non_padding",
        # Our rows are tokenised with labels already; no re-templating, no truncation.
        dataset_kwargs={"skip_prepare_dataset": True},
        max_length=None,
        remove_unused_columns=False,
        # LoRA leaves most parameters frozen; searching for unused ones each step only costs time.
        ddp_find_unused_parameters=False,
        dataloader_num_workers=0,
    )
