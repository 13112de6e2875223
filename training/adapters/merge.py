"""Fold a LoRA adapter into a 16-bit copy of its base model and save a full model folder.

    python -m training merge loras/mistral-fusionado --out models/Mistral-7B-es
    python -m training merge ADAPTER --out DIR --base PATH --dtype float16 --dequantized-nf4

The base comes from --base, else the adapter's training record, else `base_model_name_or_path`
in adapter_config.json. It is loaded in 16 (or 32) bits, never in 4 bits: a delta added to NF4
weights would be rounded away. `--dequantized-nf4` first replaces every linear weight that
QLoRA training quantised (all but the output layer) by its NF4 + double-quant round trip, so
the merged model computes what the adapter was trained against. The folder (safetensors shards,
tokenizer, `spanish_ft_record.json` with `kind: "merged"`) loads in the webui as a model and is
written atomically. `--out` must be new, or a merged model made by spanish_ft with `--replace`
(training/files.py: check_output), checked before the base is loaded; so is the adapter, through the
door of training/adapters/folder.py (PEFT gets its checked config, never the file). The memory needed is
reported first; the run stops if RAM is clearly short.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import bitsandbytes.functional as bnbf
import psutil
import torch
from torch import nn
from tqdm import tqdm
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from training.adapters.card import write_notice
from training.adapters.folder import CONFIG_NAME, AdapterFolder, base_model_of, load_peft_adapter, open_adapter
from training.adapters.record import RECORD_NAME, TrainingRecord, merged_record, read_record, write_record
from training.families import family_of_model_type
from training.files import GIB, atomic_output_dir, check_output, sha256_file

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
MODEL = "merged model folder"


@dataclass(frozen=True, kw_only=True)
class MergeSettings:
    """What `merge` makes: the adapter folded into a 16-bit copy of its base, saved as a model folder."""

    adapter: Path  # the adapter folder to merge
    out: Path  # the merged model folder: new, or a merged model of ours with `replace`
    base: str | None = None  # base model folder or hub id (default: the adapter's, adapters/folder.py: base_model_of)
    dtype: str = "bfloat16"  # dtype of the merged model
    dequantized_nf4: bool = False  # merge into the NF4 round trip of the base, as QLoRA trained against
    allow_pickle: bool = False  # accept adapter_model.bin (pickle) weights
    force: bool = False  # run even if available RAM looks too small
    max_shard_size: str = "5GB"  # largest safetensors shard
    replace: bool = False  # `out` may hold a model made by spanish_ft, which is replaced

    @classmethod
    def from_args(cls, args) -> MergeSettings:
        return cls(adapter=args.adapter, out=args.out, base=args.base, dtype=args.dtype,
                   dequantized_nf4=args.dequantized_nf4, allow_pickle=args.allow_pickle, force=args.force,
                   max_shard_size=args.max_shard_size, replace=args.replace)


def resolve_base(adapter: AdapterFolder, base: str | None) -> str:
    """--base, else the adapter's own base model (the door: base_model_of)."""
    if base:
        return base
    found, _ = base_model_of(adapter.config, read_record(adapter.path))
    if not found:
        raise ValueError(f"{adapter.path}: no base model in {RECORD_NAME} or {CONFIG_NAME}; pass --base MODEL")
    return found


def refuse_quantized_base(base_config, base: str) -> None:
    quantization = getattr(base_config, "quantization_config", None)
    if quantization:
        method = (
            quantization.get("quant_method", "?") if isinstance(quantization, dict) else type(quantization).__name__
        )
        raise ValueError(
            f"{base}: this checkpoint is stored quantised ({method}); merging into quantised weights would round the "
            "adapter's delta away. Pass --base with the 16-bit original model (add --dequantized-nf4 to match a QLoRA "
            "adapter's training exactly) and quantise the merged model when you load it in the webui"
        )


def memory_needed_bytes(base_config, dtype: str, adapter_bytes: int) -> int:
    """Parameter count of the base (from its config, on the meta device) x bytes per parameter + the adapter."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(base_config)
    return sum(p.numel() for p in model.parameters()) * DTYPE_BYTES[dtype] + adapter_bytes


MERGE_MEMORY_ADVICE = "close other programs, choose --dtype bfloat16, or pass --force to try anyway"


def check_memory(needed_bytes: int, available_bytes: int, force: bool, advice: str = MERGE_MEMORY_ADVICE) -> None:
    if needed_bytes > available_bytes and not force:
        raise ValueError(
            f"merging needs at least {needed_bytes / GIB:.1f} GiB of RAM but only {available_bytes / GIB:.1f} GiB is "
            f"available: {advice}"
        )


def require_merge_memory(base_config, dtype: str, adapter: AdapterFolder, force: bool,
                         advice: str = MERGE_MEMORY_ADVICE) -> None:
    """Print the RAM a merge of `adapter` into the base in `dtype` needs and has; refuse (check_memory) if short."""
    needed = memory_needed_bytes(base_config, dtype, adapter.weights_file.stat().st_size)
    available = psutil.virtual_memory().available
    print(f"memory: about {needed / GIB:.2f} GiB needed ({dtype} base + adapter), {available / GIB:.2f} GiB available")
    check_memory(needed, available, force, advice)


def nf4_round_trip_(linear) -> None:
    """Replace a linear weight by its NF4 double-quant round trip (bitsandbytes' Linear4bit defaults)."""
    packed, state = bnbf.quantize_4bit(linear.weight.data, blocksize=64, compress_statistics=True, quant_type="nf4")
    linear.weight.data = bnbf.dequantize_4bit(packed, state).to(linear.weight.dtype)


def round_trip_linears_nf4_(model) -> None:
    """NF4 round trip of every linear layer that 4-bit loading quantises (transformers skips the output layer)."""
    output_layer = model.get_output_embeddings()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear) and m is not output_layer]
    for linear in tqdm(linears, desc="NF4 round trip", unit="module"):
        nf4_round_trip_(linear)


