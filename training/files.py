"""The foundation every command writes through: the bundle root, sha256, and the one rule for outputs.

The rule (README "Safety"): a command never deletes, replaces or writes into anything the bundle did
not create. `check_output` is that rule, and each command calls it when it starts, before any model
or data is loaded. An output path must be new (or an empty folder), or a folder the bundle made and
the user asked to replace (`--replace`). A folder is the bundle's when it holds the caller's marker
file: `spanish_ft_record.json` for adapters and merged models (training/adapters/record.py), the
demo model's own record, or OUTPUT_MARKER for report, work and demo folders. Symbolic links, files,
overlaps with the command's inputs and unwritable places are refused with the path and the fix.

Essentials first, extras after. `atomic_output_dir` writes a folder to a temporary sibling and
renames it into place (checking the rule again at that moment), so an interrupted run leaves the
old artefact or the new one, never half of one. Extras (loss plots, charts) are drawn afterwards
through `write_extra`: a failure there is a warning, never the loss of a finished artefact.

`hold_lock` keeps two runs out of one work folder: a lock file naming pid and host; a lock left by
a process that is gone (on this host) is named and taken over.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
OUTPUT_MARKER = "spanish_ft_output.json"  # marks a report, work or demo folder as the bundle's
LOCK_NAME = "spanish_ft.lock"


class OutputError(ValueError):
    """An output the bundle may not write; the message names the path and the fix."""


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


def is_ours(folder: str | Path, marker: str = OUTPUT_MARKER) -> bool:
    """Whether a folder is one the bundle made: it holds the marker file (a record) as a regular file."""
    folder = Path(folder)
    return folder.is_dir() and not folder.is_symlink() and (folder / marker).is_file()


def check_output(path: str | Path, *, replace: bool = False, marker: str = OUTPUT_MARKER,
                 what: str = "output folder", inputs: Iterable[str | Path] = ()) -> Path:
    """Refuse an output path unless writing it loses nothing of the user's (see the module docstring)."""
    path = Path(path)
    if path.is_symlink():
        raise OutputError(f"{path} is a symbolic link (to {os.readlink(path)}); spanish_ft does not write through "
                          "links it did not make: give the real folder, or a new name")
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path} is a file; it was left as it is: choose a new name for the {what}")
    if path.is_dir() and not is_ours(path, marker) and any(path.iterdir()):
        raise OutputError(f"{path} exists and holds files spanish_ft did not make (it has no {marker}); nothing in "
                          f"it was touched: choose a new {what} (it is created) or an empty one")
    if is_ours(path, marker) and not replace:
        raise OutputError(f"{path} already exists: it is the {what} of an earlier spanish_ft run; pass --replace "
                          "to replace it (replace=True from Python), or choose a new folder")
    _check_apart(path, inputs)
    _check_writable(path)
    return path


def _check_apart(path: Path, inputs: Iterable[str | Path]) -> None:
    """Refuse an output that is an input, lies inside one, or holds one (replacing it would delete it)."""
    absolute = Path(os.path.abspath(path))
    out = absolute.parent.resolve() / absolute.name
    for given in inputs:
        source = Path(given).resolve()
        if out.is_relative_to(source) or source.is_relative_to(out):
            raise OutputError(f"{path} overlaps the input {given} (the same folder, inside it, or around it); "
                              "writing there could change or delete it: choose an output outside the inputs")


def _check_writable(path: Path) -> None:
    """The folder that will receive `path` (its nearest existing ancestor) must be a folder we can write."""
    ancestor = Path(os.path.abspath(path)).parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"cannot create {path}: {ancestor} is a file, not a folder; choose another output path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: {ancestor} is read-only for this user; choose an output folder you "
                          f"can write (under {Path.home()}, say), or make it writable (chmod u+w {ancestor})")


def mark_as_ours(folder: str | Path, what: str) -> None:
    """Write OUTPUT_MARKER into a folder the bundle made, so that a later run can recognise it."""
    stamp = {"made_by": "spanish_ft", "what": what, "created": datetime.now(UTC).isoformat(timespec="seconds")}
    write_json_atomic(Path(folder) / OUTPUT_MARKER, stamp)


def own_folder(path: str | Path, what: str) -> Path:
    """A folder a command writes INTO (a work or demo folder): made now and marked, or made by us before."""
    path = check_output(path, replace=True, what=what)
    if not is_ours(path):
        path.mkdir(parents=True, exist_ok=True)
        mark_as_ours(path, what)
    return path


