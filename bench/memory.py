"""Training memory on the CPU: QLoRA against 16-bit LoRA on a demo model, measured and estimated.

    python bench/memory.py [MODEL_DIR] [--batch 4] [--seq-len 256]
    python bench/memory.py demo-output/models/gemma3-270m --batch 2 --seq-len 128 --variants qlora,lora-bf16

MODEL_DIR is one of the demo models (`python -m training fetch-demo-model MODEL_DIR --model NAME`):
SmolLM2-135M (`smollm2-135m`, the default folder demo-output/models/smollm2-135m) or Gemma-3-270M
(`gemma3-270m`); the family and the template are those of the demo recipe for the model's
architecture (training/recipes/demo-*-instrucciones.yaml). Each variant runs in
a fresh subprocess, on one thread, with MALLOC_MMAP_THRESHOLD_=65536 so that freed buffers
leave the resident set (glibc would otherwise keep them and hide the real peak):
- `loaded`: resident memory (RSS) of the loaded, LoRA-wrapped model (r16, every linear layer)
  above the same process's RSS after its imports (bitsandbytes, PEFT and TRL included);
- `peak`: the highest RSS of the second of two training steps (forward, backward, optimizer
  step; the optimizer states exist from the first) run by our trainer
  (training.train.build_trainer, gradient checkpointing on, LoRA dropout 0.05, AdamW, as the
  recipes), above the same baseline. Synthetic rows are `--seq-len` tokens each (answer labels
  on the second half).
Variants: `qlora` (NF4 weights, 16-bit embeddings, `auto` compute: fp32, or bf16 under autocast on
CPUs with AMX/AVX512-BF16; the estimate takes the dtype the run used),
`qlora-emb4bit` (as `qlora` with `quantization.embeddings: 4bit`), `lora-bf16` (16-bit weights
and compute), `lora-fp32` (bits=16, fp32 weights and compute), `qlora-full-logits` (as `qlora`,
but the loss of transformers' Trainer: full fp32 logits instead of TRL's chunked LM head), and
`qlora-padded` / `qlora-packed` (four real rows of instrucciones-es, padded vs packed). The
estimator (`training.memory.estimate.estimate` with `device="cpu"`) is printed next to each variant. The
held-out answer loss of the base model on instrucciones-es/test.jsonl (16-bit weights, NF4,
NF4 with 4-bit embeddings) prices the 4-bit embeddings. The last line is one JSON object with
the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_MODEL = "demo-output/models/smollm2-135m"
DEMO_RECIPES = "training/recipes/demo-*-instrucciones.yaml"
MB = 1024**2
TEST_ROWS = "training/datasets/instrucciones-es/test.jsonl"
STEPS = 2  # the peak of the second step: optimizer states exist, as in every step of a real run
# name: (quantization bits, compute dtype, loss, rows, embeddings)
VARIANTS = {
    "qlora": (4, "auto", "fused", "synthetic", "16bit"),
    "qlora-emb4bit": (4, "auto", "fused", "synthetic", "4bit"),
    "lora-bf16": (16, "bfloat16", "fused", "synthetic", "16bit"),
    "lora-fp32": (16, "float32", "fused", "synthetic", "16bit"),
    "qlora-full-logits": (4, "auto", "full", "synthetic", "16bit"),
    "qlora-padded": (4, "auto", "fused", "padded", "16bit"),
    "qlora-packed": (4, "auto", "fused", "packed", "16bit"),
}
# name: (quantization bits, embeddings) of the base model whose held-out answer loss is measured
QUALITY = {"bf16-weights": (16, "16bit"), "nf4": (4, "16bit"), "nf4-emb4bit": (4, "4bit")}


def memory_kb(field: str) -> int:
    """VmRSS, VmHWM, RssAnon or RssFile of this process, in KiB."""
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def demo_family_and_template(model_dir: str) -> tuple[str, str]:
    """The family and template of the demo recipe whose family is this model's (Gemma-3-270M: gemma3 + Gemma;
    the previous demo model, SmolLM2-135M, is a llama2 model prompted in bench/previous-demo's ChatML)."""
    from training.config import read_recipe
    from training.families import family_of_model_type

    model_type = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8")).get("model_type")
    family = family_of_model_type(model_type)
    for path in sorted(ROOT.glob(DEMO_RECIPES)):
        recipe = read_recipe(path)
        if recipe["family"] == family:
            return family, recipe["template"]
    if family == "llama2":  # SmolLM2-135M, the previous demo model
        return family, "bench/previous-demo/spanish_ft-ChatML.yaml"
    raise SystemExit(f"{model_dir}: model_type {model_type!r} (family {family}) has no demo recipe among "
                     f"{DEMO_RECIPES}; the bench runs the demo models: smollm2-135m, gemma3-270m")


