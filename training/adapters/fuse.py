"""Fuse several LoRA adapters into one plain LoRA adapter folder, exactly by default.

    python -m training fuse loras/mistral-instrucciones loras/mistral-leyes-ec --out loras/mistral-fusionado
    python -m training fuse A B --weights 0.7 0.3 --method svd --rank 16 --out C

`cat` (default) stacks the sources' scaled factors along the rank (see `training/adapters/factors.py`):
the fused delta is sum_i w_i * scale_i * B_i A_i to float tolerance, at rank sum r_i. `svd`
compresses that to `--rank` and reports the relative Frobenius error per module and overall.
Both work on the safetensors files alone, with no base model in memory. What cannot be fused
exactly (DoRA, biases, saved modules, PiSSA-style inits, different bases or templates, ...) is
refused with the folder and the field named. The output folder holds adapter_config.json,
adapter_model.safetensors, a training record (`kind: "fused"`) and a model card; it loads as
ONE adapter with `PeftModel.from_pretrained` (PEFT 0.18 to 0.21 checked). `--out` must be new,
or an adapter made by spanish_ft with `--replace` (training/files.py: check_output), checked
before any source is read; the folder is written whole, atomically.
What to fuse is one `FuseSettings`, built from the command line in one place (`FuseSettings.from_args`);
the webui extension and the pipeline build the same object and call `fuse_adapters`, which imports
only torch and safetensors.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from training.adapters.card import write_card
from training.adapters.factors import PEFT_PREFIX, compress_svd, module_scale, stack_factors
from training.adapters.folder import CONFIG_NAME, SAFE_WEIGHTS_NAME, base_model_of
from training.adapters.fusable import FusableAdapter, check_same, fused_adapter_config, open_fusable
from training.adapters.record import RECORD_NAME, TrainingRecord, fused_record, write_record
from training.files import atomic_output_dir, check_output, sha256_file, write_json_atomic
from training.templates import load_template

METHODS = ("cat", "svd")


@dataclass(frozen=True, kw_only=True)
class FuseSettings:
    """What `fuse` makes: the source adapters, the output folder, and how they are fused."""

    adapters: list[Path]  # the source adapter folders, in order
    out: Path  # the fused adapter folder: new, or an adapter of ours with `replace`
    weights: list[float] | None = None  # one per source (default: all 1.0)
    method: str = "cat"  # cat: exact, rank = sum of ranks; svd: lossy, to `rank`
    rank: int | None = None  # the compressed adapter's rank (svd only)
    template: Path | None = None  # the instruction template to record when the sources' templates differ
    name: str | None = None  # the adapter name for the record and card (default: the `out` folder's name)
    allow_pickle: bool = False  # accept adapter_model.bin (pickle) weights from trusted sources
    replace: bool = False  # `out` may hold an adapter made by spanish_ft, which is replaced

    @classmethod
    def from_args(cls, args) -> FuseSettings:
        return cls(adapters=list(args.adapters), out=args.out, weights=args.weights, method=args.method,
                   rank=args.rank, template=args.template, name=args.name, allow_pickle=args.allow_pickle,
                   replace=args.replace)


@dataclass
class FuseResult:
    out_dir: Path
    module_errors: dict[str, float]  # relative Frobenius error of each module's delta (empty for `cat`: exact)
    overall_error: float  # over all modules: sqrt(sum dropped^2 / sum delta^2)
    rank: int  # the fused adapter's `r`; modules of another rank are listed in its rank_pattern


def check_sources_agree(sources: list[FusableAdapter]) -> None:
    """Refuse sources trained on different bases/families, or whose shared modules differ in shape."""
    check_same([(s.path, *base_model_of(s.config, s.record)) for s in sources], "base model")
    check_same([(s.path, s.record.family, f"{RECORD_NAME} family") for s in sources], "model family")
    check_same([(s.path, s.config.get("task_type"), f"{CONFIG_NAME} task_type") for s in sources], "task type")
    check_same(
        [(s.path, s.config.get("fan_in_fan_out", False), f"{CONFIG_NAME} fan_in_fan_out") for s in sources],
        "weight layout",
    )
    first_seen: dict = {}
    for source in sources:
        for module, factors in source.modules.items():
            shape = (
                "embedding" if "lora_embedding" in factors.a_key else "linear",
                factors.b.shape[0],
                factors.a.shape[1],
            )
            seen_in, seen_shape = first_seen.setdefault(module, (source.path, shape))
            if seen_shape != shape:
                raise ValueError(
                    f"module {module!r} is a {shape[0]} layer of d_out x d_in {shape[1]}x{shape[2]} in {source.path} "
                    f"but a {seen_shape[0]} layer of {seen_shape[1]}x{seen_shape[2]} in {seen_in}: "
                    "the adapters were made for different models"
                )


def resolve_template(sources: list[FusableAdapter], template: Path | None) -> dict | None:
    """The template the fused adapter is used with: --template, else the sources' common one."""
    if template is not None:
        loaded = load_template(template)
        return {"name": loaded.name, "file": Path(template).name, "sha256": loaded.sha256}
    known = [(s.path, s.record.template) for s in sources if s.record.template]
    if len({t.get("sha256") for _, t in known}) > 1:
        listing = "; ".join(f"{p}: {t.get('name')} (sha256 {str(t.get('sha256'))[:12]})" for p, t in known)
        raise ValueError(
            f"the sources were trained with different instruction templates ({RECORD_NAME} template.sha256): "
            f"{listing}. One adapter can be used with one template only: pass --template FILE to choose it"
        )
    return known[0][1] if known else None


