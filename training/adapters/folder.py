"""An adapter folder as PEFT writes it, read through one strict door: `open_adapter`.

Every command that reads an adapter (fuse, merge, evaluate, a recipe's lora.stack_on, the webui
extension) opens it here first, so an adapter from a stranger is checked before PEFT, safetensors
or torch see it:
- adapter_config.json: a JSON object of known LoRA fields with values of the right type, and no
  field that makes PEFT import a package (training/adapters/adapter_config.py);
- adapter_model.safetensors: its header read and checked against the file's size (every
  tensor's dtype, shape and byte range; safetensors_header.py), so a truncated or forged file is
  named, not a traceback;
- adapter_model.bin (pickle, which can run code when loaded): refused unless allowed, and then
  read only by torch's weights-only unpickler, which must find nothing but tensors.
PEFT is then given the accepted config (`load_peft_adapter`), never the file, and every tensor of
the file must land in the model (`check_tensors_land`): PEFT loads with strict=False and drops a
tensor whose module the base model lacks, or target_modules leaves out, without a word; so would a
frozen stacked adapter. `base_model_of` says which base model an adapter belongs to; `resolve_adapter`
turns an adapter's name (the extension's LoRA menu) into a folder strictly inside the adapters folder.

    adapter = open_adapter(Path("loras/gemma3-270m-leyes-ec"))
    adapter.config["r"], adapter.weights_file
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from training.adapters.adapter_config import config_problems, peft_config
from training.adapters.record import RECORD_NAME, TrainingRecord
from training.adapters.safetensors_header import CorruptFileError, check_safetensors
from training.safeyaml import shorten

CONFIG_NAME = "adapter_config.json"
SAFE_WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_WEIGHTS_NAME = "adapter_model.bin"
CONFIG_MAX_BYTES = 16 << 20  # PEFT writes a few KB; a rank_pattern for every module of a 70B model, ~1 MB
# What PEFT adds to a layer it adapts (LoRA, PEFT 0.18-0.21): the saved tensors are `<module>.<part>...`.
PEFT_LAYER_PARTS = ("lora_", "trainable_tokens_")
SHOWN_MODULES = 6  # modules named in a refusal; the rest are counted


class AdapterError(ValueError):
    """An adapter folder refused at the door; the message names the file and what is wrong."""


class UnsafeWeightsError(AdapterError):
    """Pickle weights found where safetensors were expected."""


class AdapterNameError(AdapterError):
    """An adapter name that does not stay inside the adapters folder.

    `reason`: "empty", "path" (absolute, or more than one folder name), "parent" (`..`), "missing"
    or "outside" (a link leading out of the adapters folder).
    """

    def __init__(self, message: str, name: str, reason: str):
        super().__init__(message)
        self.name, self.reason = name, reason


@dataclass(frozen=True)
class AdapterFolder:
    """An adapter folder that passed the door."""

    path: Path
    config: dict  # adapter_config.json, accepted
    weights_file: Path  # adapter_model.safetensors (header checked), or allowed pickle
    tensors: tuple[str, ...]  # the names of the tensors in weights_file


def open_adapter(adapter_dir: str | Path, allow_pickle: bool = False) -> AdapterFolder:
    """The adapter in `adapter_dir`, checked; raises AdapterError naming the file and the problem."""
    adapter_dir = Path(adapter_dir)
    config = read_adapter_config(adapter_dir)
    weights_file = adapter_weights_path(adapter_dir, allow_pickle)
    if weights_file.name == SAFE_WEIGHTS_NAME:
        try:
            tensors = check_safetensors(weights_file)
        except CorruptFileError as err:
            raise AdapterError(str(err)) from None
    else:
        tensors = check_pickle(weights_file)
    return AdapterFolder(adapter_dir, config, weights_file, tuple(tensors))


def read_adapter_config(adapter_dir: str | Path) -> dict:
    """adapter_config.json of `adapter_dir`, accepted (adapter_config.py says what is)."""
    path = Path(adapter_dir) / CONFIG_NAME
    if not Path(adapter_dir).is_dir():
        raise AdapterError(f"{adapter_dir}: no such adapter folder")
    if not path.is_file():
        raise AdapterError(f"{adapter_dir}: not a LoRA adapter folder (no {CONFIG_NAME})")
    if path.stat().st_size > CONFIG_MAX_BYTES:
        raise AdapterError(f"{CONFIG_NAME} in {adapter_dir}: {path.stat().st_size} bytes, too large for a LoRA config")
    try:
        config = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise AdapterError(f"{CONFIG_NAME} in {adapter_dir}: not valid JSON ({err})") from None
    problems = config_problems(config)
    if problems:
        raise AdapterError(f"{CONFIG_NAME} in {adapter_dir}: " + "; ".join(problems))
    return config


def base_model_of(config: dict, record: TrainingRecord | None) -> tuple[str | None, str]:
    """(the base model an adapter was trained on, where that was read): its training record's base model,
    else adapter_config.json's base_model_name_or_path (an adapter made by another tool); None if neither says."""
    if record is not None and record.base_model:
        return record.base_model, f"{RECORD_NAME} base_model.name_or_path"
    return config.get("base_model_name_or_path"), f"{CONFIG_NAME} base_model_name_or_path"


