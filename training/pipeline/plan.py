"""The plan a pipeline prints before anything is downloaded or loaded, and its memory check.

For every step: what it does, its estimated peak memory and its estimated time. Memory comes
from the bundle's estimator (training/memory: `estimate(config, MemorySettings)`) for the
recipe's own settings on this device: the base model's config.json when the base is a local
folder, else the family's shipped config (training/memory/configs/). Time comes from throughput:
measured where the bundle has a measurement for that model and device (the demo model on 2 CPU
cores), otherwise an assumption printed as one (tokens/s for a GPU class, scaled by parameters).
Token counts are estimated from the training files (bytes / BYTES_PER_TOKEN), and early stopping
can end a run sooner: the times are estimates, and the printout says so.

The plan is refused with a ValueError naming the step, the memory it needs and the memory the
device has (CUDA: torch.cuda.mem_get_info; CPU: available RAM) unless `force` (--force).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import psutil

from training.config import RunConfig
from training.files import GIB, find_bundle_file
from training.memory.arch import load_model_config
from training.memory.estimate import MemorySettings, estimate
from training.memory.recipe import checkpointing_needed, recipe_peak_bytes
from training.model.load import cpu_has_native_bf16

BYTES_PER_TOKEN = 3.5  # Spanish JSONL rows with the family tokenizers: about 3.5 bytes of file per token
# Training throughput in tokens/s (prompt + answer) of a model of `params` parameters, with gradient
# checkpointing; without it a step is about 1.4x faster (measured on the CPU, issue 15). A model near
# neither is scaled by parameters from the nearer one (Gemma's cost is mostly its 262k-token LM head:
# parameters are a rough guide).
CPU_REFERENCES = (
    (80.0, 134_515_008, "measured: the previous demo adapters, SmolLM2-135M on 2 CPU cores"),
    (120.0, 268_098_176, "measured: the demo adapters, Gemma-3-270M on 2 idle CPU cores (bf16)"),
)
GPU_CLASSES = (  # (up to GB of memory, class, tokens/s of a 7B QLoRA step): assumed, not measured
    (17e9, "16 GB class (T4: fp16)", 300.0),
    (26e9, "24 GB class (A10G, L4, RTX 3090/4090)", 900.0),
    (math.inf, "40 GB+ class (A100, H100)", 2500.0),
)
SEVEN_B = 7.0e9
TRAINING_FIX = "Lower training.batch_size (raise training.grad_accumulation to keep the batch) or dataset.max_tokens"
NO_CHECKPOINTING_SPEEDUP = 1.4
# The evaluation, per variant: seconds per held-out row of the loss pass (in float32) and per greedy
# answer (batch 8) of `new_tokens` tokens, for a model of the given size. CPU: the demo model
# (Gemma-3-270M) on 2 idle cores, README's first command on a fresh clone, December 2026: 568 rows
# scored in 218 s under bf16 autocast (0.38 s a row, so 0.57 s in float32) and 32 answers of up to 80
# tokens in 120 s. GPU: assumed for a 7B.
SECONDS_PER_LOSS_ROW = {"cpu": (0.57, 268_098_176), "cuda": (0.02, SEVEN_B)}
SECONDS_PER_ANSWER = {"cpu": (3.75, 268_098_176, 80), "cuda": (0.5, SEVEN_B, 96)}
BF16_LOSS_SPEEDUP = 1.5  # the loss pass under bfloat16 autocast on a CPU with AVX512-BF16 (measured, 1.5-1.6x)
EVAL_BATCH = 8


@dataclass(frozen=True)
class Device:
    kind: str  # cuda | cpu
    name: str
    available_bytes: int
    total_bytes: int
    assumed: bool = False  # a GPU given on the command line (--gpu-memory), not this machine's


@dataclass(frozen=True)
class PlannedStep:
    name: str
    what: str
    peak_bytes: int | None = None
    seconds: float | None = None
    basis: str = ""  # how the time was estimated (measured or assumed, and from what)
    fix: str = ""  # what lowers this step's memory, for the refusal


def detect_device(gpu_memory_gb: float | None = None) -> Device:
    """This machine's GPU (free memory) or CPU (available RAM); or a GPU of `gpu_memory_gb` assumed."""
    if gpu_memory_gb is not None:
        size = int(gpu_memory_gb * 1e9)
        return Device("cuda", f"a {gpu_memory_gb:g} GB GPU (assumed: --gpu-memory)", size, size, assumed=True)
    import torch

    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        return Device("cuda", torch.cuda.get_device_name(0), free, total)
    memory = psutil.virtual_memory()
    return Device("cpu", "CPU", memory.available, memory.total)