def merged_model(base: str, adapter: AdapterFolder, dtype: str, dequantized_nf4: bool, load_dtype: str | None = None):
    """The base loaded in `load_dtype` (default `dtype`), its linear weights through the NF4 round trip when
    `dequantized_nf4`, cast to `dtype`, with the adapter folded in (safe_merge: NaN/inf weights refused)."""
    model = AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, load_dtype or dtype))
    if dequantized_nf4:
        round_trip_linears_nf4_(model)  # from the stored weights, as QLoRA's 4-bit loading quantised them
    model = model.to(getattr(torch, dtype))
    return load_peft_adapter(model, adapter).merge_and_unload(progressbar=True, safe_merge=True)


def merge_record(settings: MergeSettings, adapter: AdapterFolder, base: str) -> TrainingRecord:
    source = read_record(adapter.path) or TrainingRecord()
    entry = {
        "path": str(adapter.path),
        "name": source.name or adapter.path.name,
        "sha256": sha256_file(adapter.weights_file),
    }
    return merged_record(settings.out.name, source, base, entry, settings.dtype, settings.dequantized_nf4)


def merge_to_model(settings: MergeSettings) -> Path:
    """Write the merged full model folder `settings.out`; returns it."""
    inputs = [settings.adapter, *([settings.base] if settings.base and Path(settings.base).exists() else [])]
    check_output(settings.out, replace=settings.replace, marker=RECORD_NAME, what=MODEL, inputs=inputs)
    adapter = open_adapter(settings.adapter, settings.allow_pickle)  # the door: before PEFT sees the folder
    base = resolve_base(adapter, settings.base)
    base_config = AutoConfig.from_pretrained(base)
    refuse_quantized_base(base_config, base)
    require_merge_memory(base_config, settings.dtype, adapter, settings.force)
    merged = merged_model(base, adapter, settings.dtype, settings.dequantized_nf4)
    has_own_tokenizer = (settings.adapter / "tokenizer_config.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(settings.adapter if has_own_tokenizer else base)
    with atomic_output_dir(settings.out, replace=settings.replace, marker=RECORD_NAME, what=MODEL) as tmp:
        merged.save_pretrained(tmp, max_shard_size=settings.max_shard_size)
        tokenizer.save_pretrained(tmp)
        record = merge_record(settings, adapter, base)
        write_record(tmp, record)
        write_notice(tmp, record.family or family_of_model_type(base_config.model_type))
    return settings.out


def add_arguments(parser) -> None:
    parser.add_argument("adapter", type=Path, help="adapter folder to merge")
    parser.add_argument("--out", required=True, type=Path, help="output model folder (new, or see --replace)")
    parser.add_argument("--replace", action="store_true",
                        help="replace --out if it holds a model made by spanish_ft (never anything else)")
    parser.add_argument("--base", help="base model folder or hub id (default: from the adapter's record or config)")
    parser.add_argument("--dtype", choices=list(DTYPE_BYTES), default="bfloat16", help="dtype of the merged model")
    parser.add_argument(
        "--dequantized-nf4",
        action="store_true",
        help="merge into the NF4-dequantised base, as the QLoRA adapter was trained against",
    )
    parser.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard (default 5GB)")
    parser.add_argument("--allow-pickle", action="store_true", help="accept adapter_model.bin (pickle) weights")
    parser.add_argument("--force", action="store_true", help="run even if available RAM looks too small")
    parser.add_argument("--load-in-4bit", action="store_true", help=argparse.SUPPRESS)  # only to explain the refusal


def run(args) -> int:
    if args.load_in_4bit:
        raise ValueError(
            "merge never loads the base in 4 bits: adding a LoRA delta to NF4 weights rounds it away. Merge into a "
            "16-bit copy (the default), with --dequantized-nf4 to reproduce the 4-bit base the adapter was trained on, "
            "then load the merged model in 4 bits in the webui"
        )
    settings = MergeSettings.from_args(args)
    print(
        f"merged {settings.adapter} into {merge_to_model(settings)} ({settings.dtype}"
        f"{', NF4-dequantised base' if settings.dequantized_nf4 else ''})"
    )
    return 0