def adapter_weights_path(adapter_dir: str | Path, allow_pickle: bool = False) -> Path:
    """The adapter's weights file: safetensors, or pickle only when explicitly allowed."""
    adapter_dir = Path(adapter_dir)
    safe = adapter_dir / SAFE_WEIGHTS_NAME
    if safe.is_file():
        return safe
    pickle = adapter_dir / PICKLE_WEIGHTS_NAME
    if pickle.is_file():
        if not allow_pickle:
            raise UnsafeWeightsError(
                f"{pickle}: pickle weights can run arbitrary code when loaded and are refused; "
                f"convert the adapter to {SAFE_WEIGHTS_NAME}, or pass --allow-pickle if you trust its source"
            )
        return pickle
    raise AdapterError(f"{adapter_dir}: no {SAFE_WEIGHTS_NAME} in this adapter folder")


def check_pickle(path: Path) -> list[str]:
    """The tensor names of an allowed pickle, which must hold only tensors by name: read by torch's weights-only
    unpickler, which runs no code."""
    import torch

    try:
        tensors = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the unpickler's refusals and a corrupt file's errors come in many types
        raise AdapterError(f"{path.name} in {path.parent}: not a file of plain tensors, refused "
                           f"({type(err).__name__}: {shorten(str(err))})") from None
    if not isinstance(tensors, dict) or not tensors or not all(isinstance(t, torch.Tensor) for t in tensors.values()):
        raise AdapterError(f"{path.name} in {path.parent}: holds {type(tensors).__name__}, not tensors by name")
    if not all(isinstance(name, str) for name in tensors):
        raise AdapterError(f"{path.name} in {path.parent}: holds tensors keyed by other things than names")
    return list(tensors)


def load_adapter_tensors(adapter: AdapterFolder) -> dict:
    """The tensors of an adapter that passed the door, by name (safetensors; pickle only if it was allowed)."""
    if adapter.weights_file.name == SAFE_WEIGHTS_NAME:
        from safetensors.torch import load_file

        return load_file(str(adapter.weights_file))
    import torch

    return torch.load(adapter.weights_file, map_location="cpu", weights_only=True)


def load_peft_adapter(model, adapter: AdapterFolder, name: str = "default"):
    """`model` with `adapter` loaded by PEFT under `name`, from the accepted config (PEFT never reads the file).

    `model` is a base model (returns a new PeftModel) or a PeftModel (the adapter is added to it, inactive).
    """
    from peft import PeftModel

    config = peft_config(adapter.config, f"{CONFIG_NAME} in {adapter.path}")
    if not isinstance(model, PeftModel):
        model = PeftModel.from_pretrained(model, str(adapter.path), adapter_name=name, config=config)
    else:
        config.inference_mode = True
        model.add_adapter(name, config)
        model.load_adapter(str(adapter.path), adapter_name=name)
    check_tensors_land(f"{adapter.weights_file.name} in {adapter.path}", adapter.tensors, model,
                       landed_tensors(model, name))
    return model


