"""The adapter_config.json fields we accept, checked before PEFT (or the fuser) sees them.

The allow-list is every field of PEFT's LoraConfig and PeftConfig from 0.18 to 0.22 (0.22's list
holds all the others'), each with the JSON values it may hold. PEFT writes every field of its
LoraConfig, used or not, so a field a newer PEFT added is accepted while it is unset (null, false
or empty: the feature is off) and refused when set, so a file written for a feature we have not
read is never passed on. Fields that make PEFT import a
package are refused outright: `megatron_config` (PEFT then imports the module named by
`megatron_core`; 0.18 with no allow-list) and an `auto_mapping` naming a library other than
transformers (AutoPeftModel imports it). Regexes (string `target_modules`, `layers_pattern`,
pattern keys) must compile. `peft_config` turns an accepted dict into PEFT's LoraConfig, so PEFT
never reads the file itself. Used by `training/adapters/folder.py`, the door.
"""

from __future__ import annotations

import math
import re

from training.safeyaml import shown

MEGATRON_DEFAULT = "megatron.core"  # what LoraConfig writes when Megatron is not used
AUTO_MAPPING_LIBRARY = "transformers"  # the one library an auto_mapping may name


def _null(value) -> bool:
    return value is None


def _bool(value) -> bool:
    return isinstance(value, bool)


