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

Side files are outputs too: a record beside a file, a marker, a plot, a lock, a temporary sibling.
Temporary siblings are made new here (`temp_sibling`), never taken over; an extra never replaces a
file; a lock or a marker that is not the bundle's (a link, or not its content) is refused, not removed.

`hold_lock` keeps two runs out of one work folder: a lock file naming pid and host; a lock left by
a process that is gone (on this host) is named and taken over.

A failure of the file system says which file, what was being done and the likely cause (disk full,
a file-size limit, permissions, a read-only disk, a symbolic link loop): `explain_os_error` makes
that message from an OSError, from Path.resolve's RuntimeError('Symlink loop ...') and from the
write errors libraries wrap without a file name (safetensors' 'os error N', numpy's and torch's
short writes); `writing(path, what)` turns such a failure into an OutputError; `user_message` is
what the command line prints for any error, or None for a bug of ours.
"""

from __future__ import annotations

import ast
import contextlib
import errno
import hashlib
import json
import os
import re
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
GIB = 1024**3  # bytes in a gibibyte: every memory or disk size the bundle shows is in GiB


class OutputError(ValueError):
    """An output the bundle may not write; the message names the path and the fix."""


class WriteError(OutputError):
    """A file system failure while writing an output: names the output, the file written and the likely cause."""

    def __init__(self, failure: BaseException, what: str, output: Path, file: Path | None = None):
        self.failure, self.file = failure, file or output
        super().__init__(explain_os_error(failure, f"write the {what}", output, self.file))


# errno -> the likely cause and its fix
OS_ERROR_CAUSES = {
    errno.ENOSPC: "the disk is full: free some space, or choose a folder on another disk",
    errno.EDQUOT: "this user's disk quota is used up: free some space, or choose a folder on another disk",
    errno.EFBIG: "the file grew past a file-size limit (ulimit -f, or the largest file the file system holds): raise "
                 "the limit, or write to another file system",
    errno.EACCES: "permission denied: choose a place this user may use, or change its permissions",
    errno.EPERM: "the operation is not permitted there (a protected or immutable file): choose another place",
    errno.EROFS: "the file system is read-only: choose a place on a writable disk",
    errno.ELOOP: "a symbolic link on the path loops back on itself: fix or remove the link, or choose another path",
    errno.ENOENT: "it does not exist (or a folder on its path went away): check the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EISDIR: "it is a folder where a file was expected: choose another name",
    errno.EEXIST: "something of that name is in the way: move it, or choose another name",
    errno.ENOTEMPTY: "the folder is not empty: move its files, or choose another name",
    errno.ENAMETOOLONG: "a name on the path is too long for the file system: choose a shorter one",
    errno.EIO: "the disk reported an input/output error: check the disk (dmesg), or use another one",
    errno.EMFILE: "too many files are open: close other programs, or raise the limit (ulimit -n)",
    errno.ENFILE: "too many files are open on this system: close other programs and try again",
    errno.EBUSY: "it is in use by another program: close that program and try again",
    errno.ETXTBSY: "it is in use by another program: close that program and try again",
}
# failures of writing as such: they concern the output whichever file they name
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}
SHORT_WRITE = -1  # a write cut short with no errno (numpy's "N requested and M written", torch's stream writer)
LOW_DISK_BYTES = 64 << 20


def user_message(err: BaseException) -> str | None:
    """What the command line prints for `err`: our refusal, or a file system failure explained; None for a bug."""
    if isinstance(err, ValueError):
        return str(err)
    if isinstance(err, ModuleNotFoundError):
        return (f"the Python package {err.name} is missing from {sys.executable}: install the bundle's requirements "
                "(README, \"Install\"), e.g. pip install -e \".[training]\"")
    failure = _failure(err)
    if failure is None:
        return str(err) if isinstance(err, OSError) else None  # an OSError of ours carries its own message
    code, named = failure
    return explain_os_error(err, "write" if code in WRITE_ERRNOS or code == SHORT_WRITE else "use", named)


def explain_os_error(err: BaseException, operation: str, path: str | Path | None = None,
                     file: str | Path | None = None) -> str | None:
    """'cannot OPERATION PATH (FILE): CAUSE (ERRNO)' for a file system failure, or None when `err` is not one.

    PATH is `path`, else the file the error names; FILE, the file the error names (else `file`, the one
    being written), is added when it differs.
    """
    failure = _failure(err)
    if failure is None:
        return None
    code, named = failure
    named = named if named is not None else file
    shown = path if path is not None else named
    where = f" ({named})" if named is not None and shown is not None and Path(named) != Path(shown) else ""
    if code == errno.ELOOP and (link := _looping_link(Path(named or shown or "."))) is not None:
        cause = (f"the symbolic link {link} loops back on itself (through {os.readlink(link)}): fix or remove the "
                 "link, or choose another path")
    elif code in (SHORT_WRITE, errno.EFBIG):
        cause = _short_write_cause(Path(shown or "."), code)
    else:
        cause = OS_ERROR_CAUSES.get(code) or getattr(err, "strerror", None) or str(err)
    name = f" ({errno.errorcode[code]})" if code in errno.errorcode else ""
    return f"cannot {operation} {shown if shown is not None else 'a file (the system did not say which)'}{where}: " \
           f"{cause}{name}"


def _failure(err: BaseException) -> tuple[int, str | None] | None:
    """(errno or SHORT_WRITE, the file named or None) of a file system failure; None for any other error."""
    if isinstance(err, OSError) and err.errno is not None and (err.filename or err.errno in OS_ERROR_CAUSES):
        named = err.filename if err.filename is None else os.fsdecode(err.filename)  # bytes from some libraries
        return err.errno, named  # (a network error, say, names no file and is none of these causes)
    text = str(err)
    if isinstance(err, OSError) and re.search(r"\d+ requested and \d+ written", text):
        return SHORT_WRITE, None
    if isinstance(err, RuntimeError) and (loop := re.fullmatch(r"Symlink loop from (.*)", text, re.DOTALL)):
        return errno.ELOOP, _literal(loop.group(1))
    if isinstance(err, RuntimeError) and re.search(r"file write failed|unexpected pos \d+ vs \d+", text):
        return SHORT_WRITE, None  # torch.save's stream writer
    if type(err).__name__ == "SafetensorError" and (code := re.search(r"os error (\d+)", text)):
        return int(code.group(1)), None
    return None


def _literal(text: str) -> str | None:
    """The path in Path.resolve's message, which shows it with repr()."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return value if isinstance(value, str) else None


