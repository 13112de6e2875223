"""The foundation every command writes through: the bundle root, atomic writes, sha256.

A command's output is written to a temporary sibling and renamed into place at the end, so an
interrupted run leaves the old artefact or the new one, never half of one.
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

BUNDLE_ROOT = Path(__file__).resolve().parents[1]


def find_bundle_file(text: str) -> Path | None:
    """A path as given (absolute or relative to CWD) if it exists, else relative to the bundle root."""
    path = Path(text).expanduser()
    for candidate in (path,) if path.is_absolute() else (path, BUNDLE_ROOT / path):
        if candidate.exists():
            return candidate
    return None


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