def landed_tensors(model, name: str) -> set[str]:
    """What a PEFT model holds for adapter `name`, named as PEFT saves it (as the tensors in its file).

    Read from the state dict by path component: PEFT 0.18's get_peft_model_state_dict picks keys by
    substring, so for an adapter named "b" it returns every adapter's tensors ("base_model..." holds a b).
    """
    landed = set()
    for key in model.state_dict():
        parts = key.split(".")
        for index in range(1, len(parts)):
            if parts[index] == name and parts[index - 1].startswith(("lora_", "modules_to_save")):
                kept = parts[:index - 1] if parts[index - 1] == "modules_to_save" else parts[:index]
                landed.add(".".join([*kept, *parts[index + 1:]]))
                break
    return landed


def check_tensors_land(where: str, tensors: Iterable[str], model, landed: Collection[str] | None = None) -> None:
    """Refuse an adapter whose tensors do not all land in `model`, naming the modules: those the base model
    lacks, and those it has but target_modules leaves out; and the modules target_modules adapts for which
    the file has no tensors. `landed`: the tensor names a PEFT model holds for the adapter once loaded; None,
    before loading (a frozen stacked adapter): a tensor lands when the model has its module.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    modules = {name for name, _ in base.named_modules()}
    tensors = set(tensors)
    landed = {t for t in tensors if adapted_module(t) in modules} if landed is None else set(landed)
    lost = {adapted_module(t) for t in tensors - landed}
    problems = [f"{what}: {shown_modules(found)}" for what, found in (
        ("tensors for modules this base model does not have (trained on another base model?)",
         {m for m in lost if m not in modules}),
        ("tensors for modules its target_modules leave out (adapter_config.json does not match the weights)",
         {m for m in lost if m in modules}),
        ("no tensors for modules its target_modules adapt (adapter_config.json does not match the weights)",
         {adapted_module(t) for t in landed - tensors})) if found]
    if problems:
        raise AdapterError(f"{where}: does not fit the model it is loaded into (PEFT would load part of it "
                           "without a word): " + "; ".join(problems)
                           + ". Load it on the base model it was trained on, with its own adapter_config.json")


def adapted_module(tensor: str) -> str:
    """The base-model module an adapter tensor belongs to: `base_model.model.<module>.lora_A.weight` -> `<module>`;
    a whole module saved with the adapter (modules_to_save): `<module>.weight` -> `<module>`."""
    from training.adapters.factors import PEFT_PREFIX

    parts = tensor.removeprefix(PEFT_PREFIX).split(".")
    for index, part in enumerate(parts):
        if part.startswith(PEFT_LAYER_PARTS):
            return ".".join(parts[:index])
    return ".".join(parts[:-1])


def shown_modules(modules: set[str]) -> str:
    shown = ", ".join(repr(module) for module in sorted(modules)[:SHOWN_MODULES])
    return shown + (f" and {len(modules) - SHOWN_MODULES} more" if len(modules) > SHOWN_MODULES else "")


def resolve_adapter(lora_dir: str | Path, name: str, must_exist: bool = True) -> Path:
    """lora_dir/name, refused unless `name` is one folder name that stays inside lora_dir (links followed)."""
    lora_dir = Path(lora_dir)
    if not isinstance(name, str) or not name.strip():
        raise AdapterNameError(f"adapter name {name!r}: empty", str(name), "empty")
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive:
        raise AdapterNameError(f"adapter name {name!r}: an absolute path, not a name in {lora_dir}", name, "path")
    if name in (".", "..") or any(part == ".." for part in PureWindowsPath(name).parts):
        raise AdapterNameError(f"adapter name {name!r}: leads out of {lora_dir}", name, "parent")
    if len(PureWindowsPath(name).parts) != 1 or "\0" in name:
        raise AdapterNameError(f"adapter name {name!r}: a path, not one folder name in {lora_dir}", name, "path")
    path = lora_dir / name
    if must_exist and not path.is_dir():
        raise AdapterNameError(f"adapter name {name!r}: no such adapter folder in {lora_dir}", name, "missing")
    if (path.exists() or path.is_symlink()) and not path.resolve().is_relative_to(lora_dir.resolve()):
        raise AdapterNameError(f"adapter name {name!r}: {path} is a link to {path.resolve()}, outside {lora_dir}",
                               name, "outside")
    return path
