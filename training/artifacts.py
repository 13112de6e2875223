"""Adapter folders as artefacts: atomic writes, hashes, the training record, safe weight loading.

Every adapter folder the bundle writes holds, beside PEFT's `adapter_config.json` and
`adapter_model.safetensors`, a training record (`spanish_ft_record.json`: where the adapter
came from) and a model card (`README.md`). Folders are written to a temporary sibling and
renamed at the end, so an interrupted run leaves the old folder or the new one, never half.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

RECORD_NAME = "spanish_ft_record.json"
CONFIG_NAME = "adapter_config.json"
SAFE_WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_WEIGHTS_NAME = "adapter_model.bin"


class UnsafeWeightsError(ValueError):
    """Pickle weights found where safetensors were expected."""


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_output_dir(final: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces `final` in one rename.

    On any exception the temporary folder is removed and `final` is untouched.
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already exists; choose another output folder or remove it")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        use_default_permissions(tmp)
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def use_default_permissions(folder: Path) -> None:
    """Give a folder tree the umask's usual modes.

    mkdtemp makes the temporary folder private (0700) and safetensors writes its files 0600,
    but an adapter or model folder is meant to be copied into a webui that may run as another user.
    """
    umask = os.umask(0)
    os.umask(umask)
    for root, _dirs, files in os.walk(folder):
        Path(root).chmod(0o777 & ~umask)
        for name in files:
            (Path(root) / name).chmod(0o666 & ~umask)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write text to a temporary sibling file and rename it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json_atomic(path: str | Path, data) -> None:
    """Write JSON to a temporary sibling file and rename it into place."""
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def read_record(adapter_dir: str | Path) -> dict | None:
    """The training record of an adapter folder, or None for adapters made by other tools."""
    path = Path(adapter_dir) / RECORD_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: unreadable training record: {err}") from err


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


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape an adapter, for the training record."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "trl", "datasets"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out