def model_config(base_model: str, shipped: str) -> tuple[dict, str]:
    """(config.json of the base, where it came from): a local folder's own, else the family's shipped one."""
    folder = Path(base_model)
    if (folder / "config.json").is_file():
        return load_model_config(str(folder)), f"{folder}/config.json"
    return load_model_config(shipped), f"training/memory/configs/{shipped}.json (same architecture assumed)"


def training_memory(config: RunConfig, model: dict, device: Device) -> tuple[int, bool]:
    """(estimated peak bytes of one training step of this recipe, gradient checkpointing on).

    `gradient_checkpointing: auto` is decided as training decides it (training/memory/recipe.py): on for a
    4/8-bit base, else off when the peak without it fits the device's free memory. A stacked adapter adds
    its frozen weights.
    """
    setting = config.training.gradient_checkpointing
    if setting == "auto":
        without = _training_peak(config, model, device, checkpointing=False)
        if not checkpointing_needed(without, device.available_bytes, config.quantization.bits):
            return without, False
        return _training_peak(config, model, device, checkpointing=True), True
    return _training_peak(config, model, device, checkpointing=bool(setting)), bool(setting)


def _training_peak(config: RunConfig, model: dict, device: Device, checkpointing: bool) -> int:
    return recipe_peak_bytes(config, model, device.kind, config.data.max_tokens, checkpointing,
                             compute=training_compute(config.quantization.compute_dtype, device))


def training_compute(setting: str, device: Device) -> str:
    """The compute dtype the trainer will use (training/model/load.py: compute_dtype), for the estimate:
    `auto` on a CPU is bfloat16 where it multiplies bf16 natively, else float32 (a GPU's `auto` the estimator
    resolves itself)."""
    if setting != "auto" or device.kind != "cpu":
        return setting
    return "bfloat16" if cpu_has_native_bf16() else "float32"


def evaluation_memory(model: dict, device: Device, seq_len: int, bits: int) -> int:
    """Estimated peak bytes of the evaluation: the base in fp32 (CPU) or 16/4-bit (GPU), a batch of prompts."""
    settings = MemorySettings(method="inference", bits=bits if device.kind == "cuda" else 16, seq_len=seq_len,
                              batch=EVAL_BATCH, device=device.kind,
                              compute="auto" if device.kind == "cuda" else "float32")
    return estimate(model, settings).total_bytes


def training_rows(config: RunConfig) -> tuple[int, float]:
    """(rows trained per epoch, estimated tokens per row), from the training files."""
    rows, counted, size = 0, 0, 0
    sources = [(config.data.train, None)] + ([(config.data.replay.train, config.data.replay.rows)]
                                              if config.data.replay else [])
    for given, limit in sources:
        path = find_bundle_file(given)
        if path is None:
            raise FileNotFoundError(f"{config.source}: dataset file {given} not found")
        lines = [line for line in path.read_bytes().splitlines() if line.strip()]
        taken = lines[:limit] if limit else lines
        rows += len(taken) if limit else round(len(taken) * (1 - config.data.eval_fraction))
        counted, size = counted + len(taken), size + sum(len(line) for line in taken)
    return rows, size / max(1, counted) / BYTES_PER_TOKEN


def training_time(config: RunConfig, params: int, device: Device, checkpointing: bool) -> tuple[float, str]:
    """(estimated seconds, how): optimizer steps x rows x tokens per row / tokens per second."""
    rows, tokens_per_row = training_rows(config)
    per_step = config.training.batch_size * config.training.grad_accumulation
    steps = config.training.max_steps or math.ceil(config.training.epochs * math.ceil(rows / per_step))
    tokens_per_s, how = throughput(params, device)
    if not checkpointing:
        tokens_per_s *= NO_CHECKPOINTING_SPEEDUP
        how += f", x{NO_CHECKPOINTING_SPEEDUP} without gradient checkpointing"
    seconds = steps * per_step * tokens_per_row / tokens_per_s
    return seconds, (f"at most {steps} steps x {per_step} rows x ~{tokens_per_row:.0f} tokens at "
                     f"~{tokens_per_s:.0f} tokens/s ({how})")


