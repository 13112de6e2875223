"""Training throughput: our trainer against a seed-style baseline, same model, data and steps.

    python bench/train_throughput.py [--rows 128] [--batch 4] [--repeats 2] [--no-packed-arm] [--threads 1]

Model: a randomly initialised Llama (~17M parameters: 8 layers, hidden 384) and a BPE
tokenizer (4,096 tokens) trained in-process on the Spanish rows, both built here. Data:
training/datasets/instrucciones-es/train.jsonl, rendered with the shipped Llama-2 template; the
held-out answer loss is measured on its test.jsonl. Both runs put the same LoRA (r16, fp32
on the CPU, all linear layers, same seed) on the same base and take the same number of
optimizer steps with the same optimizer and learning rate: one epoch over the same seeded sample
of `--rows` training rows (so every arm trains exactly the same rows, each once, in its own order):
- baseline, as the seed notebooks did it: transformers' Trainer, every row padded to the
  longest row of the whole dataset, loss on every token (prompt included, padding excluded);
- ours: `training.train.build_trainer` (TRL's SFTTrainer, loss on the answers only, TRL's
  fused and chunked LM head scoring only the answer positions, training/trainer/build.py) with its
  default batching on this CPU (`training.packing: auto`):
  each batch padded to its own longest row, rows grouped by length.
A third arm, `ours-packed`, is our trainer with `training.packing=true`: each batch one
padding-free packed row (exact; the default on GPUs), the same rows in another order (random
rather than length-grouped).
Runs alternate (baseline, ours, ours-packed, baseline, ...) so that a load change on the
shared machine hits all. "Answer tokens" are the answer tokens of the rows each run trained on, counted
at the model's input; the throughput is those per second from the start of the first step
to the end of the last (each trainer's setup is not counted). The last
line is one JSON object with the figures. Not a test; target: ratio >= 3 at an equal or
better held-out answer loss.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers
import yaml
from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from training.config import load_config  # noqa: E402
from training.data.batches import choose_batching  # noqa: E402
from training.data.prepare import load_split, prepare_data  # noqa: E402
from training.data.tokens import IGNORE_INDEX  # noqa: E402
from training.evaluate.generate import answer_loss  # noqa: E402
from training.model.load import add_lora, load_base_model, load_tokenizer  # noqa: E402
from training.templates import load_template  # noqa: E402

DATA = ROOT / "training" / "datasets" / "instrucciones-es"
TEMPLATE = ROOT / "instruction-templates" / "spanish_ft-Llama-2-chat.yaml"
VOCAB, HIDDEN, LAYERS, INTERMEDIATE, HEADS = 4096, 384, 8, 1024, 6
ARMS = ("baseline", "ours", "ours-packed")


def build_base_model(folder: Path) -> Path:
    """A random Llama and a BPE tokenizer trained on the Spanish rows, saved as a model folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    rows = [json.loads(line) for line in (DATA / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    texts = [f"{r['instruction']}\n{r.get('input') or ''}\n{r['output']}" for r in rows]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    bpe.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<unk>", "<s>", "</s>"])
    bpe.train_from_iterator([*texts, "[INST] <<SYS>> <</SYS>> [/INST]"], trainer)
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=HEADS, max_position_embeddings=1024,
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def load_bench_config(tmp: Path, model_dir: Path, args):
    recipe = {
        "family": "llama2", "base_model": str(model_dir), "template": str(TEMPLATE), "output_dir": str(tmp / "out"),
        "dataset": {"train": str(DATA / "train.jsonl"), "max_tokens": 1024},
    }
    (tmp / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    overrides = [
        f"training.max_steps={args.rows // args.batch}", f"training.batch_size={args.batch}",
        "training.grad_accumulation=1",
        f"training.learning_rate={args.learning_rate}", "training.scheduler=constant", "training.warmup_ratio=0",
        "training.gradient_checkpointing=false", "training.report_to=none", "training.save_steps=100000",
        "training.logging_steps=100000", "training.optimizer=adamw_torch", "quantization.bits=16", "lora.rank=16",
    ]
    return load_config(tmp / "recipe.yaml", overrides)


class TokenCounter:
    """Counts, at the model's input, the tokens each forward trains on (answers looked up per conversation)."""

    def __init__(self, dataset) -> None:
        self.answers = {
            tuple(ids): sum(label != IGNORE_INDEX for label in labels[1:])
            for ids, labels in zip(dataset["input_ids"], dataset["labels"], strict=True)
        }
        self.answer_tokens = self.real_tokens = self.computed_tokens = 0

    def __call__(self, module, args, kwargs) -> None:
        ids = kwargs["input_ids"]
        self.computed_tokens += ids.numel()
        if "attention_mask" in kwargs:  # padded rows
            pieces = [row[mask.bool()] for row, mask in zip(ids, kwargs["attention_mask"], strict=True)]
        else:  # one packed row: conversations start where the positions restart
            starts = (kwargs["position_ids"][0] == 0).nonzero().flatten().tolist() + [ids.shape[1]]
            pieces = [ids[0, a:b] for a, b in zip(starts, starts[1:], strict=False)]
        for piece in pieces:
            self.real_tokens += piece.numel()
            self.answer_tokens += self.answers[tuple(piece.tolist())]


def fresh_lora_model(config):
    torch.manual_seed(config.training.seed)  # the same LoRA initialisation in every run
    model = load_base_model(config.model, config.quantization, False, torch.device("cpu"))
    return add_lora(model, config.lora, config.quantization.bits)


def ours_trainer(config, tokenizer, data, packing: bool | str = "auto"):
    """Our trainer: by default (auto) on the CPU length-grouped padded batches; packing=True packs each batch."""
    from training.train import build_trainer

    batching = choose_batching(packing, config.model.family, tokenizer.pad_token_id, "cpu")
    assert batching.packed == (packing is True), batching.note
    model = fresh_lora_model(config)
    return build_trainer(config, model, tokenizer, data, torch.device("cpu"), torch.float32, [], batching)


def baseline_trainer(config, tokenizer, data, work_dir: Path, longest: int):
    """transformers' Trainer on rows pre-padded to the dataset's longest row, labels = input ids (pads masked)."""
    from datasets import Dataset
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    padded = Dataset.from_dict(
        tokenizer.pad({"input_ids": data.train["input_ids"]}, padding="max_length", max_length=longest)
    )
    training = config.training
    args = TrainingArguments(
        output_dir=str(work_dir), max_steps=training.max_steps, per_device_train_batch_size=training.batch_size,
        gradient_accumulation_steps=1, learning_rate=training.learning_rate, lr_scheduler_type="constant",
        optim="adamw_torch", weight_decay=training.weight_decay, max_grad_norm=training.max_grad_norm,
        seed=training.seed, data_seed=training.seed, use_cpu=True, save_strategy="no", report_to=[],
        logging_steps=100000, dataloader_num_workers=0,
    )
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)  # labels = ids, pad positions -100
    return Trainer(model=fresh_lora_model(config), args=args, train_dataset=padded, data_collator=collator)


def quiet(trainer):
    """No progress bars or log prints from the trainers: this script prints one line per run."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from training.trainer.progress import TrainingProgress

    for callback in (ProgressCallback, PrinterCallback, TrainingProgress):
        trainer.remove_callback(callback)
    return trainer


class TrainClock(TrainerCallback):
    """Seconds from the first step's start to the last step's end: the trainers' setup is not throughput."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs):
        self.seconds = time.perf_counter() - self.started


def timed_training(trainer, rows) -> dict:
    counter, clock = TokenCounter(rows), TrainClock()
    hook = trainer.model.register_forward_pre_hook(counter, with_kwargs=True)
    trainer.add_callback(clock)
    trainer.train()
    hook.remove()
    return {"seconds": clock.seconds, "answer_tokens": counter.answer_tokens, "real_tokens": counter.real_tokens,
            "computed_tokens": counter.computed_tokens, "steps": trainer.state.global_step}


def held_out_loss(model, rows) -> float:
    """Cross-entropy over the held-out answer tokens (the evaluator's), with dropout off."""
    model.eval()
    return answer_loss(model, rows)["answer_loss"]


def matmul_gflops(seconds: float = 2.0, n: int = 1024) -> float:
    """The machine's fp32 matmul rate on this many threads: the ceiling for any trainer here."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start, runs = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        a @ b
        runs += 1
    return 2 * n**3 * runs / (time.perf_counter() - start) / 1e9


def matmul_params(model) -> int:
    """Base weights every token is multiplied by: decoder linear layers and the LM head (not the embedding)."""
    return sum(
        p.numel() for n, p in model.named_parameters() if p.dim() == 2 and "lora_" not in n and "embed_tokens" not in n
    )


def run_all(args, tmp: Path) -> dict:
    """Build model and data, alternate baseline and ours `args.repeats` times; per-run figures and losses."""
    config = load_bench_config(tmp, build_base_model(tmp / "base"), args)
    tokenizer = load_tokenizer(config.model)
    template = load_template(TEMPLATE)
    data = prepare_data(config.data, tokenizer, template, config.training.seed)
    held_out, _ = load_split(str(DATA / "test.jsonl"), config.data, tokenizer, template)
    untrained = fresh_lora_model(config)
    figures = {"untrained_loss": held_out_loss(untrained, held_out), "params": matmul_params(untrained)}
    figures["longest"] = max(len(ids) for ids in data.train["input_ids"])  # of the whole dataset
    if not 0 < args.rows <= len(data.train) or args.rows % args.batch:
        raise SystemExit(f"--rows {args.rows}: give a multiple of --batch {args.batch} up to {len(data.train)}")
    sample = sorted(random.Random(config.training.seed).sample(range(len(data.train)), args.rows))
    data = dataclasses.replace(data, train=data.train.select(sample))
    print(
        f"data: {len(data.train)} train rows, one epoch (the dataset's longest row: {figures['longest']} tokens), "
        f"{len(held_out)} held-out rows; "
        f"model: {figures['params'] / 1e6:.1f}M matmul parameters; held-out answer loss untrained "
        f"{figures['untrained_loss']:.3f}"
    )
    for repeat in range(args.repeats):
        for name in ARMS if args.packed_arm else ARMS[:2]:
            if name == "baseline":
                trainer = baseline_trainer(config, tokenizer, data, tmp / f"work-{name}-{repeat}", figures["longest"])
            else:
                trainer = ours_trainer(config, tokenizer, data, packing=True if name == "ours-packed" else "auto")
            run = timed_training(quiet(trainer), data.train) | {"loss": held_out_loss(trainer.model, held_out)}
            figures.setdefault(name, []).append(run)
            print(
                f"  {name:11} run {repeat + 1}: {run['steps']} steps in {run['seconds']:.1f} s, "
                f"{run['answer_tokens']} answer tokens ({run['answer_tokens'] / run['seconds']:.0f}/s), "
                f"{run['real_tokens']} real of {run['computed_tokens']} computed tokens; "
                f"held-out answer loss {run['loss']:.4f}",
                flush=True,
            )
    return figures


def summarise(figures: dict, gflops: float, args) -> dict:
    def total(name: str, key: str) -> float:
        return sum(run[key] for run in figures[name])

    def rate(name: str, key: str) -> float:
        return total(name, key) / total(name, "seconds")

    flops = {name: 6 * figures["params"] * rate(name, "computed_tokens") / 1e9 for name in ("baseline", "ours")}
    return {
        "throughput_ratio": round(rate("ours", "answer_tokens") / rate("baseline", "answer_tokens"), 2),
        "baseline_answer_tokens_per_s": round(rate("baseline", "answer_tokens"), 1),
        "ours_answer_tokens_per_s": round(rate("ours", "answer_tokens"), 1),
        "computed_tokens_ratio": round(total("baseline", "computed_tokens") / total("ours", "computed_tokens"), 2),
        "baseline_padding_share": round(1 - rate("baseline", "real_tokens") / rate("baseline", "computed_tokens"), 3),
        "baseline_loss": round(figures["baseline"][-1]["loss"], 4),
        "ours_loss": round(figures["ours"][-1]["loss"], 4),
        "untrained_loss": round(figures["untrained_loss"], 4),
        "rows": args.rows,
        "steps": args.rows // args.batch,
        "batch": args.batch,
        "repeats": args.repeats,
        "threads": args.threads,
        "matmul_gflops": round(gflops, 1),
        "ours_model_gflops": round(flops["ours"], 1),
        "ours_model_flops_fraction": round(flops["ours"] / gflops, 3),
        "baseline_model_flops_fraction": round(flops["baseline"] / gflops, 3),
        "load_average": round(os.getloadavg()[0], 1),
    } | (
        {
            "ours_packed_answer_tokens_per_s": round(rate("ours-packed", "answer_tokens"), 1),
            "ours_real_tokens_per_s": round(rate("ours", "real_tokens"), 1),
            "ours_packed_real_tokens_per_s": round(rate("ours-packed", "real_tokens"), 1),
        }
        if args.packed_arm
        else {}
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--rows", type=int, default=128,
                        help="training rows per run, one epoch, the same seeded sample for every arm (default 128)")
    parser.add_argument("--batch", type=int, default=4, help="rows per step (default 4, as the recipes)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each, alternating (default 2)")
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="constant learning rate (default 2e-3)")
    parser.add_argument("--packed-arm", action=argparse.BooleanOptionalAction, default=True,
                        help="also run our trainer with training.packing=true (one padding-free row per batch), "
                        "to show what packing alone adds (default: on)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    print(f"load average before the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {args.threads} thread(s)")
    gflops = matmul_gflops()
    print(f"matmul: {gflops:.1f} GFLOP/s (fp32, 1024x1024, {args.threads} thread(s))")
    with tempfile.TemporaryDirectory() as tmp:
        figures = run_all(args, Path(tmp))
    summary = summarise(figures, gflops, args)
    print(
        f"answer tokens/s: baseline {summary['baseline_answer_tokens_per_s']}, "
        f"ours {summary['ours_answer_tokens_per_s']} -> ratio {summary['throughput_ratio']}; "
        f"held-out answer loss: baseline {summary['baseline_loss']}, ours {summary['ours_loss']} "
        f"(untrained {summary['untrained_loss']})"
    )
    print(
        f"model FLOP/s = 6 x {figures['params'] / 1e6:.1f}M matmul parameters x tokens computed per second "
        f"(ours: every token of its rows, padding included, as the baseline's): ours {summary['ours_model_gflops']} "
        f"GFLOP/s = {summary['ours_model_flops_fraction']:.0%} of the matmul rate, baseline "
        f"{summary['baseline_model_flops_fraction']:.0%}. With LoRA the frozen weights need no weight gradient, so "
        "the arithmetic done is nearer 4 x params x tokens. Ours scores only the trained positions in the LM head "
        "(training/trainer/build.py) but recomputes its projection in the backward pass, and short rows make smaller "
        "matmuls."
    )
    if args.packed_arm:
        print(
            f"our trainer packed (training.packing=true, the default on GPUs): "
            f"{summary['ours_packed_answer_tokens_per_s']} answer tokens/s (real tokens/s: "
            f"{summary['ours_packed_real_tokens_per_s']} packed vs "
            f"{summary['ours_real_tokens_per_s']} length-grouped); "
            "on a CPU a packed row's attention spans the whole row (SDPA with a dense block mask), a length-grouped "
            "row only its own length"
        )
    print(
        f"work avoided: the baseline computed {summary['computed_tokens_ratio']}x the tokens ours did "
        f"({summary['baseline_padding_share']:.0%} of its tokens were padding)"
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