@contextmanager
def one_torch_thread():
    """Fusion is thin matrix products and copies: one thread is as fast on an idle machine and
    ~10x faster on a busy one, where OpenMP threads spin-wait for cores (measured on 2 cores)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def fuse_tensors(sources: list[FusableAdapter], weights: list[float], method: str, rank: int | None):
    """(tensors, {module: fused rank}, {module: error}, overall error) for all modules of all sources."""
    import torch

    dtype = sources[0].modules[next(iter(sources[0].modules))].a.dtype
    for source in sources:
        for factors in source.modules.values():
            dtype = torch.promote_types(dtype, factors.a.dtype)
    modules = list(dict.fromkeys(m for s in sources for m in s.modules))
    tensors, ranks, errors, delta_sq, dropped_sq = {}, {}, {}, 0.0, 0.0
    for module in modules:
        parts = [
            (s.modules[module], w * module_scale(s.config, module, s.modules[module].a.shape[0], str(s.path)))
            for s, w in zip(sources, weights, strict=True)
            if module in s.modules
        ]
        a, b = stack_factors(parts)
        if method == "svd":
            compressed = compress_svd(a, b, rank)
            a, b = compressed.a, compressed.b
            errors[module.removeprefix(PEFT_PREFIX)] = compressed.error
            delta_sq, dropped_sq = delta_sq + compressed.delta_sq, dropped_sq + compressed.dropped_sq
        tensors[parts[0][0].a_key] = a.to(dtype).contiguous()
        tensors[parts[0][0].b_key] = b.to(dtype).contiguous()
        ranks[module] = a.shape[0]
    overall = math.sqrt(dropped_sq / delta_sq) if delta_sq > 0 else 0.0
    return tensors, ranks, errors, overall


def build_record(sources: list[FusableAdapter], settings: FuseSettings, weights: list[float], rank: int,
                 errors: dict, overall: float, template: dict | None) -> TrainingRecord:
    revisions = {s.record.base_revision or s.config.get("revision") for s in sources} - {None}
    revision = next(iter(revisions)) if len(revisions) == 1 else None
    base = (base_model_of(sources[0].config, sources[0].record)[0], revision)
    entries = [{"path": str(s.path), "name": s.record.name or s.path.name, "sha256": sha256_file(s.weights_file)}
               for s in sources]
    name = settings.name or Path(settings.out).name
    return fused_record(name, [(s.record, e) for s, e in zip(sources, entries, strict=True)], weights,
                        settings.method, rank, errors, overall, template, base)


def _check_request(settings: FuseSettings) -> list[float]:
    """The weights, one per source; ValueError for a request that cannot be met, before anything is read."""
    adapters, method, rank = settings.adapters, settings.method, settings.rank
    if not adapters:
        raise ValueError("give at least one adapter folder to fuse")
    if method not in METHODS:
        raise ValueError(f"--method {method!r}: allowed values are {', '.join(METHODS)}")
    if method == "svd" and (rank is None or rank < 1):
        raise ValueError("--method svd needs --rank R with R >= 1 (the rank of the compressed adapter)")
    if method == "cat" and rank is not None:
        raise ValueError("--rank applies to --method svd only; `cat` keeps the sum of the sources' ranks")
    weights = [1.0] * len(adapters) if settings.weights is None else [float(w) for w in settings.weights]
    if len(weights) != len(adapters) or not all(math.isfinite(w) for w in weights):
        raise ValueError(f"--weights: give one finite number per adapter ({len(adapters)}), got {weights}")
    inputs = [*adapters, *([settings.template] if settings.template else [])]
    check_output(settings.out, replace=settings.replace, marker=RECORD_NAME, what="adapter folder", inputs=inputs)
    return weights


def fuse_adapters(settings: FuseSettings) -> FuseResult:
    """Fuse `settings.adapters` into one new adapter folder `settings.out`, written atomically."""
    weights = _check_request(settings)
    sources = [open_fusable(Path(d), settings.allow_pickle) for d in settings.adapters]
    check_sources_agree(sources)
    template_info = resolve_template(sources, settings.template)
    with one_torch_thread():
        tensors, ranks, errors, overall = fuse_tensors(sources, weights, settings.method, settings.rank)
    config = fused_adapter_config([(s.config, set(s.modules)) for s in sources], ranks)
    record = build_record(sources, settings, weights, config["r"], errors, overall, template_info)
    from safetensors.torch import save_file

    out = Path(settings.out)
    with atomic_output_dir(out, replace=settings.replace, marker=RECORD_NAME, what="adapter folder") as tmp:
        save_file(tensors, str(tmp / SAFE_WEIGHTS_NAME), metadata={"format": "pt"})
        write_json_atomic(tmp / CONFIG_NAME, config)
        write_record(tmp, record)
        write_card(tmp, record)
    return FuseResult(out, errors, overall, config["r"])


def add_arguments(parser) -> None:
    parser.add_argument("adapters", nargs="+", type=Path, metavar="ADAPTER", help="adapter folders to fuse")
    parser.add_argument("--out", required=True, type=Path, help="output adapter folder (new, or see --replace)")
    parser.add_argument("--replace", action="store_true",
                        help="replace --out if it holds an adapter made by spanish_ft (never anything else)")
    parser.add_argument("--weights", nargs="+", type=float, help="one weight per adapter (default: all 1.0)")
    parser.add_argument(
        "--method", choices=METHODS, default="cat", help="cat: exact, rank = sum of ranks; svd: lossy, --rank R"
    )
    parser.add_argument("--rank", type=int, help="rank of the compressed adapter (--method svd)")
    parser.add_argument(
        "--template", type=Path, help="instruction template YAML to record when the sources' templates differ"
    )
    parser.add_argument("--name", help="adapter name for the record and card (default: the --out folder name)")
    parser.add_argument(
        "--allow-pickle", action="store_true", help="accept adapter_model.bin (pickle) weights from trusted sources"
    )


def run(args) -> int:
    settings = FuseSettings.from_args(args)
    result = fuse_adapters(settings)
    for module, error in sorted(result.module_errors.items(), key=lambda item: -item[1]):
        print(f"  {module}: relative error {error:.3e}")
    exactness = "exact" if settings.method == "cat" else f"relative Frobenius error {result.overall_error:.3e} overall"
    print(
        f"fused {len(settings.adapters)} adapters into {result.out_dir} "
        f"(method {settings.method}, r={result.rank}, {exactness})"
    )
    return 0
