"""Training throughput against the tools a user would pick instead: TRL's SFTTrainer and the webui's Training tab.

    python bench/train_throughput.py [--rows 128] [--batch 4] [--repeats 2] [--threads 1] [--arms ...]

Every arm trains the same randomly initialised Llama (~17M parameters: 8 layers, hidden 384,
with a 4,096-token BPE tokenizer trained in-process on the Spanish rows; no download) on the
same `--rows` seeded sample of training/datasets/instrucciones-es/train.jsonl, rendered with the
shipped Llama-2 template, for one epoch at batch 4: the same LoRA (r16, alpha 32, dropout 0.05,
every linear layer of the decoder), the same AdamW (torch), learning rate 2e-3, constant, no
warm-up, the same seed. What differs is what each tool does by default:
- `trl`: TRL's SFTTrainer written as its documentation recommends for instruction data: a
  prompt/completion dataset (the prompt and answer as our template renders them), loss on the
  completion only (its default for that format), `padding_free=True`, the rest of SFTConfig's
  defaults (bf16 autocast, gradient checkpointing, its fused LM head), the model given by path
  with a `peft_config`.
- `webui`: the method of text-generation-webui's Training tab, reimplemented from its
  documented behaviour (docs/05 - Training Tab.md and what the tab does): a conversation
  tokenised with the chat template and labels only on assistant turns (here: our template's
  token ids, the same as its `apply_chat_template` masking gives), batches padded on the right
  to their longest row, rows in random order, transformers' Trainer with loss over the full
  logits, `fp16`/`bf16` off under `--cpu` (float32), gradient checkpointing on (its default).
- `ours`: `python -m training train` with the bundle's defaults (training/train.py, unchanged):
  compute dtype, gradient checkpointing and batching all `auto` (on a CPU with native bf16:
  bf16 autocast, length-grouped batches padded to multiples of 32 tokens, checkpointing off for
  the 16-bit base where it fits and on for the 4-bit base).
- `trl-4bit`, `ours-4bit`: the same two with the base in NF4 (bitsandbytes, double
  quantisation; TRL given a BitsAndBytesConfig with bf16 compute as its QLoRA docs show).
Each run is its own process (so its peak RSS is its own), arms alternate within a round and
their order reverses every other round, so a load change on the shared machine hits all. Per
run: answer tokens per second (the sample's answer tokens, counted once with our tokenizer,
over the seconds from the first step's start to the last step's end; setup not counted),
answer tokens per CPU-second (user + system time of the process over the same span), the
held-out answer loss (our evaluator on test.jsonl, dropout off), the peak RSS of the process
up to the end of training (loading and training; the evaluation after it is not counted),
and the padding share of the tokens computed. The last line is one JSON object with
`ratio_ours_over_trl_paired`, `ratio_ours_over_webui_paired` and `ratio_ours4bit_over_trl4bit`
(geometric means of the per-round ratios). Not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT / "training" / "datasets" / "instrucciones-es"
TEMPLATE = ROOT / "instruction-templates" / "spanish_ft-Llama-2-chat.yaml"
VOCAB, HIDDEN, LAYERS, INTERMEDIATE, HEADS = 4096, 384, 8, 1024, 6
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
ARMS = ("trl", "webui", "ours", "trl-4bit", "ours-4bit")
SEED = 42


# ---------------------------------------------------------------- the parent: model, rows, rounds

def build_base_model(folder: Path) -> Path:
    """A random Llama and a BPE tokenizer trained on the Spanish rows, saved as a model folder."""
    import torch
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
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                        pad_token="<unk>")
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=HEADS, max_position_embeddings=1024,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_sample(path: Path, rows: int) -> Path:
    lines = (DATA / "train.jsonl").read_text(encoding="utf-8").splitlines()
    if not 0 < rows <= len(lines):
        raise SystemExit(f"--rows {rows}: give at most {len(lines)}")
    picked = sorted(random.Random(SEED).sample(range(len(lines)), rows))
    path.write_text("".join(lines[i] + "\n" for i in picked), encoding="utf-8")
    return path


def run_child(arm: str, work: Path, run: int, args) -> dict:
    command = [sys.executable, __file__, "--child", arm, "--work", str(work), "--run", str(run),
               "--rows", str(args.rows), "--batch", str(args.batch),
               "--ours-checkpointing", args.ours_checkpointing, "--threads", str(args.threads),
               "--learning-rate", str(args.learning_rate)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    result = next((line for line in reversed(done.stdout.splitlines()) if line.startswith("{")), None)
    if done.returncode or result is None:
        raise SystemExit(f"arm {arm} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(result)


def geometric_mean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def summarise(runs: dict[str, list[dict]], args) -> dict:
    def paired(a: str, b: str, key: str = "answer_tokens_per_s") -> float | None:
        if a not in runs or b not in runs:
            return None
        return round(geometric_mean([x[key] / y[key] for x, y in zip(runs[a], runs[b], strict=True)]), 3)

    def mean(arm: str, key: str) -> float:
        return sum(run[key] for run in runs[arm]) / len(runs[arm])

    summary = {
        "ratio_ours_over_trl_paired": paired("ours", "trl"),
        "ratio_ours_over_webui_paired": paired("ours", "webui"),
        "ratio_ours4bit_over_trl4bit": paired("ours-4bit", "trl-4bit"),
        "ratio_ours_over_trl_per_cpu_second": paired("ours", "trl", "answer_tokens_per_cpu_s"),
        "ratio_ours4bit_over_trl4bit_per_cpu_second": paired("ours-4bit", "trl-4bit", "answer_tokens_per_cpu_s"),
    }
    for arm in runs:
        key = arm.replace("-", "")
        summary |= {
            f"{key}_answer_tokens_per_s": round(mean(arm, "answer_tokens_per_s"), 1),
            f"{key}_answer_tokens_per_cpu_s": round(mean(arm, "answer_tokens_per_cpu_s"), 1),
            f"{key}_heldout_loss": round(runs[arm][-1]["heldout_loss"], 4),
            f"{key}_peak_rss_mb": round(max(run["peak_rss_mb"] for run in runs[arm])),
            f"{key}_padding_share": round(mean(arm, "padding_share"), 3),
        }
    losses = {arm: runs[arm][-1]["heldout_loss"] for arm in runs}
    peers = [losses[arm] for arm in ("trl", "webui") if arm in losses]
    if peers and "ours" in losses:
        summary["ours_loss_minus_best_peer"] = round(losses["ours"] - min(peers), 4)
    summary |= {"rows": args.rows, "batch": args.batch, "steps": args.rows // args.batch, "repeats": args.repeats,
                "threads": args.threads, "cores": os.cpu_count(), "cpu_bf16": cpu_bf16_flags(),
                "load_average_after": round(os.getloadavg()[0], 2)}
    return summary


def cpu_bf16_flags() -> str:
    from training.model.load import CPU_BF16_FLAGS, cpu_flags

    return ",".join(flag for flag in CPU_BF16_FLAGS if flag in cpu_flags()) or "none"


def parent(args) -> int:
    arms = args.arms.split(",")
    unknown = set(arms) - set(ARMS)
    if unknown or args.rows % args.batch:
        raise SystemExit(f"--arms from {','.join(ARMS)}; --rows a multiple of --batch (got {unknown or args.rows})")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} before the run, "
          f"{args.threads} torch thread(s) per run, native bf16: {cpu_bf16_flags()}", flush=True)
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        build_base_model(work / "base")
        write_sample(work / "train.jsonl", args.rows)
        for repeat in range(args.repeats):
            order = arms if repeat % 2 == 0 else arms[::-1]
            for arm in order:
                load = os.getloadavg()[0]
                run = run_child(arm, work, repeat, args) | {"load_before": round(load, 2)}
                runs.setdefault(arm, []).append(run)
                print(f"  round {repeat + 1} {arm:9}: {run['steps']} steps in {run['seconds']:.1f} s, "
                      f"{run['answer_tokens_per_s']:.1f} answer tok/s, {run['answer_tokens_per_cpu_s']:.1f} per "
                      f"CPU-s, held-out answer loss {run['heldout_loss']:.4f}, peak RSS {run['peak_rss_mb']:.0f} MB, "
                      f"padding {run['padding_share']:.1%}, load {load:.2f}  [{run['settings']}]", flush=True)
    summary = summarise(runs, args)
    print("\n| arm | answer tok/s | per CPU-s | held-out loss | peak RSS MB | padding |")
    print("|---|---:|---:|---:|---:|---:|")
    for arm in runs:
        key = arm.replace("-", "")
        print(f"| {arm} | {summary[f'{key}_answer_tokens_per_s']} | {summary[f'{key}_answer_tokens_per_cpu_s']} | "
              f"{summary[f'{key}_heldout_loss']} | {summary[f'{key}_peak_rss_mb']} | "
              f"{summary[f'{key}_padding_share']:.1%} |")
    print(f"\npaired ratios (geometric mean over rounds): ours/TRL {summary['ratio_ours_over_trl_paired']}, "
          f"ours/webui {summary['ratio_ours_over_webui_paired']}, "
          f"ours QLoRA/TRL QLoRA {summary['ratio_ours4bit_over_trl4bit']}")
    print(json.dumps(summary))
    return 0


# ---------------------------------------------------------------- a child: one arm, one run

class Meter:
    """Seconds and CPU-seconds from the first step's start to the last step's end, and tokens at the model input."""

    def __init__(self) -> None:
        self.computed = self.real = 0

    def count(self, module, args, kwargs) -> None:
        ids = kwargs.get("input_ids")
        if ids is None:
            return
        self.computed += ids.numel()
        mask = kwargs.get("attention_mask")
        self.real += int(mask.sum()) if mask is not None and mask.dim() == 2 else ids.numel()

    def start(self) -> None:
        self.started, self.cpu_started = time.perf_counter(), _cpu_seconds()

    def stop(self) -> None:
        self.seconds, self.cpu_seconds = time.perf_counter() - self.started, _cpu_seconds() - self.cpu_started
        self.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # loading + training, not eval


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def meter_callback(meter: Meter):
    from transformers import TrainerCallback

    class MeterCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.hook = model.register_forward_pre_hook(meter.count, with_kwargs=True)
            meter.start()

        def on_train_end(self, args, state, control, model=None, **kwargs):
            meter.stop()
            self.hook.remove()
            self.model = model

    return MeterCallback()


def lora_config():
    from peft import LoraConfig

    return LoraConfig(task_type="CAUSAL_LM", bias="none", **LORA)


def nf4_config():
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def trl_trainer(arm: str, work: Path, run: int, args, template, meter: Meter):
    """TRL's SFTTrainer as its docs show it for a prompt/completion dataset with LoRA (and QLoRA)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from training.data.conversations import to_conversation

    rows = []
    for line in (work / "train.jsonl").read_text(encoding="utf-8").splitlines():
        messages = to_conversation(json.loads(line), "alpaca")
        prompt = template.render(messages[:-1], add_generation_prompt=True)
        rows.append({"prompt": prompt, "completion": template.render(messages)[len(prompt):]})
    model_kwargs = {"quantization_config": nf4_config(), "dtype": "bfloat16"} if arm == "trl-4bit" else None
    config = SFTConfig(
        output_dir=str(work / f"out-{arm}-{run}"), max_steps=args.rows // args.batch,
        per_device_train_batch_size=args.batch, learning_rate=args.learning_rate, lr_scheduler_type="constant",
        warmup_steps=0, optim="adamw_torch", seed=SEED, data_seed=SEED, padding_free=True, max_length=None,
        use_cpu=True,
        report_to=[], save_strategy="no", logging_steps=10_000, disable_tqdm=True, model_init_kwargs=model_kwargs,
    )
    trainer = SFTTrainer(model=str(work / "base"), args=config, train_dataset=Dataset.from_list(rows),
                         peft_config=lora_config(), callbacks=[meter_callback(meter)])
    settings = f"bf16 {config.bf16}, gradient checkpointing {config.gradient_checkpointing}, padding_free"
    return trainer, settings


