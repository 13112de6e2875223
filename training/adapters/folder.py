"""An adapter folder as PEFT writes it: its config and its weights, read through one strict door.

Weights are read from safetensors; pickle files (`adapter_model.bin`) can run code when loaded
and are refused unless the caller explicitly allows them.
"""

from __future__ import annotations

import json
from pathlib import Path

CONFIG_NAME = "adapter_config.json"
SAFE_WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_WEIGHTS_NAME = "adapter_model.bin"


class UnsafeWeightsError(ValueError):
    """Pickle weights found where safetensors were expected."""


def read_adapter_config(adapter_dir: str | Path) -> dict:
    path = Path(adapter_dir) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{adapter_dir}: not a LoRA adapter folder (no {CONFIG_NAME})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: invalid JSON: {err}") from err


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
    raise FileNotFoundError(f"{adapter_dir}: no {SAFE_WEIGHTS_NAME} in this adapter folder")


def load_adapter_tensors(adapter_dir: str | Path, allow_pickle: bool = False) -> dict:
    """The adapter's tensors by name (safetensors; pickle only when allowed)."""
    path = adapter_weights_path(adapter_dir, allow_pickle)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)
