"""`python -m training train RECIPE.yaml [key.path=value ...]`: one LoRA adapter from a recipe.

Reads top to bottom as the data flow: recipe -> instruction template -> tokenizer and
tokenised rows (loss on the answers only) -> 4-bit base model -> LoRA -> TRL's SFTTrainer
-> adapter folder (written atomically with its training record, model card and loss
curve). Checkpoints and TensorBoard logs live in the work folder (`<output_dir>.work` by
default), so `resume=true` continues an interrupted run. Under `accelerate launch` the same
command trains with DDP on several GPUs.

From Python: `train(load_config(path, overrides)) -> Path` of the adapter folder.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path

from training.config import RunConfig, describe_keys, find_repo_file, load_config

EXAMPLE = """example:
  python -m training train training/recipes/mistral-instrucciones.yaml \\
      dataset.train=data/mine.jsonl lora.rank=8 training.max_steps=200 resume=true

overrides: KEY.PATH=VALUE after the recipe; values are YAML (8 -> int, true -> bool, null,
[q_proj, v_proj] -> list). Unknown keys are errors. Recipe keys:
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EXAMPLE + "\n".join(describe_keys())
    parser.add_argument("recipe", help="recipe YAML, e.g. training/recipes/mistral-instrucciones.yaml")
    parser.add_argument("overrides", nargs="*", metavar="KEY.PATH=VALUE", help="change recipe keys (see below)")


def run(args) -> int:
    config = load_config(args.recipe, args.overrides)
    output = train(config)
    _say(f"adapter written to {output}")
    return 0


def train(config: RunConfig, callbacks: Sequence = ()) -> Path:
    """Train one adapter as the recipe says; return its folder. `callbacks` go to the trainer."""
    from transformers import set_seed

    from training.data import prepare_data
    from training.model import add_lora, compute_dtype, load_base_model, load_tokenizer, training_device
    from training.packing import choose_batching
    from training.save import build_record, save_adapter
    from training.templates import load_template

    started = time.time()
    template = load_template(find_repo_file(config.template) or config.template)
    tokenizer = load_tokenizer(config.model)
    data = prepare_data(config.data, tokenizer, template, config.training.seed)
    for note in data.notes:
        _say(f"warning: {note}")
    replay = data.record.get("replay")
    _say(
        f"data: {data.record['rows_kept']} train rows"
        + (f" ({replay['rows']} replayed from {replay['train']})" if replay else "")
        + f", {data.record['rows_eval']} eval rows, "
        + f"{data.record['answer_tokens']} answer tokens of {data.record['tokens']}"
    )
    checkpoint = checkpoint_to_resume(config)
    device = training_device()
    set_seed(config.training.seed)  # before LoRA init, so a seed gives the same adapter
    model = load_base_model(config.model, config.quantization, config.training.gradient_checkpointing, device)
    stacked_on = None
    if config.lora.stack_on is not None:
        from training.stacking import stack_frozen_adapter

        stacked_on = stack_frozen_adapter(model, find_repo_file(config.lora.stack_on) or config.lora.stack_on)
        _say(f"training on top of {config.lora.stack_on} (frozen, {stacked_on['modules']} layers)")
    model = add_lora(model, config.lora, config.quantization.bits)
    model.config.pad_token_id = tokenizer.pad_token_id
    dtype = compute_dtype(config.quantization.compute_dtype, device)
    batching = choose_batching(config.training.packing, config.model.family, tokenizer.pad_token_id, device.type)
    _say(batching.note)
    trainer = build_trainer(config, model, tokenizer, data, device, dtype, callbacks, batching)
    _say(f"training on {device} ({dtype}); checkpoints and logs in {config.work_dir}")
    trainer.train(resume_from_checkpoint=checkpoint)
    metrics = final_metrics(trainer, data, started) | {
        "resumed_from": checkpoint and Path(checkpoint).name,
        "packed": batching.packed,
    }
    record = build_record(config, template, data, metrics, trainer.model)
    if stacked_on is not None:
        record["stacked_on"] = stacked_on
    return save_adapter(trainer, config, record)


def build_trainer(config: RunConfig, model, tokenizer, data, device, dtype, callbacks: Sequence, batching):
    """TRL's SFTTrainer over our tokenised rows; `batching` (training.packing.choose_batching) builds the batches."""
    from transformers import EarlyStoppingCallback
    from transformers.trainer_callback import ProgressCallback
    from trl import SFTTrainer

    from training.lm_head import score_trained_positions_only
    from training.model import use_fp32_adapter_weights
    from training.progress import TrainingProgress
    from training.trainer_args import sft_config

    args = sft_config(config.training, config.work_dir, device, dtype, data.eval is not None, batching.packed)
    score_trained_positions_only()  # the LM head skips prompt and padding positions (training/lm_head.py)
    stopping = [EarlyStoppingCallback(config.training.early_stopping_patience)] if args.load_best_model_at_end else []
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        processing_class=tokenizer,
        data_collator=batching.collator,
        callbacks=[*stopping, *callbacks],
    )
    use_fp32_adapter_weights(trainer.model)  # before the optimizer exists (it is built in train())
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(TrainingProgress())
    return trainer


def checkpoint_to_resume(config: RunConfig) -> str | None:
    """The checkpoint `resume` asks for; refuses to silently restart over an earlier run's checkpoints."""
    from transformers.trainer_utils import get_last_checkpoint

    newest = get_last_checkpoint(str(config.work_dir)) if config.work_dir.is_dir() else None
    if config.resume is False:
        if newest:
            raise ValueError(
                f"{config.work_dir} holds checkpoints of an earlier run (newest: {Path(newest).name}); "
                f"continue it with resume=true, or delete {config.work_dir} to start over"
            )
        return None
    if config.resume is True:
        if not newest:
            raise ValueError(f"resume=true, but {config.work_dir} has no checkpoint-* folder; run without resume=true")
        return newest
    if not (Path(config.resume) / "trainer_state.json").is_file():
        raise ValueError(f"resume: {config.resume} is not a checkpoint folder (no trainer_state.json)")
    return config.resume


def final_metrics(trainer, data, started: float) -> dict:
    """Loss at the first and last logged step, final eval loss, tokens, and the time of this session."""
    state = trainer.state
    losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
    return {
        "train_loss_first": losses[0] if losses else None,
        "train_loss": losses[-1] if losses else None,
        "eval_loss": trainer.evaluate()["eval_loss"] if data.eval is not None else None,
        "steps": state.global_step,
        "epochs": round(state.epoch or 0.0, 3),
        "tokens_trained": state.num_input_tokens_seen,
        "wall_time_s": round(time.time() - started, 1),
    }


def _say(message: str) -> None:
    if os.environ.get("RANK", "0") == "0":  # one voice under accelerate launch
        print(message, flush=True)