def _looping_link(path: Path) -> Path | None:
    """The first symbolic link on `path` (from the root down) that loops."""
    for candidate in [*reversed(Path(os.path.abspath(path)).parents), Path(os.path.abspath(path))]:
        if candidate.is_symlink():
            try:
                candidate.resolve(strict=True)
            except RuntimeError:
                return candidate
            except OSError as err:
                if err.errno == errno.ELOOP:
                    return candidate
    return None


def _short_write_cause(path: Path, code: int) -> str:
    """Why a write was cut short (EFBIG, or no errno at all): this process's file-size limit, else a full disk."""
    limit = _file_size_limit()
    if limit is not None:
        return (f"the file grew past this process's file-size limit of {limit} bytes (ulimit -f): raise the limit, "
                "or write to another file system")
    if code == errno.EFBIG:
        return OS_ERROR_CAUSES[errno.EFBIG]
    folder = Path(os.path.abspath(path)).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if shutil.disk_usage(folder).free < LOW_DISK_BYTES:
        return f"only part of the data was written: {OS_ERROR_CAUSES[errno.ENOSPC]}"
    return ("only part of the data was written: the disk is full or a file-size limit was reached: free some space "
            "or raise the limit (ulimit -f)")


def _file_size_limit() -> int | None:
    """The largest file this process may write (ulimit -f), or None when there is no limit."""
    try:
        import resource  # POSIX only
    except ImportError:
        return None
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if limit == resource.RLIM_INFINITY else limit


