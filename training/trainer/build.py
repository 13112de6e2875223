"""TRL's SFTTrainer, built in one place: our settings mapped to its names, the LM-head patch.

The datasets reach the trainer already tokenised, with our own labels (-100 on every prompt
token): TRL's own preparation (templating, EOS appending, truncation) is skipped and our
collator pads. Checkpoints and TensorBoard logs go to the work folder, never to the
adapter folder; each checkpoint also holds the recipe that made it (training/trainer/resume.py).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import EarlyStoppingCallback
from transformers.trainer_callback import ProgressCallback
from trl import SFTConfig, SFTTrainer
from trl.trainer import utils as trl_utils

from training.config import RunConfig, TrainingSettings
from training.data.batches import LengthGroupedOrder
from training.model.load import GRADIENT_CHECKPOINTING_KWARGS, use_fp32_adapter_weights
from training.trainer.progress import TrainingProgress
from training.trainer.resume import RecipeInCheckpoints


def build_trainer(config: RunConfig, model, tokenizer, data, device, dtype, callbacks: Sequence, batching):
    """TRL's SFTTrainer over our tokenised rows; `batching` (training.data.batches.choose_batching) builds
    the batches."""
    args = sft_config(config.training, config.work_dir, device, dtype, data.eval is not None, batching.packed)
    score_trained_positions_only()  # the LM head skips prompt and padding positions (see below)
    stopping = [EarlyStoppingCallback(config.training.early_stopping_patience)] if args.load_best_model_at_end else []
    trainer = LengthGroupedSFTTrainer(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        processing_class=tokenizer,
        data_collator=batching.collator,
        callbacks=[*stopping, *callbacks, RecipeInCheckpoints(config)],  # what resume compares with
    )
    use_fp32_adapter_weights(trainer.model)  # before the optimizer exists (it is built in train())
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(TrainingProgress())
    return trainer


class LengthGroupedSFTTrainer(SFTTrainer):
    """TRL's SFTTrainer with our row order for padded batches (training/data/batches.py: LengthGroupedOrder)."""

    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if self.args.train_sampling_strategy != "group_by_length" or "input_ids" not in dataset.column_names:
            return super()._get_train_sampler(train_dataset)
        lengths = [len(ids) for ids in dataset["input_ids"]]
        return LengthGroupedOrder(lengths, self.args.per_device_train_batch_size, self.args.data_seed or self.args.seed)


def optimizer_name(setting: str, device: torch.device) -> str:
    """`auto`: paged 8-bit AdamW on a GPU (its states page to CPU RAM under pressure); AdamW on CPU."""
    if setting != "auto":
        return setting
    return "paged_adamw_8bit" if device.type == "cuda" else "adamw_torch"


def sft_config(
    training: TrainingSettings, work_dir: Path, device: torch.device, dtype: torch.dtype, has_eval: bool, packed: bool
):
    """SFTConfig for one run; every library name we rely on appears only here.

    `packed`: batches are padding-free rows (training/data/batches.py), so rows keep a random
    order; padded batches group rows of similar length, which wastes less on padding.
    """
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
        # autocast: bf16 on GPUs and on CPUs with native bf16 (training/model/load.py: compute_dtype)
        bf16=dtype == torch.bfloat16,
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


# Score only the trained positions in TRL's fused LM head on every device, not only with Triton.
#
# TRL's SFTTrainer (1.16+) patches the model with a fused LM head (`add_fused_lm_head`,
# trl/trainer/utils.py) that multiplies the hidden states by the vocabulary matrix in tiles and
# returns the log-probabilities of the labels. With Triton (CUDA) it scores only the positions
# whose label is trained (`hidden_states[mask]`); elsewhere it scores every position and zeroes
# the untrained ones afterwards, because on compiled backends such as Neuron a changing number
# of rows would recompile the kernel every batch. On the CPU nothing is compiled, and scoring
# prompt and padding positions is pure waste: with answer-only labels three quarters of the
# positions of an instruction row are prompt (its 49k-column softmax on SmolLM2 costs more than
# a decoder layer). The result is the same either way: the untrained positions' outputs are
# zeros in both paths, and each trained position's log-probability is computed by the same
# function on the same row (tests/test_lm_head.py checks loss and gradients).
#
# TRL decides this with `_use_triton(device)` looked up in trl.trainer.utils; this module makes
# that lookup true for the CPU as well (score_trained_positions_only). The kernels themselves look
# `_use_triton` up in their own module (trl.kernels.chunked_logprob), so they keep running torch ops
# on the CPU. If a TRL
# release moves that decision, `score_trained_positions_only()` returns False and the trainer
# keeps TRL's behaviour (slower, same result).


def score_trained_positions_only() -> bool:
    """Make TRL's fused LM head score only labelled positions on the CPU too; True when in effect."""
    original = getattr(trl_utils, "_use_triton", None)
    if original is None or not hasattr(trl_utils, "add_fused_lm_head"):
        return False
    if getattr(original, "spanish_ft_compact", False):
        return True

    @functools.wraps(original)
    def compact_on_cpu(device) -> bool:
        return device.type == "cpu" or original(device)

    compact_on_cpu.spanish_ft_compact = True
    trl_utils._use_triton = compact_on_cpu
    return True
