"""Install spanish_ft into a text-generation-webui checkout, upgrade it, or undo it.

    python install.py --webui ~/text-generation-webui            # install or upgrade
    python install.py --webui ~/text-generation-webui --dry-run  # show what would happen
    python install.py --webui ~/text-generation-webui --uninstall

Standard library only: it runs in the webui's own Python. Run `python install.py --help`
for the layout rules, the install record and the exit codes.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import os
import posixpath
import re
import socket
import stat
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PureWindowsPath

BUNDLE = Path(__file__).resolve().parent
NAME = "spanish_ft"
# The record lives inside the extension folder: it goes wherever the extension goes and
# needs no extra folder in the webui. Paths in it are POSIX and relative to the webui.
MANIFEST = f"extensions/{NAME}/.{NAME}-install.json"
# One run at a time per webui. The lock lives in the webui folder itself: the one folder that exists, checked and
# link-free, before anything is installed (the extension folder may not exist yet, or be the user's).
LOCK = f".{NAME}-install.lock"
LOCK_MAX_BYTES = 1 << 16  # a lock is a few hundred bytes; a larger file of that name is not one
TEMP_SUFFIX = f".{NAME}-tmp"
SKIP_DIRS = {"__pycache__"}
# The parts of the bundle's training/ package that the extension imports, directly or through one
# another: these modules, and the .py/.json files below these folders (memory/configs/*.json are the
# estimator's shipped model configs); and __main__.py, the one command table, which the extension runs
# as `python -m training export-gguf` in a subprocess. Nothing else of training/ goes into the webui;
# tests/test_install.py follows the extension's imports with ast to check this list.
EXTENSION_TRAINING = ("__init__.py", "__main__.py", "families.py", "templates.py", "files.py", "safeyaml.py",
                      "userdata.py", "strict_json.py", "sandbox.py", "adapters", "memory", "retrieval",
                      "datasets/__init__.py", "datasets/citations.py", "datasets/corpus", "datasets/leyes-ec/corpus")
TRAINING_SUFFIXES = {".py", ".json", ".jsonl"}  # .jsonl: the law corpus Fuentes reads (datasets/leyes-ec/corpus)
CHUNK_BYTES = 1 << 20
EXIT_OK, EXIT_KEPT, EXIT_USAGE, EXIT_STOPPED = 0, 1, 2, 3
DATA_FOLDERS = ("instruction-templates", "presets")  # files directly inside; adapters: loras/<name>/...
# Reading never goes through a symbolic link at the last step either (where the platform has the flag).
NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
# The likely cause of an OS error, said with the file it happened on (os_error_text).
CAUSES = {errno.ENOSPC: "the disk is full: free some space",
          errno.EFBIG: "a file-size limit was hit: raise `ulimit -f`, or the file system's largest file is smaller",
          errno.EACCES: "permission denied: make it writable for this user, or run as the user who owns the webui",
          errno.EPERM: "not permitted: make it writable for this user, or run as the user who owns the webui",
          errno.EROFS: "the file system is read-only: mount it read-write",
          errno.ELOOP: "a symbolic link loop: a link points, directly or through others, back at itself; remove it",
          errno.ENAMETOOLONG: "the path is too long for the file system: choose a shorter folder",
          errno.EIO: "an input/output error: the disk or its connection may be failing"}
LABELS = {"add": "added", "update": "updated", "unchanged": "unchanged", "keep": "kept (changed by you)",
          "remove": "removed"}

HELP = f"""
Copies into the webui: the extension (extensions/{NAME}/), with the parts of the bundle's
training/ package it imports as extensions/{NAME}/training/
({", ".join(entry if entry.endswith(".py") else entry + "/" for entry in EXTENSION_TRAINING)}),
instruction-templates/*.yaml, presets/*.yaml and every adapter folder under loras/.
Missing bundle folders are skipped.

Layout: a webui with a user_data/ folder (2025 and later) gets templates, presets and
adapters under user_data/; an older one gets them in its top-level folders.
--user-data-dir forces the folder (relative paths are taken from the webui folder, as
the webui does when started there). The extension always goes to the webui's own
extensions/ folder, which every webui version loads.

Record: {MANIFEST}
lists every installed file with its sha256. A rerun changes only files whose content
still equals the record; a file you changed, or one that was there before and is not
ours, is kept and reported, unless --force, which first moves it to
<file>.bak-<timestamp>. Files the new bundle no longer ships are removed when unchanged.
--uninstall removes what the record lists (same rules), the folders the installer created
once they are empty, and the record itself. The record is rewritten last, in one step, after
every file is in place; a run that stops leaves no empty folder it created behind.

One run at a time: an install or uninstall holds <webui>/{LOCK} (naming its pid)
while it runs. A second one is refused while that process lives; the lock of a run that died
is taken over. --dry-run takes no lock.

An adapter folder is installed whole or not at all: if you changed one of its files,
none of the bundle's new files for that adapter are written (half of one adapter next
to half of another does not load).

Refused before anything is written (each culprit is named with its fix; --force does not
override these): a symbolic link in the bundle's shipped folders (what it points at would
be copied into the webui); a user_data that is not a folder; a destination folder or file
that is a symbolic link, or a file where a folder is needed; an extensions/{NAME}/ without
this installer's record, or a loras/<adapter>/ folder of yours named like a bundle adapter
(move them away); a record listing paths outside the installer's folders or through links
(tampered: nothing is removed); a read-only destination folder.

Exit codes: 0 done; 1 done, but files you changed were kept (rerun with --force to
replace them after a backup; with --dry-run: would be kept); 2 refused, nothing written:
usage error, not a webui, an unreadable or tampered record, another run holding the lock,
or one of the refusals above;
3 stopped by a write error or Ctrl-C (the record lists what was written: fix the cause
and rerun, or --uninstall).
"""


class InstallError(Exception):
    """A problem the user must fix; printed without a traceback, exit code 2."""


@dataclass(frozen=True)
class Problem:
    """One reason to refuse: the culprit path, what is wrong with it, how to fix it."""

    path: Path
    why: str
    fix: str


class Refused(InstallError):
    """Problems found before anything was written; all of them are reported at once."""

    def __init__(self, problems: list[Problem]):
        unique = {problem.path: problem for problem in reversed(problems)}  # one per culprit, the first found
        self.problems = sorted(unique.values(), key=lambda problem: str(problem.path))
        super().__init__("\nerror: ".join(f"{problem.path}: {problem.why}\n  fix: {problem.fix}"
                                           for problem in self.problems))


@dataclass(frozen=True)
class Target:
    webui: Path
    data: Path  # where templates, presets and adapters go


@dataclass(frozen=True)
class Step:
    """What happens to one webui path; `rel` is POSIX and relative to the webui."""

    kind: str  # add | update | unchanged | keep | remove
    rel: str
    source: Path | None = None  # bundle file to copy (add, update)
    sha: str | None = None  # its sha256
    owned_sha: str | None = None  # the file's recorded hash before this run, if it is ours
    backup: bool = False  # move the file there aside first (--force)
    note: str = ""

    def record_after(self) -> str | None:
        """The hash the record keeps for this path after the run; None: not ours."""
        if self.kind in ("add", "update"):
            return self.sha
        return None if self.kind == "remove" else self.owned_sha


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        args.bundle = resolved(args.bundle, "--bundle")
        target = locate_webui(args.webui, args.user_data_dir)
        with contextlib.nullcontext() if args.dry_run else install_lock(target.webui):
            return run(args, target)
    except InstallError as error:
        print(f"error: {error}", file=sys.stderr)
        if isinstance(error, Refused):
            count = len(error.problems)
            print(f"Refused ({count} problem{'s' if count > 1 else ''} above): nothing was written.", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:  # an unreadable file while planning: nothing written yet
        print(f"error: cannot read {os_error_text(error)}; nothing was written", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        return EXIT_STOPPED


def run(args: argparse.Namespace, target: Target) -> int:
    """Plan against the record, then carry the plan out (a dry run: print it); the exit code."""
    manifest = load_manifest(target.webui)
    steps = checked_plan(args, target, manifest)
    version = read_version(args.bundle)
    action = "uninstalling from" if args.uninstall else f"{version}: installing into"
    print(f"{NAME} {action} {target.webui} (data folder: {target.data})")
    try:
        done = steps if args.dry_run else apply(target.webui, steps, manifest, version, args.uninstall)
    except (OSError, KeyboardInterrupt) as error:
        print(stopped_message(error, target.webui), file=sys.stderr)
        return EXIT_STOPPED
    print_summary(done, dry_run=args.dry_run)
    report_shadowing(target)
    if not args.uninstall:
        print_next_steps(target, steps)
    return EXIT_KEPT if any(step.kind == "keep" for step in steps) else EXIT_OK


def stopped_message(error: BaseException, webui: Path) -> str:
    """What stopped the run, on which file and why, and what is left to undo it."""
    what = "interrupted (Ctrl-C)" if isinstance(error, KeyboardInterrupt) else os_error_text(error)
    record = webui / MANIFEST
    after = (f"The install record {record} lists every file written so far: fix the cause and rerun the same "
             "command, or rerun with --uninstall." if os.path.lexists(record)
             else "Nothing of this run is left in the webui: fix the cause and rerun.")
    return f"error: stopped: {what}\n{after}"


def os_error_text(error: OSError) -> str:
    """The file an OS error happened on, what went wrong and its likely cause."""
    where = f"{error.filename}: " if error.filename else ""
    what = error.strerror or ", ".join(map(str, error.args)) or type(error).__name__  # ours carry only a message
    cause = CAUSES.get(error.errno)
    return f"{where}{what}" + (f" ({cause})" if cause else "")


def checked_plan(args: argparse.Namespace, target: Target, manifest: dict) -> list[Step]:
    """The steps of this run, or Refused with every problem found in the bundle, the webui and the record."""
    pairs, problems = ([], []) if args.uninstall else bundle_files(args.bundle, target)
    rels = [rel for _, rel in pairs]
    problems += record_problems(target, manifest) + destination_problems(target, rels)
    problems += ownership_problems(target, rels, manifest)
    if problems:
        raise Refused(problems)
    wanted = {} if args.uninstall else hash_bundle(args.bundle, target, pairs)
    steps = plan(target, wanted, manifest, args.force)
    problems = read_only_problems(target.webui, steps, args.uninstall)
    if problems:
        raise Refused(problems)
    return steps


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="install.py", description=__doc__.split("\n")[0], epilog=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--webui", type=Path, required=True, help="the text-generation-webui folder")
    parser.add_argument("--user-data-dir", type=Path, help="force the user data folder (default: auto)")
    parser.add_argument("--dry-run", action="store_true", help="print what would happen, write nothing")
    parser.add_argument("--force", action="store_true", help="replace or remove files you changed, after a backup")
    parser.add_argument("--uninstall", action="store_true", help="remove what this installer installed")
    parser.add_argument("--bundle", type=Path, default=BUNDLE,
                        help="advanced: bundle to install (default: %(default)s)")
    return parser.parse_args(argv)


# --- one run at a time --------------------------------------------------------------------------

@contextlib.contextmanager
def install_lock(webui: Path) -> Iterator[None]:
    """Hold <webui>/.spanish_ft-install.lock while this run reads the record, plans and writes: two runs into one
    webui would each plan against a record the other one is rewriting, and each record would miss files."""
    lock = webui / LOCK
    if not os.access(webui, os.W_OK | os.X_OK):  # no lock can be made here, and the plan's read-only check
        yield  # (read_only_problems) refuses any write first, with every read-only folder named at once
        return
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv)}
    try:
        take_lock(lock, mine)
    except OSError as error:
        raise InstallError(f"cannot create the install lock {lock}: {os_error_text(error)}") from None
    try:
        yield
    finally:
        if read_lock(lock) == mine:
            lock.unlink()


def take_lock(lock: Path, mine: dict) -> None:
    """Create the lock naming this run; refuse while its holder runs; take over the lock of one that died."""
    for _attempt in range(3):
        if create_lock(lock, mine):
            return
        holder = read_lock(lock)
        if holder is None and os.path.lexists(lock):
            raise Refused([Problem(lock, "is in the way: not an install lock of this installer (a JSON object naming "
                                   "a pid)", "if no install or uninstall runs, delete it, then rerun")])
        if holder is not None and (holder.get("host") != mine["host"] or pid_alive(holder.get("pid"))):
            raise Refused([Problem(lock, f"another install or uninstall runs in this webui: pid {holder.get('pid')} on "
                                   f"{holder.get('host')} since {holder.get('since')} ({holder.get('command')})",
                                   "wait for it to end, then rerun; if it no longer runs (say it ran on another "
                                   "machine that shares this folder), delete the lock, then rerun")])
        if holder is not None:
            print(f"warning: {lock}: taking over the lock of pid {holder.get('pid')}, which no longer runs",
                  file=sys.stderr)
            remove_stale_lock(lock, holder)
    raise Refused([Problem(lock, "other runs took this lock at the same moment", "rerun when they are done")])


def create_lock(lock: Path, mine: dict) -> bool:
    """Create `lock` naming this run in one step (a hard link to a finished file); False if it exists."""
    temp = lock.with_name(f"{lock.name}.{os.getpid()}{TEMP_SUFFIX}")
    if os.path.lexists(temp):  # left by a killed run that had our pid
        temp.unlink()
    try:
        with os.fdopen(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NO_FOLLOW, 0o666), "wb") as out:
            out.write(json.dumps(mine).encode("utf-8"))
        os.link(temp, lock)
        return True
    except FileExistsError:
        return False
    finally:
        if os.path.lexists(temp):
            temp.unlink()


def read_lock(lock: Path) -> dict | None:
    """The holder a lock names, or None (gone, a link, or not one of ours)."""
    try:
        with open_no_follow(lock) as handle:
            holder = json.loads(handle.read(LOCK_MAX_BYTES).decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return holder if isinstance(holder, dict) else None


def pid_alive(pid) -> bool:
    """Whether the process `pid` of this machine runs (our own pid in a lock is a dead run's, reused)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or pid == os.getpid():
        return False
    if os.name != "posix":  # Windows has no harmless probe (os.kill would end the process): assume it runs
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process; a pid beyond the platform's range
        return False
    except PermissionError:  # it runs, as another user
        return True
    return True


def remove_stale_lock(lock: Path, holder: dict) -> None:
    """Remove the dead holder's lock and nothing else: moved aside and read again first, since another run
    may have taken it over already (its lock is then put back)."""
    aside = lock.with_name(f"{lock.name}.{os.getpid()}-stale{TEMP_SUFFIX}")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return  # another run removed it first
    try:
        if read_lock(aside) != holder:
            os.link(aside, lock)
    finally:
        aside.unlink()


# --- where things go -------------------------------------------------------------------------

def resolved(path: Path, what: str) -> Path:
    """`path` made absolute with every link followed; InstallError naming it when that cannot be done."""
    try:
        return path.expanduser().resolve()
    except RuntimeError as error:  # Python before 3.13 reports a link loop (and an unknown ~user) this way
        why = "an unknown user's home folder (~name)" if "home" in str(error) else CAUSES[errno.ELOOP]
        raise InstallError(f"{what} {path}: {why}") from None
    except OSError as error:
        raise InstallError(f"{what} {path}: {os_error_text(error)}") from None


def locate_webui(webui: Path, user_data_dir: Path | None) -> Target:
    webui = resolved(webui, "--webui")
    if webui.exists() and not webui.is_dir():
        raise InstallError(f"--webui {webui} is a file, not a folder: pass the text-generation-webui folder")
    if not webui.is_dir():
        raise InstallError(f"no such folder: {webui}")
    missing = []
    if not (webui / "server.py").is_file():
        missing.append("server.py")
    if not (webui / "modules").is_dir():
        missing.append("modules/ folder")
    if missing:
        raise InstallError(f"no {' and no '.join(missing)} in {webui}: is this a text-generation-webui checkout?")
    if user_data_dir is not None:
        data = resolved(webui / user_data_dir.expanduser(), "--user-data-dir")
        if not data.is_dir():
            raise InstallError(f"--user-data-dir {data} does not exist: create it or drop the option")
        return Target(webui, data)
    user_data = webui / "user_data"
    if user_data.is_symlink():
        # the webui would use the folder it points at; writing through the link is not done: say so
        real = resolved(user_data, "user_data")
        raise Refused([Problem(user_data, f"is a symbolic link (to {os.readlink(user_data)}): the installer never "
                               "writes through links", f"pass --user-data-dir {real} to install into the folder it "
                               "points at, or replace the link by that folder")])
    if os.path.lexists(user_data) and not user_data.is_dir():
        raise Refused([Problem(user_data, "is not a folder: a webui of 2025 or later keeps its templates, presets "
                               "and adapters in a user_data/ folder, an older one has none",
                               "move it away (or make it the webui's user_data/ folder), or choose the data folder "
                               "with --user-data-dir")])
    return Target(webui, user_data if user_data.is_dir() else webui)


def collect_bundle(bundle: Path, target: Target) -> dict[str, tuple[Path, str]]:
    """{webui-relative target path: (bundle file, sha256)} for everything the bundle ships; Refused when
    bundle_files finds links."""
    pairs, problems = bundle_files(bundle, target)
    if problems:
        raise Refused(problems)
    return hash_bundle(bundle, target, pairs)


def bundle_files(bundle: Path, target: Target) -> tuple[list[tuple[Path, str]], list[Problem]]:
    """(bundle file, webui-relative target path) for everything the bundle ships, and the problems: every
    symbolic link among the shipped files or the folders they come from. The installer never follows one
    (a link in loras/ would copy whatever it points at, a private key say, into the webui)."""
    problems: list[Problem] = []
    # The webui root's extensions/, not user_data/extensions/: every webui version loads it, and
    # it imports script.py as the package `extensions.spanish_ft` (modules/extensions.py), so the
    # copied training/ is importable next to it; user_data/extensions/ loads script.py alone.
    extension = target.webui / "extensions" / NAME
    pairs = walk_files(bundle, Path("extensions", NAME), extension, problems)
    for entry in EXTENSION_TRAINING:
        pairs += walk_files(bundle, Path("training", entry), extension / "training" / entry, problems,
                            keep=lambda name: Path(name).suffix in TRAINING_SUFFIXES)
    for folder in DATA_FOLDERS:
        if bundle_folder(bundle, folder, problems):
            pairs += [(src, target.data / folder / src.name) for src in sorted((bundle / folder).glob("*.yaml"))
                      if regular(src, problems)]
    for adapter in bundle_adapters(bundle, problems):
        pairs += walk_files(bundle, adapter.relative_to(bundle), target.data / "loras" / adapter.name, problems)
    return [(src, relative(target.webui, dst)) for src, dst in pairs], problems


def hash_bundle(bundle: Path, target: Target, pairs: list[tuple[Path, str]]) -> dict[str, tuple[Path, str]]:
    if not pairs:
        raise InstallError(f"nothing to install in bundle {bundle}: expected extensions/{NAME}/, "
                           "instruction-templates/, presets/, loras/ or training/")
    wanted: dict[str, tuple[Path, str]] = {}
    for src, rel in pairs:
        if rel == MANIFEST:
            raise InstallError(f"the bundle must not ship {src}: that name is the install record")
        if rel in wanted:
            raise InstallError(f"two bundle files would be installed as {rel}: {wanted[rel][0]} and {src}")
        wanted[rel] = (src, sha256(src))
    return wanted


def bundle_adapters(bundle: Path, problems: list[Problem]) -> list[Path]:
    """The complete adapter folders in the bundle's loras/: not training work folders (<name>.work, no
    adapter_config.json of their own) nor hidden temp folders; every link there is a problem."""
    if not bundle_folder(bundle, "loras", problems):
        return []
    adapters = []
    for entry in sorted((bundle / "loras").iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_symlink():
            problems.append(bundle_link(entry))
        elif entry.is_dir() and os.path.lexists(entry / "adapter_config.json"):
            adapters.append(entry)
    return adapters


def bundle_folder(bundle: Path, folder: str, problems: list[Problem]) -> bool:
    """Whether bundle/folder is a real folder to read (a link instead is a problem)."""
    path = bundle / folder
    if path.is_symlink():
        problems.append(bundle_link(path))
    return path.is_dir() and not path.is_symlink()


def walk_files(bundle: Path, rel_root: Path, dest: Path, problems: list[Problem],
               keep=lambda name: True) -> list[tuple[Path, Path]]:
    """(file, its copy under dest) for every file below bundle/rel_root whose name passes `keep`, skipping
    caches and temp files; [(file, dest)] when it is a file. Links met on the way go to `problems`."""
    root = bundle / rel_root
    link = first_link(bundle, root)
    if link:
        problems.append(bundle_link(link))
        return []
    if not root.is_dir():
        return [(root, dest)] if os.path.lexists(root) and keep(root.name) and regular(root, problems) else []
    found = []
    for folder, dirs, files in os.walk(root):
        for name in sorted(d for d in dirs if (Path(folder) / d).is_symlink() and d not in SKIP_DIRS):
            problems.append(bundle_link(Path(folder) / name))
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not (Path(folder) / d).is_symlink())
        for name in sorted(files):
            src = Path(folder) / name
            if not name.endswith((".pyc", TEMP_SUFFIX)) and keep(name) and regular(src, problems):
                found.append((src, dest / src.relative_to(root)))
    return found


def regular(path: Path, problems: list[Problem]) -> bool:
    """Whether a bundle file is a regular file to copy; a link or anything else is a problem."""
    mode = path.lstat().st_mode
    if stat.S_ISLNK(mode):
        problems.append(bundle_link(path))
    elif not stat.S_ISREG(mode):
        problems.append(Problem(path, "is not a regular file (a folder, pipe or device where the bundle ships a "
                                "file)", "replace it by the file, or remove it from the bundle"))
    return stat.S_ISREG(mode)


def bundle_link(path: Path) -> Problem:
    return Problem(path, f"is a symbolic link in the bundle (to {os.readlink(path)}): the installer never follows "
                   "links, so what it points at is not copied into the webui",
                   "replace the link by the real file or folder (a copy of what it points at), or remove it")


def first_link(base: Path, path: Path) -> Path | None:
    """The first path from below `base` down to `path` (included) that is a symbolic link, if any."""
    current = base
    for part in path.relative_to(base).parts:
        current = current / part
        if current.is_symlink():
            return current
        if not os.path.lexists(current):
            return None
    return None


def read_version(bundle: Path) -> str:
    pyproject = bundle / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8") if pyproject.is_file() else ""
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    return match.group(1) if match else "unknown"


# --- what to do ---------------------------------------------------------------------------------

def load_manifest(webui: Path) -> dict:
    path = webui / MANIFEST
    problem = webui_problem(webui, path)  # extensions/, extensions/spanish_ft/ and the record: no links
    if problem:
        raise Refused([problem])
    if not os.path.lexists(path):
        return {"files": {}, "pending": {}, "created_dirs": []}
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as error:
        problem = f"not readable JSON ({os_error_text(error) if isinstance(error, OSError) else error})"
    else:
        problem = manifest_problem(manifest)
    if problem:
        raise InstallError(f"install record {path}: {problem}; delete it to start over (the files it listed are "
                           "then treated as yours)")
    return {**manifest, "pending": manifest.get("pending", {})}


RECORD_KEYS = {"files": dict, "pending": dict, "created_dirs": list}  # pending: absent in records before it existed


def manifest_problem(manifest) -> str | None:
    """What makes a parsed record unusable (its keys and their shapes), or None."""
    if not isinstance(manifest, dict):
        return f"a JSON {type(manifest).__name__}, not an object with 'files' and 'created_dirs'"
    for key, kind in RECORD_KEYS.items():
        value = manifest.get(key, {} if key == "pending" else None)
        if not isinstance(value, kind):
            return f"key {key!r}: expected a JSON {'object' if kind is dict else 'array'}, found {value!r:.60}"
        for item in (*value, *value.values()) if kind is dict else value:
            if not isinstance(item, str):
                return f"key {key!r}: holds {item!r:.60}, not a string"
            if not item.isprintable() or item != item.encode("utf-8", "replace").decode("utf-8"):
                return f"key {key!r}: holds {item!r:.60}, not a path (control characters, or not valid Unicode)"
    return None


def record_problems(target: Target, manifest: dict) -> list[Problem]:
    """The record is trusted only for paths inside the installer's own folders, reached without links:
    anything else means it was tampered with, and nothing is removed or written."""
    record = target.webui / MANIFEST
    entries = [(rel, False) for rel in (*manifest["files"], *manifest["pending"])]
    entries += [(rel, True) for rel in manifest["created_dirs"]]
    problems, outside = [], []
    for rel, is_dir in entries:
        place = installer_path(target, rel, is_dir)
        if place is None:
            outside.append(repr(rel))
        elif problem := webui_problem(*place):
            problems.append(replace(problem, why=f"{problem.why}; the install record {record} lists {rel} through "
                                    "it (a tampered record, or a changed webui): nothing is removed"))
    if outside:
        more = f" and {len(outside) - 5} more" if len(outside) > 5 else ""
        problems.append(Problem(record, f"is tampered: it lists {', '.join(outside[:5])}{more}, outside the folders "
                                "this installer writes to (absolute, through '..', or elsewhere in the webui); "
                                "nothing is removed or written",
                                f"check the record; to start over delete it (the files it lists are then treated as "
                                f"yours) and move extensions/{NAME}/ away. Installed with --user-data-dir? Rerun "
                                "with the same option"))
    return problems


def installer_path(target: Target, rel: str, is_dir: bool) -> tuple[Path, Path] | None:
    """(the folder its parts are checked from, path) when the webui-relative `rel` is written in normal form
    and names a place the installer writes: in extensions/spanish_ft/, a template or preset file, a file in
    a loras/<adapter>/ folder (folders: those, and their parents); None otherwise."""
    if (not rel or "\\" in rel or "\0" in rel or posixpath.isabs(rel) or PureWindowsPath(rel).drive
            or posixpath.normpath(rel) != rel):
        return None
    webui = target.webui
    path = Path(os.path.normpath(webui / rel))
    extension = webui / "extensions" / NAME
    if relative(webui, path) != rel or path == webui / MANIFEST:
        return None
    if extension in path.parents or (is_dir and path in (extension, extension.parent)):
        return webui, path
    for data in (target.data, webui / "user_data", webui):
        inside = path.relative_to(data).parts if data in path.parents else ()
        ours = (len(inside) == 2 and inside[0] in DATA_FOLDERS and not is_dir
                or len(inside) >= (2 if is_dir else 3) and inside[0] == "loras"
                or is_dir and len(inside) == 1 and inside[0] in (*DATA_FOLDERS, "loras"))
        if ours:
            return (webui if webui in (data, *data.parents) else data), path
    return None


def webui_problem(base: Path, path: Path) -> Problem | None:
    """What blocks `path` below `base`: a symbolic link on the way (or at `path`), or a file where a folder is
    needed; None when every existing part is a real folder (and `path`, if it exists, no link)."""
    culprit = first_link(base, path)
    if culprit:
        return Problem(culprit, f"is a symbolic link (to {os.readlink(culprit)}): the installer never writes, reads "
                       "or removes anything through a link",
                       "replace the link by the real folder or file (move what it points at there), or remove it")
    for folder in reversed(path.parents):
        if folder in base.parents or folder == base or not os.path.lexists(folder):
            continue
        if not folder.is_dir():
            return Problem(folder, "is a file where the installer needs a folder", "move the file away, then rerun")
    return None


def destination_problems(target: Target, rels: list[str]) -> list[Problem]:
    """Links, or files in the way of folders, on the way to anything the bundle would write."""
    problems = []
    for rel in rels:
        path = Path(os.path.normpath(target.webui / rel))  # ../ when --user-data-dir is outside the webui
        base = target.webui if target.webui in path.parents else target.data
        problems.append(webui_problem(base, path))
    return [problem for problem in problems if problem]


def ownership_problems(target: Target, rels: list[str], manifest: dict) -> list[Problem]:
    """Folders the bundle writes into as a whole that exist, hold something, and are not ours: the extension
    folder without our record, an adapter folder the record does not know."""
    webui, extension = target.webui, target.webui / "extensions" / NAME
    has_record = os.path.lexists(webui / MANIFEST)
    recorded = [*manifest["files"], *manifest["pending"], *manifest["created_dirs"]]
    loras = relative(webui, target.data / "loras")
    folders = set()
    for rel in rels:
        if rel.startswith(f"extensions/{NAME}/"):
            folders.add(extension)
        elif adapter := first_folder(rel, loras):
            folders.add(target.data / "loras" / adapter)
    problems = []
    for folder in sorted(folders):
        if folder.is_symlink() or not folder.is_dir() or not any(folder.iterdir()):
            continue  # links are refused on their own; an empty folder holds nothing to lose
        rel = relative(webui, folder)
        if folder == extension and not has_record:
            problems.append(Problem(folder, f"exists and was not installed by this installer (it has no install "
                                    f"record {Path(MANIFEST).name}): a folder of yours, or another extension of this "
                                    "name",
                                    "move it away (rename it, e.g. to spanish_ft.old) or delete it, then rerun; "
                                    "nothing is written into a folder the installer did not create"))
        elif folder != extension and not any(entry == rel or entry.startswith(rel + "/") for entry in recorded):
            problems.append(Problem(folder, "is a folder of yours (the install record does not list it) with the "
                                    "name of an adapter in the bundle",
                                    "rename it or move it away, then rerun; the installer never writes into, or "
                                    "replaces, a folder of yours"))
    return problems


def read_only_problems(webui: Path, steps: list[Step], uninstall: bool) -> list[Problem]:
    """The folders this run would write in that this user cannot write: refused before the first write."""
    changes = [step for step in steps if step.kind in ("add", "update", "remove")]
    places = {nearest_existing((webui / step.rel).parent) for step in changes}
    if changes or (uninstall and os.path.lexists(webui / MANIFEST)):
        places |= {nearest_existing((webui / MANIFEST).parent), webui}  # the webui folder holds the install lock
    return [Problem(place, "is read-only for this user (or on a read-only file system)",
                    "make it writable (chmod u+w, or mount it read-write), or run the installer as the user who owns "
                    "the webui, then rerun") for place in sorted(places) if not os.access(place, os.W_OK | os.X_OK)]


def nearest_existing(path: Path) -> Path:
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def owned_hashes(manifest: dict) -> dict[str, tuple[str, ...]]:
    """{path: hashes that mean 'ours, untouched'}: recorded, or being written when a run stopped."""
    owned = {rel: (sha,) for rel, sha in manifest["files"].items()}
    for rel, sha in manifest["pending"].items():
        owned[rel] = owned.get(rel, ()) + (sha,)
    return owned


def plan(target: Target, wanted: dict[str, tuple[Path, str]], manifest: dict, force: bool) -> list[Step]:
    owned = owned_hashes(manifest)
    steps = []
    for rel in sorted(set(wanted) | set(owned)):
        current = current_sha(target.webui / rel)
        accepted = owned.get(rel, ())
        step = (plan_copy(rel, *wanted[rel], accepted, current, force) if rel in wanted
                else plan_removal(rel, accepted, current, force))
        if step:
            steps.append(step)
    return keep_adapters_whole(steps, relative(target.webui, target.data / "loras"))


def plan_copy(rel: str, source: Path, sha: str, accepted: tuple, current: str | None, force: bool) -> Step:
    ours = current if current in accepted else None
    if current is None:
        return Step("add", rel, source, sha)
    if current == sha:  # a same-content file that is not ours stays unrecorded, so uninstall keeps it
        return Step("unchanged", rel, owned_sha=ours)
    if ours or force:
        return Step("update", rel, source, sha, owned_sha=ours, backup=not ours)
    why = "changed since it was installed" if accepted else "there before, not installed by us"
    return Step("keep", rel, owned_sha=accepted[0] if accepted else None, note=why)


def plan_removal(rel: str, accepted: tuple, current: str | None, force: bool) -> Step | None:
    ours = current if current in accepted else None
    if current is None:
        return None
    if ours or force:
        return Step("remove", rel, owned_sha=ours, backup=not ours)
    return Step("keep", rel, note="changed since it was installed, no longer shipped: now yours")


def keep_adapters_whole(steps: list[Step], loras: str) -> list[Step]:
    """No new files into an adapter folder that keeps a file of the user's: the mix would not load."""
    blocked = {first_folder(s.rel, loras) for s in steps if s.kind == "keep"} - {None}
    note = "its adapter folder has files you changed: not mixing two adapters"
    return [replace(s, kind="keep", note=note) if s.kind in ("add", "update") and first_folder(s.rel, loras) in blocked
            else s for s in steps]


def first_folder(rel: str, parent: str) -> str | None:
    """The entry of `parent` that `rel` lies in (both webui-relative), or None if outside it."""
    return rel[len(parent) + 1:].split("/")[0] if rel.startswith(parent + "/") else None


def current_sha(path: Path) -> str | None:
    if not os.path.lexists(path):
        return None
    return sha256(path) if path.is_file() and not path.is_symlink() else "not a regular file"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open_no_follow(path) as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def open_no_follow(path: Path):
    """`path` opened for reading, refusing (OSError) if it became a symbolic link since it was checked."""
    return os.fdopen(os.open(path, os.O_RDONLY | NO_FOLLOW), "rb")


def relative(webui: Path, path: Path) -> str:
    return Path(os.path.relpath(path, webui)).as_posix()


# --- doing it ---------------------------------------------------------------------------------

def apply(webui: Path, steps: list[Step], old: dict, version: str, uninstall: bool) -> list[Step]:
    """Carry out the steps and return them with their notes; write nothing if nothing changes."""
    writes = [s for s in steps if s.kind in ("add", "update")]
    changes = writes + [s for s in steps if s.kind == "remove"]
    created = sorted(set(old["created_dirs"]) | set(dirs_to_create(webui, [s.rel for s in writes] + [MANIFEST])))
    final = {"tool": f"{NAME} install.py", "bundle_version": version, "created_dirs": created,
             "files": {s.rel: s.record_after() for s in steps if s.record_after()}}
    settled = not (webui / MANIFEST).exists() if uninstall else old == {**final, "pending": {}}
    if not changes and settled:
        return steps
    try:
        # Written before any change: a run stopped halfway leaves only files this record accepts as ours.
        write_manifest(webui, {**final, "files": {s.rel: s.owned_sha for s in steps if s.owned_sha},
                               "pending": {s.rel: s.sha for s in writes}})
        done = [carry_out(webui, s) if s.kind in ("add", "update", "remove") else s for s in steps]
    except BaseException:
        prune_after_failure(webui, [rel for rel in created if rel not in old["created_dirs"]])
        raise
    # The final record is committed last, in one rename: a crash before it leaves the record above, which
    # accepts every file of this run as ours, so a rerun or --uninstall can still finish or undo it.
    if uninstall:
        (webui / MANIFEST).unlink()
        prune_dirs(webui, created, keep=None)
    else:
        final["created_dirs"] = prune_dirs(webui, created, keep=webui / MANIFEST)
        write_manifest(webui, final)
    return done


def carry_out(webui: Path, step: Step) -> Step:
    path = webui / step.rel
    if os.path.realpath(path.parent) != os.path.normpath(path.parent):  # checked when planning; not followed now
        raise OSError(f"a symbolic link appeared on the way to {path} during the install; not written through")
    if step.backup:
        backup = backup_path(path)
        os.replace(path, backup)
        step = replace(step, note=f"your version moved to {backup.name}")
    if step.kind == "remove":
        if not step.backup:
            path.unlink()
        return step
    path.parent.mkdir(parents=True, exist_ok=True)
    with open_no_follow(step.source) as source:
        write_atomic(path, lambda out: copy_into(source, out))
    return step


def copy_into(source, out) -> None:
    while chunk := source.read(CHUNK_BYTES):
        out.write(chunk)


def write_atomic(path: Path, fill) -> None:
    """Write through a temporary sibling and rename: readers see the old file or the new one."""
    temp = path.with_name(path.name + TEMP_SUFFIX)
    if os.path.lexists(temp):  # left by a stopped run, or planted: removed, never written through
        temp.unlink()
    try:
        with os.fdopen(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NO_FOLLOW, 0o666), "wb") as out:
            fill(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except OSError as error:
        if error.filename is None or Path(error.filename) == temp:  # name the file the user knows
            error.filename = str(path)
        raise
    finally:
        if os.path.lexists(temp):
            temp.unlink()


def write_manifest(webui: Path, manifest: dict) -> None:
    path = webui / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode("utf-8")
    write_atomic(path, lambda out: out.write(data))


def backup_path(path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate, n = path.with_name(f"{path.name}.bak-{stamp}"), 1
    while os.path.lexists(candidate):
        candidate, n = path.with_name(f"{path.name}.bak-{stamp}-{n}"), n + 1
    return candidate


def dirs_to_create(webui: Path, rels: list[str]) -> list[str]:
    missing = set()
    for rel in rels:
        folder = (webui / rel).parent
        while not os.path.lexists(folder):
            missing.add(relative(webui, folder))
            folder = folder.parent
    return sorted(missing)


def prune_after_failure(webui: Path, new_dirs: list[str]) -> None:
    """Remove the folders a stopped run created and left empty (all of them when it wrote no record, the
    extension folder included): nothing else lists them, so no later run could remove them."""
    record = webui / MANIFEST
    with contextlib.suppress(OSError):  # the error that stopped the run is the one to report
        prune_dirs(webui, new_dirs, keep=record if os.path.lexists(record) else None)


def prune_dirs(webui: Path, created: list[str], keep: Path | None) -> list[str]:
    """Remove the created folders that are now empty, deepest first; return those left."""
    left = []
    for rel in sorted(created, key=lambda r: r.count("/"), reverse=True):
        folder = webui / rel
        if folder.is_symlink() or not folder.is_dir():
            continue
        if (keep is None or folder not in keep.parents) and not any(folder.iterdir()):
            folder.rmdir()
        else:
            left.append(rel)
    return sorted(left)


# --- telling the user -------------------------------------------------------------------------

def print_summary(steps: list[Step], dry_run: bool) -> None:
    counts = Counter(step.kind for step in steps)
    for step in steps:
        if step.kind != "unchanged":
            note = f"  ({step.note})" if step.note else ""
            print(f"  {LABELS[step.kind].split()[0]:8} {step.rel}{note}")
    totals = ", ".join(f"{counts[kind]} {label}" for kind, label in LABELS.items())
    changed = counts["add"] or counts["update"] or counts["remove"]
    verdict = "nothing to do" if not changed else "Would do" if dry_run else "Done"
    print(f"{verdict}: {totals}." + (" (dry run: nothing written)" if dry_run else ""))
    if counts["keep"]:
        print("Kept files are yours: rerun with --force to replace or remove them (each is backed up first).")


def report_shadowing(target: Target) -> None:
    user_copy = target.data / "extensions" / NAME / "script.py"
    if target.data != target.webui and user_copy.exists():
        print(f"warning: {user_copy} exists and the webui loads it instead of extensions/{NAME}/: "
              "remove that folder to use this install.")


def print_next_steps(target: Target, steps: list[Step]) -> None:
    flag = "" if target.data in (target.webui, target.webui / "user_data") else f" --user-data-dir {target.data}"
    print(f"\nStart the webui with the extension:\n  cd {target.webui} && python server.py --extensions {NAME}{flag}")
    print("Then load a base model, pick <family>-fusionado in the LoRA menu, chat in instruct mode with the "
          f"template {NAME}-<Family> and the preset of the same name.")
    print(f"  adapters: {', '.join(shipped(target, steps, 'loras', '-fusionado')) or '(none in this bundle)'}; "
          f"templates: {', '.join(shipped(target, steps, 'instruction-templates', '.yaml')) or '-'}")
    print("Carga un modelo base, elige <familia>-fusionado en el menú LoRA y conversa en modo instruct.")


def shipped(target: Target, steps: list[Step], folder: str, ending: str) -> list[str]:
    """Names in a data folder that this run leaves installed, e.g. the fused adapters."""
    parent = relative(target.webui, target.data / folder)
    names = {first_folder(s.rel, parent) for s in steps if s.kind != "remove"} - {None}
    return sorted(name.removesuffix(".yaml") for name in names if name.endswith(ending))


if __name__ == "__main__":
    sys.exit(main())