@contextlib.contextmanager
def writing(path: str | Path, what: str) -> Iterator[None]:
    """Turn a file system failure while writing `what` `path` into an OutputError naming it and the likely cause.

    A failure that names another file (an input read meanwhile) is left as it is, unless it is a failure of
    writing as such (disk full, a size limit, a read-only disk).
    """
    try:
        yield
    except WriteError as err:  # a file inside `path` (a record in a folder): name `path` as well
        raise WriteError(err.failure, what, Path(path), err.file) from err.failure
    except OutputError:
        raise
    except Exception as err:
        failure = _failure(err)
        if failure is None or not _concerns(failure, Path(path)):
            raise
        raise WriteError(err, what, Path(path)) from err


def _concerns(failure: tuple[int, str | None], path: Path) -> bool:
    code, named = failure
    if named is None or code in WRITE_ERRNOS:
        return True
    target, named = os.path.abspath(path), os.path.abspath(named)
    temporary = os.path.join(os.path.dirname(target), "." + os.path.basename(target))
    return named == target or named.startswith(target + os.sep) or named.startswith(temporary)


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
    return (folder.is_dir() and not folder.is_symlink() and (folder / marker).is_file()
            and not (folder / marker).is_symlink())


def check_output(path: str | Path, *, replace: bool = False, marker: str = OUTPUT_MARKER,
                 what: str = "output folder", inputs: Iterable[str | Path] = ()) -> Path:
    """Refuse an output path unless writing it loses nothing of the user's (see the module docstring)."""
    path = Path(path)
    try:
        _check_output(path, replace, marker, what, inputs)
    except (OSError, RuntimeError) as err:  # a link loop, a folder this user may not enter
        message = explain_os_error(err, f"check the {what}", path)
        if message is None:
            raise
        raise OutputError(message) from err
    return path


def _check_output(path: Path, replace: bool, marker: str, what: str, inputs: Iterable[str | Path]) -> None:
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
    check_place(path)


def _check_apart(path: Path, inputs: Iterable[str | Path]) -> None:
    """Refuse an output that is an input, lies inside one, or holds one (replacing it would delete it)."""
    absolute = Path(os.path.abspath(path))
    out = absolute.parent.resolve() / absolute.name
    for given in inputs:
        try:
            source = Path(given).resolve()
        except RuntimeError as err:  # a link loop in an input: name the input, not the output
            raise OutputError(explain_os_error(err, "read the input", given)) from err
        if out.is_relative_to(source) or source.is_relative_to(out):
            raise OutputError(f"{path} overlaps the input {given} (the same folder, inside it, or around it); "
                              "writing there could change or delete it: choose an output outside the inputs")


def check_place(path: Path) -> None:
    """The folder that will receive `path` (its nearest existing ancestor) must be a folder we can write.

    check_output's last check; alone, for an output file whose own rule is elsewhere (a GGUF file).
    """
    try:
        Path(os.path.abspath(path)).parent.resolve()
    except RuntimeError as err:  # a link loop on the way
        raise OutputError(explain_os_error(err, "write", path)) from err
    ancestor = Path(os.path.abspath(path)).parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        if ancestor.is_symlink():
            raise OutputError(f"cannot create {path}: {ancestor} is a symbolic link to {os.readlink(ancestor)}, which "
                              "does not exist; spanish_ft does not write through links: choose another output path")
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"cannot create {path}: {ancestor} is a file, not a folder; choose another output path")
    if hasattr(os, "statvfs") and os.statvfs(ancestor).f_flag & os.ST_RDONLY:
        raise OutputError(f"cannot write {path}: {ancestor} is read-only: its file system is mounted read-only "
                          f"(EROFS), so chmod u+w {ancestor} would not help; choose an output folder on a writable "
                          "disk, or remount that one writable")
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
        with writing(path, what):
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
    with writing(final, what):
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        with writing(final, what):
            if marker == OUTPUT_MARKER:
                mark_as_ours(tmp, what)
            yield tmp
            if not (tmp / marker).is_file():
                raise RuntimeError(f"{final}: written without {marker}, so no later run could recognise it as ours")
            use_default_permissions(tmp)
            check_output(final, replace=replace, marker=marker, what=what)  # another run may have written it
            _rename_over(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _rename_over(tmp: Path, final: Path) -> None:
    """`tmp` becomes `final`; an old `final` (ours, checked) goes aside first, into a folder made here, then away."""
    if not final.exists():
        os.replace(tmp, final)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
    os.replace(final, aside)  # onto the empty folder just made: never a name someone else may hold
    os.replace(tmp, final)
    shutil.rmtree(aside, ignore_errors=True)


def temp_sibling(path: str | Path, suffix: str = "") -> Path:
    """A new empty file beside `path` for an atomic write, made here: never a file of that name someone else holds."""
    path = Path(path)
    with writing(path, "file"):
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=suffix, dir=path.parent)
    os.close(handle)
    os.chmod(name, 0o666 & ~current_umask())  # mkstemp's is private (0600): an output gets the usual mode
    return Path(name)