def bench_config(model_dir: str, variant: str, batch: int, work: Path):
    from training.config import load_config

    bits, compute, _, _, embeddings = VARIANTS[variant]
    family, template = demo_family_and_template(model_dir)
    recipe = {"family": family, "base_model": model_dir, "template": template, "output_dir": str(work / "out"),
              "dataset": {"train": "training/datasets/instrucciones-es/train.jsonl", "max_tokens": 384}}
    work.mkdir(parents=True, exist_ok=True)
    (work / "recipe.yaml").write_text(json.dumps(recipe), encoding="utf-8")
    overrides = [f"quantization.bits={bits}", f"quantization.compute_dtype={compute}", "lora.rank=16",
                 f"quantization.embeddings={embeddings}",
                 f"training.batch_size={batch}", "training.grad_accumulation=1", f"training.max_steps={STEPS}",
                 "training.report_to=none", "training.save_steps=1000", "training.optimizer=adamw_torch"]
    return load_config(work / "recipe.yaml", overrides)


def bench_rows(config, tokenizer, rows: str, batch: int, seq_len: int) -> list:
    """`batch` rows: synthetic ones of exactly `seq_len` tokens (answer labels on the second half), or real ones."""
    import random

    from training.data.prepare import load_split
    from training.data.tokens import IGNORE_INDEX, Encoded
    from training.templates import load_template

    if rows == "synthetic":
        generator = random.Random(0)
        ids = [[generator.randrange(10, len(tokenizer)) for _ in range(seq_len)] for _ in range(batch)]
        return [Encoded(row, [IGNORE_INDEX] * (seq_len // 2) + row[seq_len // 2 :]) for row in ids]
    encoded, _ = load_split(config.data.train, config.data, tokenizer, load_template(config.template_path))
    return random.Random(0).sample(encoded, batch)


def import_libraries_that_load_lazily() -> None:
    """What loading and training import on first use: their code is the idle process's, not the model's."""
    import bitsandbytes  # noqa: F401
    import peft  # noqa: F401
    from trl import SFTTrainer  # noqa: F401


def load_model(config):
    """The LoRA-wrapped model as the trainer gets it, every weight read (a memory map is resident once touched)."""
    import torch

    from training.model.load import add_lora, load_base_model, use_fp32_adapter_weights

    model = load_base_model(config.model, config.quantization, True, torch.device("cpu"))
    model = add_lora(model, config.lora, config.quantization.bits)
    use_fp32_adapter_weights(model)
    for tensor in [*model.parameters(), *model.buffers()]:
        tensor.detach().max()
    return model


def worker(variant: str, model_dir: str, batch: int, seq_len: int, work: Path) -> dict:
    """One variant in this (fresh) process: RSS of the loaded model and peak RSS of a step, above idle."""
    import gc

    import torch
    from transformers import Trainer, TrainerCallback

    from training.data.batches import choose_batching
    from training.data.prepare import as_dataset
    from training.data.tokens import IGNORE_INDEX
    from training.model.load import compute_dtype, load_tokenizer
    from training.train import build_trainer

    class ResetPeakAtLastStep(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == STEPS - 1:
                reset_peak()

    torch.set_num_threads(1)
    config = bench_config(model_dir, variant, batch, work)
    tokenizer = load_tokenizer(config.model)
    rows = bench_rows(config, tokenizer, VARIANTS[variant][3], batch, seq_len)
    import_libraries_that_load_lazily()
    gc.collect()
    idle = {field: memory_kb(field) for field in ("VmRSS", "RssAnon", "RssFile")}
    model = load_model(config)
    gc.collect()
    loaded = {f"loaded_{name}_mb": (memory_kb(field) - idle[field]) / 1024
              for name, field in (("rss", "VmRSS"), ("anon", "RssAnon"), ("file", "RssFile"))}
    # Synthetic rows are all `seq_len` long: padded batches of them hold no padding and have the estimator's shape.
    batching = choose_batching(VARIANTS[variant][3] == "packed", config.model.family, tokenizer.pad_token_id)
    data, device = SimpleNamespace(train=as_dataset(rows), eval=None), torch.device("cpu")
    callbacks = [ResetPeakAtLastStep()]
    dtype = compute_dtype(config.quantization.compute_dtype, device)  # as training/train.py resolves it
    trainer = build_trainer(config, model, tokenizer, data, device, dtype, callbacks, batching)
    if VARIANTS[variant][2] == "full":  # transformers' own loss: model(**batch).loss on full fp32 logits
        trainer = Trainer(model=model, args=trainer.args, train_dataset=data.train, data_collator=batching.collator,
                          callbacks=callbacks)
    started = time.perf_counter()
    trainer.train()
    lengths = [len(r.input_ids) for r in rows]
    return loaded | {
        "variant": variant,
        "compute_dtype": str(dtype).removeprefix("torch."),
        "peak_mb": (memory_kb("VmHWM") - idle["VmRSS"]) / 1024,
        "step_s": (time.perf_counter() - started) / STEPS,
        "tokens_real": sum(lengths),
        "tokens_computed": sum(lengths) if batching.packed else len(lengths) * max(lengths),
        "longest": max(lengths),
        "trained_positions": sum(label != IGNORE_INDEX for r in rows for label in r.labels[1:]),
    }


def answer_loss_worker(name: str, model_dir: str, work: Path) -> dict:
    """Held-out answer loss of the base model (no adapter) stored as QUALITY[name] says."""
    import dataclasses

    import torch

    from training.evaluate.evaluate import load_task
    from training.evaluate.generate import answer_loss
    from training.model.load import load_base_model, load_tokenizer
    from training.templates import load_template

    bits, embeddings = QUALITY[name]
    config = bench_config(model_dir, "qlora", 4, work)
    quantization = dataclasses.replace(config.quantization, bits=bits, embeddings=embeddings)
    tokenizer = load_tokenizer(config.model)
    rows = load_task(str(ROOT / TEST_ROWS), tokenizer, load_template(config.template_path), None).encoded
    model = load_base_model(config.model, quantization, False, torch.device("cpu")).eval()
    with torch.no_grad():
        return {"quality": name} | answer_loss(model, rows)


def run_worker(name: str, args) -> dict:
    """`worker` (a variant) or `answer_loss_worker` (a QUALITY name) in a fresh Python: no inherited heap."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1", TQDM_DISABLE="1",
               TRANSFORMERS_VERBOSITY="error", PYTHONWARNINGS="ignore")
    command = [sys.executable, __file__, args.model, "--batch", str(args.batch), "--seq-len", str(args.seq_len),
               "--worker", name]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def estimated_mb(model_dir: str, variant: str, batch: int, seq_len: int, result: dict) -> float:
    """The estimator's peak for this variant's shape, in the compute dtype the run used (`auto` is bfloat16 on
    CPUs with AMX/AVX512-BF16), for the positions carrying loss (the LM head scores those)."""
    from training.memory.arch import load_model_config
    from training.memory.estimate import MemorySettings, estimate

    bits, _, loss, _, embeddings = VARIANTS[variant]
    share = min(1.0, result["trained_positions"] / (batch * (seq_len - 1)))
    settings = MemorySettings(method="qlora" if bits < 16 else "lora", bits=bits, seq_len=seq_len, batch=batch,
                              rank=16, device="cpu", compute=result["compute_dtype"], embeddings=embeddings,
                              loss=loss, trained_share=share)
    result = estimate(load_model_config(model_dir), settings)
    return result.total_bytes / MB


def padding_share_of_random_batches(model_dir: str, batch: int) -> float:
    """Padding share of random batches of instrucciones-es rows padded to their longest: what packing saves."""
    import random

    from training.data.prepare import load_split
    from training.model.load import load_tokenizer
    from training.templates import load_template

    with tempfile.TemporaryDirectory() as tmp:
        config = bench_config(model_dir, "qlora", batch, Path(tmp))
    tokenizer, template = load_tokenizer(config.model), load_template(config.template_path)
    encoded, _ = load_split(config.data.train, config.data, tokenizer, template)
    lengths = [len(r.input_ids) for r in encoded]
    generator, real, padded = random.Random(0), 0, 0
    for _ in range(200):
        sample = generator.sample(lengths, batch)
        real, padded = real + sum(sample), padded + batch * max(sample)
    return 1 - real / padded


def estimator_shape(name: str, result: dict, args) -> tuple[int, int]:
    """(batch, seq_len) the estimator gets: the synthetic rows' shape, or the real rows' padded or packed one."""
    if name == "qlora-padded":
        return args.batch, result["longest"]
    if name == "qlora-packed":
        return 1, result["tokens_real"]
    return args.batch, args.seq_len


def print_variants(results: dict, estimates: dict) -> dict:
    """The table of measured and estimated peaks; returns each variant's estimate error."""
    print(f"{'variant':18} {'loaded MB':>10} {'(anon/file)':>13} {'peak MB':>9} {'estimate':>9} {'error':>7} "
          f"{'step s':>7}  tokens")
    errors = {name: estimates[name] / results[name]["peak_mb"] - 1 for name in estimates}
    for name, r in results.items():
        print(f"{name:18} {r['loaded_rss_mb']:10.0f} {r['loaded_anon_mb']:6.0f}/{r['loaded_file_mb']:<6.0f} "
              f"{r['peak_mb']:9.0f} {estimates[name]:9.0f} {errors[name]:+7.1%} {r['step_s']:7.1f}  "
              f"{r['tokens_real']} real of {r['tokens_computed']}")
    return errors


def report(results: dict, estimates: dict, losses: dict, padding_share: float, args) -> dict:
    errors = print_variants(results, estimates)
    q, q4, bf16, full = (results[name] for name in ("qlora", "qlora-emb4bit", "lora-bf16", "qlora-full-logits"))
    figures = {
        "loaded_ratio": round(q["loaded_rss_mb"] / bf16["loaded_rss_mb"], 3),
        "loaded_ratio_embeddings_4bit": round(q4["loaded_rss_mb"] / bf16["loaded_rss_mb"], 3),
        "qlora_loaded_mb": round(q["loaded_rss_mb"]), "qlora_emb4bit_loaded_mb": round(q4["loaded_rss_mb"]),
        "bf16_loaded_mb": round(bf16["loaded_rss_mb"]),
        "lora_fp32_loaded_mb": round(results["lora-fp32"]["loaded_rss_mb"]),
        "qlora_peak_mb": round(q["peak_mb"]), "bf16_peak_mb": round(bf16["peak_mb"]),
        "qlora_estimate_mb": round(estimates["qlora"]), "bf16_estimate_mb": round(estimates["lora-bf16"]),
        "estimate_error_qlora": round(errors["qlora"], 3), "estimate_error_bf16": round(errors["lora-bf16"], 3),
        "estimate_error": {name: round(error, 3) for name, error in errors.items()},
        "lora_fp32_peak_mb": round(results["lora-fp32"]["peak_mb"]),
        "qlora_emb4bit_peak_mb": round(q4["peak_mb"]), "qlora_full_logits_peak_mb": round(full["peak_mb"]),
        "qlora_step_over_loaded_mb": round(q["peak_mb"] - q["loaded_rss_mb"]),
        "padded_peak_mb": round(results["qlora-padded"]["peak_mb"]),
        "packed_peak_mb": round(results["qlora-packed"]["peak_mb"]),
        "random_batch_padding_share": round(padding_share, 3),
        "answer_loss": {name: round(r["answer_loss"], 4) for name, r in losses.items()},
        "answer_loss_cost_embeddings_4bit": round(
            losses["nf4-emb4bit"]["answer_loss"] - losses["nf4"]["answer_loss"], 4),
        "batch": args.batch, "seq_len": args.seq_len,
    }
    for key, label in (("loaded_ratio", "16-bit embeddings (default)"),
                       ("loaded_ratio_embeddings_4bit", "quantization.embeddings: 4bit")):
        ratio = figures[key]
        print(f"loaded QLoRA / bf16 LoRA, {label}: {ratio:.2f} ({'meets' if ratio <= 0.4 else 'misses'} the <= 0.4 "
              "target)")
    answer = figures["answer_loss"]
    print(f"held-out answer loss of the base model ({losses['nf4']['answer_tokens']} tokens of {TEST_ROWS}): "
          f"bf16 weights {answer['bf16-weights']:.4f}, NF4 {answer['nf4']:.4f}, NF4 + 4-bit embeddings "
          f"{answer['nf4-emb4bit']:.4f} (cost of 4-bit embeddings {figures['answer_loss_cost_embeddings_4bit']:+.4f})")
    for name, label in (("qlora", "QLoRA"), ("lora-bf16", "bf16 LoRA")):
        print(f"peak of a training step, {label}: measured {results[name]['peak_mb']:.0f} MB, estimated "
              f"{estimates[name]:.0f} MB ({errors[name]:+.1%}; target within 10%)")
    print(f"one QLoRA step adds {figures['qlora_step_over_loaded_mb']} MB to the loaded model, mostly TRL's fused LM "
          f"head (its CPU fallback holds ~8 fp32 tiles of tokens x 32768 vocabulary columns; transformers' full "
          f"fp32 logits peak at {figures['qlora_full_logits_peak_mb']} MB); packing the four real rows: peak "
          f"{figures['packed_peak_mb']} MB vs {figures['padded_peak_mb']} MB padded; random batches of {args.batch} "
          f"rows are {padding_share:.0%} padding when padded")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("model", nargs="?", default=DEFAULT_MODEL, help=f"model folder (default {DEFAULT_MODEL})")
    parser.add_argument("--batch", type=int, default=4, help="rows per step (default 4)")
    parser.add_argument("--seq-len", type=int, default=256, help="tokens per synthetic row (default 256)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of: " + ", ".join(VARIANTS))
    parser.add_argument("--worker", choices=[*VARIANTS, *QUALITY], help=argparse.SUPPRESS)
    args = parser.parse_args()
    model_dir = Path(args.model) if Path(args.model).is_absolute() else ROOT / args.model
    if not (model_dir / "config.json").is_file():
        print(f"{model_dir}: no model here; make it with "
              f"`python -m training fetch-demo-model {DEFAULT_MODEL} --model smollm2-135m` (or "
              f"`... demo-output/models/gemma3-270m --model gemma3-270m`)", file=sys.stderr)
        return 2
    args.model = str(model_dir)
    if args.worker:
        with tempfile.TemporaryDirectory() as work:
            run = answer_loss_worker if args.worker in QUALITY else partial(worker, batch=args.batch,
                                                                              seq_len=args.seq_len)
            print(json.dumps(run(args.worker, args.model, work=Path(work))))
        return 0
    results = {}
    for name in args.variants.split(","):
        results[name] = run_worker(name, args)
        print(f"  {name}: loaded {results[name]['loaded_rss_mb']:.0f} MB, peak {results[name]['peak_mb']:.0f} MB",
              flush=True)
    estimates = {name: estimated_mb(args.model, name, *estimator_shape(name, result, args), result)
                 for name, result in results.items()}
    if set(results) != set(VARIANTS):
        errors = print_variants(results, estimates)
        print(json.dumps({"results": results, "estimate_mb": estimates, "estimate_error": errors}))
        return 0
    losses = {name: run_worker(name, args) for name in QUALITY}
    figures = report(results, estimates, losses, padding_share_of_random_batches(args.model, args.batch), args)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