def _whole(minimum: int):
    return lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _number(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer past float's range (JSON allows any number of digits)
        return False


def _string(value) -> bool:
    return isinstance(value, str)


def _regex(value) -> bool:
    if not isinstance(value, str):
        return False
    try:
        re.compile(value)
    except (re.error, RecursionError, OverflowError):
        return False
    return True


def _object(value) -> bool:
    return isinstance(value, dict)


def _list_of(check):
    return lambda value: isinstance(value, list) and all(check(item) for item in value)


def _map_of(key_check, value_check):
    return lambda value: isinstance(value, dict) and all(key_check(k) and value_check(v) for k, v in value.items())


def _either(*checks):
    return lambda value: any(check(value) for check in checks)


def _pair(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(_whole(0)(item) for item in value)


NULL_OR_STRING = ("null or a string", _either(_null, _string))
BOOLEAN = ("true or false", _bool)
MODULES = ("null, a regex string or a list of module names", _either(_null, _regex, _list_of(_string)))
SUB_CONFIG = ("null or a JSON object", _either(_null, _object))
# field -> (what it may hold, check); the fields of LoraConfig + PeftConfig, PEFT 0.18 to 0.22
FIELDS = {
    "peft_type": ("'LORA'", lambda value: value == "LORA"),
    "task_type": ("null or 'CAUSAL_LM'", lambda value: value in (None, "CAUSAL_LM")),
    "auto_mapping": SUB_CONFIG,
    "peft_version": NULL_OR_STRING,
    "base_model_name_or_path": NULL_OR_STRING,
    "revision": NULL_OR_STRING,
    "inference_mode": BOOLEAN,
    "r": ("a whole number >= 1", _whole(1)),
    "target_modules": MODULES,
    "exclude_modules": MODULES,
    "lora_alpha": ("a finite number", _number),
    "lora_dropout": ("a number from 0 to 1", lambda value: _number(value) and 0 <= value <= 1),
    "fan_in_fan_out": BOOLEAN,
    "bias": ("'none', 'all' or 'lora_only'", lambda value: value in ("none", "all", "lora_only")),
    "use_rslora": BOOLEAN,
    "modules_to_save": ("null or a list of module names", _either(_null, _list_of(_regex))),
    "init_lora_weights": ("true, false or an init method's name", _either(_bool, _string)),
    "layers_to_transform": ("null, a layer index or a list of them", _either(_null, _whole(0), _list_of(_whole(0)))),
    "layers_pattern": ("null, a regex string or a list of them", _either(_null, _regex, _list_of(_regex))),
    "rank_pattern": ("null or {regex: whole number >= 1}", _either(_null, _map_of(_regex, _whole(1)))),
    "alpha_pattern": ("null or {regex: number}", _either(_null, _map_of(_regex, _number))),
    "megatron_config": ("null", _null),
    "megatron_core": (f"null or {MEGATRON_DEFAULT!r}", lambda value: value in (None, MEGATRON_DEFAULT)),
    "trainable_token_indices": ("null, a list of token ids or {module: list of token ids}",
                                _either(_null, _list_of(_whole(0)), _map_of(_string, _list_of(_whole(0))))),
    "loftq_config": SUB_CONFIG,
    "eva_config": SUB_CONFIG,
    "corda_config": SUB_CONFIG,
    "lora_ga_config": SUB_CONFIG,
    "use_dora": BOOLEAN,
    "velora_config": SUB_CONFIG,
    "alora_invocation_tokens": ("null or a list of token ids", _either(_null, _list_of(_whole(0)))),
    "use_qalora": BOOLEAN,
    "qalora_group_size": ("a whole number >= 1", _whole(1)),
    "monteclora_config": SUB_CONFIG,
    "layer_replication": ("null or a list of [start, end] layer pairs", _either(_null, _list_of(_pair))),
    "runtime_config": SUB_CONFIG,  # never saved by PEFT, and dropped when read (peft/config.py)
    "lora_bias": BOOLEAN,
    "target_parameters": ("null or a list of parameter names", _either(_null, _list_of(_string))),
    "use_bdlora": SUB_CONFIG,
    "arrow_config": SUB_CONFIG,
    "kasa_config": SUB_CONFIG,
    "ensure_weight_tying": BOOLEAN,
    "astra_config": SUB_CONFIG,  # 0.22
}
UNSET = (None, False, {}, [])  # how PEFT writes a field whose feature is off


def importing_fields(config: dict) -> list[str]:
    """Why PEFT would import a package named in this config ([] when it would not)."""
    problems = []
    if config.get("megatron_config") is not None:
        problems.append(
            f"megatron_config is set, so PEFT would import the package named by megatron_core "
            f"({shown(config.get('megatron_core', MEGATRON_DEFAULT))}) when loading it; Megatron adapters are not "
            "supported"
        )
    if config.get("megatron_core", None) not in (None, MEGATRON_DEFAULT):
        problems.append(
            f"megatron_core={shown(config['megatron_core'])} names a package for PEFT to import; only "
            f"{MEGATRON_DEFAULT!r} (PEFT's default) or null is accepted"
        )
    mapping = config.get("auto_mapping")
    if mapping is not None:
        library = mapping.get("parent_library") if isinstance(mapping, dict) else mapping
        if not (isinstance(library, str) and library.split(".")[0] == AUTO_MAPPING_LIBRARY):
            problems.append(
                f"auto_mapping names the library {shown(library)} for PEFT to import; only "
                f"{AUTO_MAPPING_LIBRARY!r} models are accepted"
            )
    return problems


def _unset(value) -> bool:
    return any(type(value) is type(off) and value == off for off in UNSET)


def config_problems(config) -> list[str]:
    """Every reason this adapter_config.json content is refused ([] when it is accepted)."""
    if not isinstance(config, dict):
        return [f"must be a JSON object of LoRA settings, not a JSON {type(config).__name__}"]
    if "peft_type" in config and config["peft_type"] != "LORA":
        return [f"peft_type is {shown(config['peft_type'])}; only LORA adapters are accepted"]
    if "peft_type" not in config:
        return ["peft_type is missing; a LoRA adapter saved by PEFT has peft_type 'LORA'"]
    problems = importing_fields(config)
    if problems:  # said on their own: nothing else matters
        return problems
    unknown = [key for key, value in config.items() if key not in FIELDS and not _unset(value)]
    if unknown:
        problems.append(
            f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(shown(key) for key in unknown)} set (accepted: "
            "the fields of PEFT's LoraConfig, 0.18 to 0.22, and any other field left null); remove it, or upgrade "
            "spanish_ft if a newer PEFT wrote it"
        )
    for key, value in config.items():
        if key in FIELDS and not FIELDS[key][1](value):
            problems.append(f"{key} is {shown(value)}; expected {FIELDS[key][0]}")
    return problems


def peft_config(config: dict, where: str):
    """PEFT's LoraConfig of an accepted config dict, so PEFT never reads adapter_config.json itself.

    A field the installed PEFT does not know (written by a newer one) is dropped when unset and
    refused when set; PEFT's own refusals of a combination of fields are named with `where`.
    """
    import dataclasses

    import peft
    from peft import LoraConfig

    known = {field.name for field in dataclasses.fields(LoraConfig)} - {"runtime_config"}
    newer = [key for key, value in config.items()
             if key not in known and key != "runtime_config" and not _unset(value)]
    if newer:
        raise ValueError(f"{where}: {', '.join(newer)} {'need' if len(newer) > 1 else 'needs'} a newer PEFT than the "
                         f"installed {peft.__version__}; pip install -U peft")
    try:
        return LoraConfig(**{key: value for key, value in config.items() if key in known})
    except (TypeError, ValueError, ImportError) as err:  # ImportError: an init method needing a missing package
        raise ValueError(f"{where}: PEFT {peft.__version__} refuses this LoRA config: {err}") from None