def webui_trainer(work: Path, run: int, args, template, tokenizer, meter: Meter):
    """The webui Training tab's method: chat-template tokens, assistant-only labels, right padding to the batch's
    longest row, random order, transformers' Trainer in float32 under --cpu, gradient checkpointing on."""
    import torch
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    from training.data.conversations import encode_row

    encoded = [encode_row(json.loads(line), "alpaca", tokenizer, template)
               for line in (work / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    dataset = Dataset.from_list([{"input_ids": e.input_ids, "labels": e.labels,
                                  "attention_mask": [1] * len(e.input_ids)} for e in encoded])

    def pad_right(batch):
        longest = max(len(item["input_ids"]) for item in batch)
        pad = {"input_ids": tokenizer.pad_token_id, "labels": -100, "attention_mask": 0}
        return {key: torch.tensor([item[key] + [value] * (longest - len(item[key])) for item in batch])
                for key, value in pad.items()}

    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_pretrained(work / "base", dtype=torch.float32)
    model = get_peft_model(model, lora_config())
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.float()
    model.config.use_cache = False
    training_args = TrainingArguments(
        output_dir=str(work / f"out-webui-{run}"), per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1, warmup_steps=0, max_steps=args.rows // args.batch,
        learning_rate=args.learning_rate, fp16=False, bf16=False, optim="adamw_torch", logging_steps=10_000,
        save_strategy="no", lr_scheduler_type="constant", gradient_checkpointing=True, use_cpu=True,
        remove_unused_columns=False, report_to=[], seed=SEED, data_seed=SEED, disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=dataset, data_collator=pad_right,
                      callbacks=[meter_callback(meter)])
    return trainer, "fp32, gradient checkpointing True, padded to the batch's longest, random order"


def ours_train(arm: str, work: Path, run: int, args, meter: Meter):
    """`python -m training train` on a recipe with the bundle's defaults; returns the trained model and settings."""
    import yaml

    from training.adapters.record import read_record
    from training.config import load_config
    from training.train import train

    recipe = {"family": "llama2", "base_model": str(work / "base"), "template": str(TEMPLATE),
              "output_dir": str(work / f"out-{arm}-{run}"),
              "dataset": {"train": str(work / "train.jsonl"), "eval_fraction": 0, "max_tokens": 1024}}
    (work / f"recipe-{arm}.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    overrides = [
        f"training.max_steps={args.rows // args.batch}", f"training.batch_size={args.batch}",
        "training.grad_accumulation=1", f"training.learning_rate={args.learning_rate}", "training.scheduler=constant",
        "training.warmup_ratio=0", "training.optimizer=adamw_torch", f"training.seed={SEED}", "training.report_to=none",
        "training.save_steps=100000", "training.logging_steps=100000", "lora.rank=16", "lora.alpha=32",
        f"training.gradient_checkpointing={args.ours_checkpointing}", "lora.dropout=0.05",
        f"quantization.bits={4 if arm == 'ours-4bit' else 16}",
    ]
    callback = meter_callback(meter)
    output = train(load_config(work / f"recipe-{arm}.yaml", overrides), callbacks=[callback])
    metrics = read_record(output).metrics
    settings = f"gradient checkpointing {metrics.get('gradient_checkpointing')}, packed {metrics.get('packed')}"
    return callback.model, settings


def child(args) -> int:
    import torch
    import transformers

    from training.data.conversations import encode_row
    from training.evaluate.generate import answer_loss
    from training.model.load import compute_dtype
    from training.templates import load_template

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    work, arm = Path(args.work), args.child
    template = load_template(TEMPLATE)
    tokenizer = transformers.AutoTokenizer.from_pretrained(work / "base")
    answer_tokens = sum(encode_row(json.loads(line), "alpaca", tokenizer, template).trained_tokens
                        for line in (work / "train.jsonl").read_text(encoding="utf-8").splitlines())
    held_out = [encode_row(json.loads(line), "alpaca", tokenizer, template)
                for line in (DATA / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    meter = Meter()
    if arm.startswith("ours"):
        model, settings = ours_train(arm, work, args.run, args, meter)
        settings += f", compute {compute_dtype('auto', torch.device('cpu'))}"
    else:
        trainer, settings = (trl_trainer(arm, work, args.run, args, template, meter) if arm.startswith("trl")
                             else webui_trainer(work, args.run, args, template, tokenizer, meter))
        trainer.train()
        model = trainer.model
    model.eval()
    loss = answer_loss(model, held_out)["answer_loss"]
    print(json.dumps({
        "arm": arm, "seconds": meter.seconds, "cpu_seconds": meter.cpu_seconds, "steps": args.rows // args.batch,
        "answer_tokens": answer_tokens, "answer_tokens_per_s": answer_tokens / meter.seconds,
        "answer_tokens_per_cpu_s": answer_tokens / meter.cpu_seconds, "heldout_loss": loss,
        "peak_rss_mb": meter.peak_rss_mb,
        "padding_share": 1 - meter.real / meter.computed if meter.computed else 0.0, "settings": settings,
    }))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--rows", type=int, default=128, help="training rows per run, one epoch (default 128)")
    parser.add_argument("--batch", type=int, default=4, help="rows per step (default 4, as the recipes)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of all arms, alternating (default 2)")
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="constant learning rate (default 2e-3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1: a shared machine)")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {','.join(ARMS)}")
    parser.add_argument("--ours-checkpointing", choices=("auto", "true", "false"), default="auto",
                        help="our arms' training.gradient_checkpointing (default auto, the bundle's default)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--run", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    return child(args) if args.child else parent(args)


if __name__ == "__main__":
    sys.exit(main())