@contextlib.contextmanager
def atomic_output_dir(final: str | Path, replace: bool = False, marker: str = OUTPUT_MARKER,
                      what: str = "output folder") -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it becomes `final` in one rename.

    `final` must pass `check_output` (with `replace`) now and again at the rename. The folder must
    hold `marker` by then (OUTPUT_MARKER is written here); on any exception it is removed and
    `final` is untouched.
    """
    final = check_output(final, replace=replace, marker=marker, what=what)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        if marker == OUTPUT_MARKER:
            mark_as_ours(tmp, what)
        yield tmp
        if not (tmp / marker).is_file():
            raise RuntimeError(f"{final}: written without {marker}, so no later run could recognise it as ours")
        use_default_permissions(tmp)
        check_output(final, replace=replace, marker=marker, what=what)  # another run may have written it meanwhile
        old = final.with_name(f".{final.name}.old-{os.getpid()}") if final.exists() else None
        if old is not None:
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_extra(path: Path, draw: Callable[[Path], None], what: str) -> bool:
    """Best effort, after the essentials: `draw(tmp)` then rename to `path`; on any error a warning and False."""
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        draw(tmp)
        os.replace(tmp, path)
        return True
    except Exception as err:  # an extra must never cost the finished artefact
        tmp.unlink(missing_ok=True)
        print(f"warning: {what} was not written ({type(err).__name__}: {err}); {path.parent} is complete without it",
              file=sys.stderr)
        return False


@contextlib.contextmanager
def hold_lock(folder: str | Path) -> Iterator[Path]:
    """Hold `folder`/spanish_ft.lock (pid, host, start, command) while the block runs."""
    lock = Path(folder) / LOCK_NAME
    take_lock(lock)
    try:
        yield lock
    finally:
        if (read_lock(lock) or {}).get("pid") == os.getpid():
            lock.unlink(missing_ok=True)


def take_lock(lock: Path) -> None:
    """Create the lock file atomically with its content; refuse a live holder, take over a dead one's."""
    host = socket.gethostname()
    mine = {"pid": os.getpid(), "host": host, "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv)}
    for _attempt in range(2):
        if _create_with(lock, json.dumps(mine)):
            return
        holder = read_lock(lock)
        if holder is not None and holder.get("host") != host:
            raise OutputError(f"{lock.parent} is locked by pid {holder.get('pid')} on another machine, "
                              f"{holder.get('host')} (since {holder.get('started')}); spanish_ft cannot tell whether "
                              f"that run still goes on: if it does not, delete {lock}")
        if holder is not None and pid_alive(holder.get("pid")):
            raise OutputError(f"{lock.parent} is in use by another run: pid {holder['pid']} on {host}, since "
                              f"{holder.get('started')} ({holder.get('command')}); wait for it to end or stop it "
                              f"(kill -INT {holder['pid']} saves a checkpoint first). Nothing was written")
        who = f"pid {holder.get('pid')}, since {holder.get('started')}" if holder else "unreadable"
        print(f"warning: {lock}: taking over a stale lock ({who}): that process is no longer running",
              file=sys.stderr)
        lock.unlink(missing_ok=True)
    raise OutputError(f"{lock}: another run took this lock at the same moment; try again")


def _create_with(path: Path, text: str) -> bool:
    """Create `path` holding `text` in one step (hard link of a finished file); False if it exists."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def read_lock(lock: Path) -> dict | None:
    try:
        data = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def pid_alive(pid) -> bool:
    """Whether a process with this id runs on this machine."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    return True


def use_default_permissions(folder: Path) -> None:
    """Give a folder tree the umask's usual modes.

    mkdtemp makes the temporary folder private (0700) and safetensors writes its files 0600,
    but an adapter or model folder is meant to be copied into a webui that may run as another user.
    Programs (a file its owner may execute, like llama.cpp's binaries) stay executable.
    """
    umask = os.umask(0)
    os.umask(umask)
    for root, _dirs, files in os.walk(folder):
        Path(root).chmod(0o777 & ~umask)
        for name in files:
            path = Path(root) / name
            path.chmod((0o777 if path.stat().st_mode & 0o100 else 0o666) & ~umask)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write text to a temporary sibling file and rename it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json_atomic(path: str | Path, data) -> None:
    """Write JSON to a temporary sibling file and rename it into place."""
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n")
