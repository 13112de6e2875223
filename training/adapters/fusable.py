"""Which adapter_config.json files can be fused exactly, and the config of the fused adapter.

A LoRA adapter fuses exactly when its forward pass is the plain `x + scale * B A x` on an
unmodified base weight. Every LoraConfig option (PEFT 0.18 to 0.21) that changes that is refused
with the folder, the field and why; options this module does not know must be unset, so a new
PEFT feature is refused rather than silently dropped. The fused config is written field by
field (never copied from the first source, as PEFT's `add_weighted_adapter` does): scaling 1
everywhere (lora_alpha = r, rslora off), per-module ranks in `rank_pattern`/`alpha_pattern`
keyed by the escaped full module name (PEFT matches those keys as regexes against the module
name relative to the base model, in 0.18 and 0.21 alike). `open_fusable` opens an adapter through the
door (training/adapters/folder.py) and accepts it only if it fuses exactly: `training/adapters/fuse.py`
fuses such adapters, `training/model/stacking.py` trains on top of one.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from training.adapters.factors import PEFT_PREFIX, split_lora_tensors
from training.adapters.folder import load_adapter_tensors, open_adapter
from training.adapters.record import TrainingRecord, read_record

# Options with no effect on the forward pass of a plain LoRA adapter, or handled by the fuser.
NEUTRAL = {
    "peft_type",
    "task_type",
    "auto_mapping",
    "peft_version",
    "base_model_name_or_path",
    "revision",
    "inference_mode",
    "r",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "exclude_modules",
    "layers_to_transform",
    "layers_pattern",
    "rank_pattern",
    "alpha_pattern",
    "use_rslora",
    "fan_in_fan_out",
    "bias",
    "init_lora_weights",
    "runtime_config",
    "ensure_weight_tying",
    # read only together with an option refused here or at the door (use_qalora, megatron_config, the inits)
    "qalora_group_size",
    "megatron_core",
    "loftq_config",
    "eva_config",
    "corda_config",
}
# init_lora_weights values after which the forward is plain LoRA on the untouched base weight
# (EVA only chooses A). PiSSA/OLoRA/CorDA/LoftQ rewrite the base weights, MiCA is a variant.
PLAIN_INITS = (True, False, "gaussian", "orthogonal", "eva")
WHY = {
    "use_dora": "DoRA rescales every output by a learned magnitude, so deltas do not add",
    "modules_to_save": "fully trained module copies cannot be summed with another adapter",
    "trainable_token_indices": "trained token embeddings are not a low-rank delta",
    "lora_bias": "a bias on lora_B is not part of B @ A",
    "layer_replication": "the adapter changes the model's layer layout",
    "use_qalora": "QA-LoRA pools the input before A",
    "alora_invocation_tokens": "activated LoRA applies its delta only after the invocation tokens",
    "target_parameters": "LoRA on raw parameters is saved and applied differently",
    "arrow_config": "Arrow routes between several adapters per token",
}
SELECTORS = ("target_modules", "exclude_modules", "layers_to_transform", "layers_pattern")


def _is_set(value) -> bool:
    return value not in (None, False, "") and value != {} and value != []


def check_fusable_config(config: dict, where: Path) -> None:
    """Raise naming every option of `where`/adapter_config.json that prevents an exact fusion.

    `config` passed the door (training/adapters/folder.py): a LoRA config of known fields and types.
    """
    problems = []
    if config.get("bias", "none") != "none":
        problems.append(f"bias={config['bias']!r}: trained biases are not part of B @ A (allowed: 'none')")
    init = config.get("init_lora_weights", True)
    if init not in PLAIN_INITS:
        problems.append(
            f"init_lora_weights={init!r}: this init rewrites the base weights or changes the forward; allowed: "
            f"{', '.join(map(repr, PLAIN_INITS))} (convert PiSSA/OLoRA/CorDA adapters to plain LoRA first with PEFT's "
            "save_pretrained(path_initial_model_for_weight_conversion=...))"
        )
    for key, value in config.items():
        if key not in NEUTRAL and _is_set(value):
            reason = WHY.get(key, "this option changes how the adapter acts, so the fusion cannot be proven exact")
            problems.append(f"{key}={value!r}: {reason}")
    if problems:
        raise ValueError(f"{where}: cannot be fused exactly (adapter_config.json): " + "; ".join(problems))


def check_same(entries: list[tuple[Path, object, str]], what: str) -> None:
    """Refuse when the known values of one property differ; entries are (folder, value, field)."""
    known = [(path, value, field) for path, value, field in entries if value is not None]
    if len({json.dumps(value, sort_keys=True) for _, value, _ in known}) > 1:
        listing = "; ".join(f"{path}: {value!r} ({field})" for path, value, field in known)
        raise ValueError(f"the adapters differ in {what}, so they cannot be fused into one: {listing}")


def _normal(value):
    return sorted(value) if isinstance(value, (list, set, tuple)) else value


def _module_selection(sources: list[tuple[dict, set]], modules: set) -> dict:
    """The sources' own target rules when they agree, else every fused module by its full name."""
    rules = {json.dumps([_normal(config.get(key)) for key in SELECTORS]) for config, _ in sources}
    if len(rules) == 1 and all(names == modules for _, names in sources):
        return {key: sources[0][0].get(key) for key in SELECTORS}
    # Full names match exactly in PEFT (`key in target_modules`), so no other module gets an empty LoRA.
    return {
        "target_modules": sorted(m.removeprefix(PEFT_PREFIX) for m in modules),
        "exclude_modules": None,
        "layers_to_transform": None,
        "layers_pattern": None,
    }


