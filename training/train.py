"""`python -m training train [--replace] RECIPE.yaml [key.path=value ...]`: one LoRA adapter from a recipe.

Reads top to bottom as the data flow: output folders claimed -> recipe -> instruction template
-> tokenizer and tokenised rows (loss on the answers only) -> 4-bit base model -> LoRA -> TRL's
SFTTrainer -> adapter folder (written atomically with its training record and model card; the
loss curve after it, best effort). Before anything loads, the adapter folder must be new or an
adapter of ours with --replace, and the work folder (`<output_dir>.work` by default: checkpoints,
TensorBoard logs) is locked against a second run. Ctrl-C or SIGTERM saves a checkpoint at the
current step and exits 130 or 143, so `resume=true` continues from there, with the same recipe
(training/trainer/resume.py says which keys may change). Under
`accelerate launch` the same command trains with DDP on several GPUs.

From Python: `train(load_config(path, overrides), replace=False) -> Path` of the adapter folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from collections.abc import Sequence
from pathlib import Path

from transformers import set_seed

from training.adapters.record import trained_record
from training.config import RunConfig, describe_keys, load_config
from training.data.batches import choose_batching
from training.data.prepare import prepare_data
from training.model.checkpointing import decide_checkpointing
from training.model.dropout import share_lora_dropout
from training.model.load import add_lora, compute_dtype, load_base_model, load_tokenizer, training_device
from training.model.stacking import stack_frozen_adapter
from training.templates import load_template
from training.trainer.build import build_trainer
from training.trainer.interrupt import CheckpointOnSignal
from training.trainer.resume import check_recipe_unchanged, checkpoint_to_resume
from training.trainer.save import claim_folders, save_adapter

EXAMPLE = """example:
  python -m training train training/recipes/mistral-instrucciones.yaml \\
      dataset.train=data/mine.jsonl lora.rank=8 training.max_steps=200 resume=true

Ctrl-C (or SIGTERM) saves a checkpoint at the current step and exits 130 (143); add resume=true
to continue. --replace goes before the recipe or after the overrides.

overrides: KEY.PATH=VALUE after the recipe; values are YAML (8 -> int, true -> bool, null,
[q_proj, v_proj] -> list). Unknown keys are errors. Recipe keys:
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EXAMPLE + "\n".join(describe_keys())
    parser.add_argument("recipe", help="recipe YAML, e.g. training/recipes/mistral-instrucciones.yaml")
    parser.add_argument("overrides", nargs="*", metavar="KEY.PATH=VALUE", help="change recipe keys (see below)")
    parser.add_argument("--replace", action="store_true",
                        help="replace output_dir if it holds an adapter made by spanish_ft (never anything else)")


def run(args) -> int:
    config = load_config(args.recipe, args.overrides)
    output = train(config, replace=args.replace)
    _say(f"adapter written to {output}")
    return 0


def train(config: RunConfig, callbacks: Sequence = (), replace: bool = False) -> Path:
    """Train one adapter as the recipe says; return its folder. `callbacks` go to the trainer.

    `replace`: output_dir may hold an adapter made by spanish_ft, which is replaced (--replace).
    """
    with claim_folders(config, replace):  # before anything loads: the output, the work folder, its lock
        return _train(config, callbacks, replace)


def _train(config: RunConfig, callbacks: Sequence, replace: bool) -> Path:
    started = time.time()
    checkpoint = checkpoint_to_resume(config)
    if checkpoint:  # only with the recipe that made it: another one is refused, naming the keys
        for note in check_recipe_unchanged(checkpoint, config):
            _say(f"warning: {note}")
    template = load_template(config.template_path)
    tokenizer = load_tokenizer(config.model)
    ground = None
    if config.data.retrieval is not None:
        from training.retrieval.fuentes import Grounder

        ground = Grounder(config.data.retrieval, config.training.seed)
    data = prepare_data(config.data, tokenizer, template, config.training.seed, ground)
    for note in data.notes:
        _say(f"warning: {note}")
    replay = data.record.get("replay")
    _say(
        f"data: {data.record['rows_kept']} train rows"
        + (f" ({replay['rows']} replayed from {replay['train']})" if replay else "")
        + (f", with Fuentes ({ground.summary()})" if ground else "")
        + f", {data.record['rows_eval']} eval rows, "
        + f"{data.record['answer_tokens']} answer tokens of {data.record['tokens']}"
    )
    device = training_device()
    dtype = compute_dtype(config.quantization.compute_dtype, device)
    batching = choose_batching(config.training.packing, config.model.family, tokenizer.pad_token_id, device.type,
                               dtype)
    longest = batching.row_width(max(len(ids) for ids in data.train["input_ids"]))
    trained_share = data.record["answer_tokens"] / max(1, data.record["tokens"])
    checkpointing = decide_checkpointing(config, longest, trained_share, dtype, device)
    _say(checkpointing.note)
    config = dataclasses.replace(
        config, training=dataclasses.replace(config.training, gradient_checkpointing=checkpointing.enabled))
    set_seed(config.training.seed)  # before LoRA init, so a seed gives the same adapter
    model = load_base_model(config.model, config.quantization, checkpointing.enabled, device)
    stacked_on = None
    if config.lora.stack_on is not None:
        stacked_on = stack_frozen_adapter(model, config.lora.stack_on_path)
        _say(f"training on top of {config.lora.stack_on} (frozen, {stacked_on['modules']} layers)")
    model = add_lora(model, config.lora, config.quantization.bits)
    share_lora_dropout(model)  # one dropout draw per input, no fp32 copies under autocast (training/model/dropout.py)
    model.config.pad_token_id = tokenizer.pad_token_id
    _say(batching.note)
    stop = CheckpointOnSignal()
    trainer = build_trainer(config, model, tokenizer, data, device, dtype, [*callbacks, stop], batching)
    _say(f"training on {device} ({dtype}); checkpoints and logs in {config.work_dir}")
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
    finally:
        stop.restore()
    if interrupted := stop.outcome(trainer.state, config.work_dir, config.source):
        raise interrupted
    metrics = final_metrics(trainer, data, started) | {
        "resumed_from": checkpoint and Path(checkpoint).name,
        "packed": batching.packed,
        "gradient_checkpointing": checkpointing.enabled,
    }
    record = trained_record(config, template, data.record, metrics, trainer.model.config, stacked_on)
    return save_adapter(trainer, config, record, replace)


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