def write_extra(path: Path, draw: Callable[[Path], None], what: str) -> bool:
    """Best effort, after the essentials: `draw(tmp)` then rename to `path`; on any error a warning and False.

    An extra never replaces a file: `path` must not exist yet (it goes into a folder just made).
    """
    tmp = None
    try:
        if os.path.lexists(path):
            raise OutputError(f"{path} exists already; it was left as it is")
        tmp = temp_sibling(path, path.suffix)
        with writing(path, what.removeprefix("the ")):
            draw(tmp)
            os.replace(tmp, path)
        return True
    except Exception as err:  # an extra must never cost the finished artefact
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        print(f"warning: {what} was not written ({type(err).__name__}: {err}); {path.parent} is complete without it",
              file=sys.stderr)
        return False


@contextlib.contextmanager
def hold_lock(folder: str | Path) -> Iterator[Path]:
    """Hold `folder`/spanish_ft.lock (pid, host, start, command) while the block runs."""
    lock = Path(folder) / LOCK_NAME
    with writing(lock, "lock file"):
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
        if holder is None and os.path.lexists(lock):
            raise OutputError(f"{lock} exists and is not a lock spanish_ft made (a link, or not the JSON with the pid "
                              "and host it writes); it was left as it is: move it away, or choose another folder")
        if holder is not None and holder.get("host") != host:
            raise OutputError(f"{lock.parent} is locked by pid {holder.get('pid')} on another machine, "
                              f"{holder.get('host')} (since {holder.get('started')}); spanish_ft cannot tell whether "
                              f"that run still goes on: if it does not, delete {lock}")
        if holder is not None and pid_alive(holder.get("pid")):
            raise OutputError(f"{lock.parent} is in use by another run: pid {holder['pid']} on {host}, since "
                              f"{holder.get('started')} ({holder.get('command')}); wait for it to end or stop it "
                              f"(kill -INT {holder['pid']} saves a checkpoint first). Nothing was written")
        if holder is not None:
            print(f"warning: {lock}: taking over a stale lock (pid {holder.get('pid')}, since "
                  f"{holder.get('started')}): that process is no longer running", file=sys.stderr)
            lock.unlink(missing_ok=True)
    raise OutputError(f"{lock}: another run took this lock at the same moment; try again")


def _create_with(path: Path, text: str) -> bool:
    """Create `path` holding `text` in one step (hard link of a finished file); False if it exists."""
    tmp = temp_sibling(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def read_lock(lock: Path) -> dict | None:
    """The lock's content if it is a lock spanish_ft made (a file, not a link, naming pid and host), else None."""
    if lock.is_symlink():
        return None
    try:
        data = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    ours = isinstance(data, dict) and isinstance(data.get("pid"), int) and isinstance(data.get("host"), str)
    return data if ours else None


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
    umask = current_umask()
    for root, _dirs, files in os.walk(folder):
        Path(root).chmod(0o777 & ~umask)
        for name in files:
            path = Path(root) / name
            path.chmod((0o777 if path.stat().st_mode & 0o100 else 0o666) & ~umask)


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write text to a temporary sibling file and rename it into place (the temporary is removed on failure)."""
    path = Path(path)
    tmp = temp_sibling(path)
    try:
        with writing(path, "file"):
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, data) -> None:
    """Write JSON to a temporary sibling file and rename it into place."""
    write_text_atomic(path, json_text(data))


def json_text(data) -> str:
    """JSON as the bundle writes its records: indented, UTF-8 as it is, a final newline."""
    return json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