def _shared_config_value(configs: list[dict], key: str, default=None):
    values = {json.dumps(c.get(key)) for c in configs if c.get(key) is not None}
    return json.loads(values.pop()) if len(values) == 1 else default


def fused_adapter_config(sources: list[tuple[dict, set]], ranks: dict[str, int]) -> dict:
    """adapter_config.json of the fused adapter; sources are (config, module keys), ranks per module key."""
    counts = Counter(ranks.values())
    rank = max(counts, key=lambda r: (counts[r], r))
    pattern = {re.escape(m.removeprefix(PEFT_PREFIX)): r for m, r in ranks.items() if r != rank}
    configs = [config for config, _ in sources]
    return {
        "peft_type": "LORA",
        "task_type": _shared_config_value(configs, "task_type"),
        "base_model_name_or_path": _shared_config_value(configs, "base_model_name_or_path"),
        "revision": _shared_config_value(configs, "revision"),
        "r": rank,
        "lora_alpha": rank,  # scaling 1: the sources' scales and weights are folded into A and B
        "rank_pattern": pattern,
        "alpha_pattern": dict(pattern),
        "use_rslora": False,
        **_module_selection(sources, set(ranks)),
        "lora_dropout": _shared_config_value(configs, "lora_dropout", 0.0),  # training only
        "fan_in_fan_out": configs[0].get("fan_in_fan_out", False),
        "bias": "none",
        "init_lora_weights": True,
        "modules_to_save": None,
        "use_dora": False,
        "inference_mode": True,
    }


@dataclass(frozen=True)
class FusableAdapter:
    """An adapter that passed the door and fuses exactly, with its LoRA factors loaded."""

    path: Path
    config: dict
    record: TrainingRecord  # empty for adapters made by other tools
    modules: dict  # module key -> LoraFactors
    weights_file: Path


def open_fusable(path: Path, allow_pickle: bool) -> FusableAdapter:
    """The adapter in `path`, through the door (training/adapters/folder.py), if it fuses exactly."""
    adapter = open_adapter(path, allow_pickle)
    check_fusable_config(adapter.config, path)
    modules = split_lora_tensors(load_adapter_tensors(adapter), str(adapter.weights_file))
    return FusableAdapter(path, adapter.config, read_record(path) or TrainingRecord(), modules, adapter.weights_file)