def throughput(params: int, device: Device) -> tuple[float, str]:
    """Training tokens/s with checkpointing for a model of `params` parameters on `device`, and its source."""
    if device.kind == "cpu":
        rate, reference, source = min(CPU_REFERENCES, key=lambda ref: abs(math.log(params / ref[1])))
        if abs(params - reference) / reference < 0.05:
            return rate, source
        return rate * reference / params, f"assumed: {source}, scaled by parameters"
    gpu_class, rate = next((name, rate) for limit, name, rate in GPU_CLASSES if device.total_bytes <= limit)
    return rate * SEVEN_B / params, f"assumed for a {gpu_class} GPU: {rate:.0f} tokens/s for a 7B, not measured"


def evaluation_time(loss_rows: int, answers: int, params: int, device: Device, evaluation) -> tuple[float, str]:
    """(estimated seconds, how) of the loss pass over `loss_rows` and `answers` greedy answers."""
    per_row, row_reference = SECONDS_PER_LOSS_ROW[device.kind]
    max_new_tokens = evaluation.max_new_tokens
    if evaluation.bf16_loss and device.kind == "cpu" and cpu_has_native_bf16():
        per_row /= BF16_LOSS_SPEEDUP  # training/evaluate/evaluate.py: loss_dtype
    per_answer, reference, new_tokens = SECONDS_PER_ANSWER[device.kind]
    per_row *= params / row_reference
    per_answer *= params / reference * max_new_tokens / new_tokens
    kind = ("scaled from the demo model's, measured on 2 CPU cores" if device.kind == "cpu"
            else "assumed for a 7B on a GPU")
    return loss_rows * per_row + answers * per_answer, (
        f"{loss_rows} rows scored, {answers} answers of up to {max_new_tokens} tokens "
        f"({per_row:.2f} s a row, {per_answer:.1f} s an answer, {kind})")


def check_fits(steps: list[PlannedStep], device: Device, force: bool) -> None:
    """Refuse the plan when a step needs more memory than the device has (unless `force`)."""
    for step in steps:
        if step.peak_bytes is None or step.peak_bytes <= device.available_bytes:
            continue
        message = (f"step '{step.name}' needs about {step.peak_bytes / GIB:.1f} GiB on {device.kind} "
                   f"({device.name}), {device.available_bytes / GIB:.1f} GiB available")
        if force:
            print(f"warning: {message}; going on anyway (--force)", flush=True)
            continue
        raise ValueError(f"{message}. Nothing was downloaded or trained. {step.fix or 'Free memory'}, or pass "
                         "--force to try anyway")


def render_plan(title: str, steps: list[PlannedStep], device: Device) -> str:
    where = "assumed" if device.assumed else "available"
    lines = [f"{title} on {device.kind}: {device.name}, {device.available_bytes / GIB:.1f} GiB {where}",
             f"  {'step':<26}{'peak memory':>12}{'time':>10}  what"]
    for i, step in enumerate(steps, 1):
        memory = f"{step.peak_bytes / GIB:.1f} GiB" if step.peak_bytes is not None else "-"
        lines.append(f"  {i}. {step.name:<23}{memory:>12}{duration(step.seconds):>10}  {step.what}")
        if step.basis:
            lines.append(f"  {'':<48}{step.basis}")
    known = [s.seconds for s in steps if s.seconds is not None]
    trains = any(step.name.startswith("train") for step in steps)
    lines.append(f"  estimated total: {duration(sum(known))} (estimates, not measurements"
                 + ("; early stopping may end a training sooner)" if trains else ")"))
    return "\n".join(lines)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"~{seconds:.0f} s"
    return f"~{seconds / 60:.0f} min" if seconds < 5400 else f"~{seconds / 3600:.1f} h"
