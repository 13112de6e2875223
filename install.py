"""Install spanish_ft into a text-generation-webui checkout, upgrade it, or undo it.

    python install.py --webui ~/text-generation-webui            # install or upgrade
    python install.py --webui ~/text-generation-webui --dry-run  # show what would happen
    python install.py --webui ~/text-generation-webui --uninstall

Standard library only: it runs in the webui's own Python. Run `python install.py --help`
for the layout rules, the install record and the exit codes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

BUNDLE = Path(__file__).resolve().parent
NAME = "spanish_ft"
# The record lives inside the extension folder: it goes wherever the extension goes and
# needs no extra folder in the webui. Paths in it are POSIX and relative to the webui.
MANIFEST = f"extensions/{NAME}/.{NAME}-install.json"
TEMP_SUFFIX = f".{NAME}-tmp"
SKIP_DIRS = {"__pycache__"}
# The parts of the bundle's training/ package that the extension imports, directly or through one
# another: these modules, and the .py/.json files below these folders (memory/configs/*.json are the
# estimator's shipped model configs). Nothing else of training/ goes into the webui;
# tests/test_install.py follows the extension's imports with ast to check this list.
EXTENSION_TRAINING = ("__init__.py", "families.py", "templates.py", "files.py", "safeyaml.py", "adapters", "memory")
TRAINING_SUFFIXES = {".py", ".json"}
CHUNK_BYTES = 1 << 20
EXIT_OK, EXIT_KEPT, EXIT_USAGE, EXIT_STOPPED = 0, 1, 2, 3
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
once they are empty, and the record itself.

An adapter folder is installed whole or not at all: if you changed one of its files,
none of the bundle's new files for that adapter are written (half of one adapter next
to half of another does not load).

Exit codes: 0 done; 1 done, but files you changed were kept (rerun with --force to
replace them after a backup; with --dry-run: would be kept); 2 usage error, not a webui,
or unreadable record; 3 stopped by a write error or Ctrl-C (the record lists what was
written: fix the cause and rerun, or --uninstall).
"""


class InstallError(Exception):
    """A problem the user must fix; printed without a traceback, exit code 2."""


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
        target = locate_webui(args.webui, args.user_data_dir)
        manifest = load_manifest(target.webui)
        wanted = {} if args.uninstall else collect_bundle(args.bundle, target)
        steps = plan(target, wanted, manifest, args.force)
    except InstallError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    version = read_version(args.bundle)
    action = "uninstalling from" if args.uninstall else f"{version}: installing into"
    print(f"{NAME} {action} {target.webui} (data folder: {target.data})")
    try:
        done = steps if args.dry_run else apply(target.webui, steps, manifest, version, args.uninstall)
    except (OSError, KeyboardInterrupt) as error:
        print(f"error: stopped ({type(error).__name__}: {error})\nThe install record lists every file written so far: "
              "fix the cause and rerun the same command, or rerun with --uninstall.", file=sys.stderr)
        return EXIT_STOPPED
    print_summary(done, dry_run=args.dry_run)
    report_shadowing(target)
    if not args.uninstall:
        print_next_steps(target, steps)
    return EXIT_KEPT if any(step.kind == "keep" for step in steps) else EXIT_OK


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


# --- where things go -------------------------------------------------------------------------

def locate_webui(webui: Path, user_data_dir: Path | None) -> Target:
    webui = webui.expanduser().resolve()
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
        data = (webui / user_data_dir.expanduser()).resolve()
        if not data.is_dir():
            raise InstallError(f"--user-data-dir {data} does not exist: create it or drop the option")
        return Target(webui, data)
    new_layout = (webui / "user_data").is_dir()
    return Target(webui, webui / "user_data" if new_layout else webui)


def collect_bundle(bundle: Path, target: Target) -> dict[str, tuple[Path, str]]:
    """{webui-relative target path: (bundle file, sha256)} for everything the bundle ships."""
    bundle = bundle.resolve()
    # The webui root's extensions/, not user_data/extensions/: every webui version loads it, and
    # it imports script.py as the package `extensions.spanish_ft` (modules/extensions.py), so the
    # copied training/ is importable next to it; user_data/extensions/ loads script.py alone.
    extension = target.webui / "extensions" / NAME
    pairs = walk_files(bundle / "extensions" / NAME, extension)
    for entry in EXTENSION_TRAINING:
        pairs += [(src, dst) for src, dst in walk_files(bundle / "training" / entry, extension / "training" / entry)
                  if src.suffix in TRAINING_SUFFIXES]
    for folder in ("instruction-templates", "presets"):
        pairs += [(src, target.data / folder / src.name) for src in sorted((bundle / folder).glob("*.yaml"))]
    # complete adapter folders only: not training work folders (<name>.work) nor hidden temp folders
    adapters = sorted(p for p in (bundle / "loras").glob("*")
                      if (p / "adapter_config.json").is_file() and not p.name.startswith("."))
    for adapter in adapters:
        pairs += walk_files(adapter, target.data / "loras" / adapter.name)
    if not pairs:
        raise InstallError(f"nothing to install in bundle {bundle}: expected extensions/{NAME}/, "
                           "instruction-templates/, presets/, loras/ or training/")
    wanted: dict[str, tuple[Path, str]] = {}
    for src, dst in pairs:
        rel = relative(target.webui, dst)
        if rel == MANIFEST:
            raise InstallError(f"the bundle must not ship {src}: that name is the install record")
        if rel in wanted:
            raise InstallError(f"two bundle files would be installed as {rel}: {wanted[rel][0]} and {src}")
        wanted[rel] = (src, sha256(src))
    return wanted


def walk_files(root: Path, dest: Path) -> list[tuple[Path, Path]]:
    """(file, its copy under dest) for every file below root, skipping caches and temp files;
    [(root, dest)] when root is a file."""
    if root.is_file():
        return [(root, dest)]
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(files):
            if not name.endswith((".pyc", TEMP_SUFFIX)):
                src = Path(folder) / name
                found.append((src, dest / src.relative_to(root)))
    return found


def read_version(bundle: Path) -> str:
    pyproject = bundle / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8") if pyproject.is_file() else ""
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    return match.group(1) if match else "unknown"


# --- what to do ---------------------------------------------------------------------------------

def load_manifest(webui: Path) -> dict:
    path = webui / MANIFEST
    if not path.exists():
        return {"files": {}, "pending": {}, "created_dirs": []}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        manifest.setdefault("pending", {})
        valid = all(isinstance(manifest[key], kind) for key, kind in
                    (("files", dict), ("pending", dict), ("created_dirs", list)))
    except (ValueError, KeyError, TypeError, AttributeError):
        valid = False
    if not valid:
        raise InstallError(f"install record {path} is not JSON with 'files' and 'created_dirs'; delete it to "
                           "start over (the files it listed are then treated as yours)")
    return manifest


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
    return sha256(path) if path.is_file() else "not a regular file"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


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
    # Written before any change: a run stopped halfway leaves only files this record accepts as ours.
    write_manifest(webui, {**final, "files": {s.rel: s.owned_sha for s in steps if s.owned_sha},
                           "pending": {s.rel: s.sha for s in writes}})
    done = [carry_out(webui, s) if s.kind in ("add", "update", "remove") else s for s in steps]
    if uninstall:
        (webui / MANIFEST).unlink()
        prune_dirs(webui, created, keep=None)
    else:
        final["created_dirs"] = prune_dirs(webui, created, keep=webui / MANIFEST)
        write_manifest(webui, final)
    return done


def carry_out(webui: Path, step: Step) -> Step:
    path = webui / step.rel
    if step.backup:
        backup = backup_path(path)
        os.replace(path, backup)
        step = replace(step, note=f"your version moved to {backup.name}")
    if step.kind == "remove":
        if not step.backup:
            path.unlink()
        return step
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(step.source, "rb") as source:
        write_atomic(path, lambda out: copy_into(source, out))
    return step


def copy_into(source, out) -> None:
    while chunk := source.read(CHUNK_BYTES):
        out.write(chunk)


def write_atomic(path: Path, fill) -> None:
    """Write through a temporary sibling and rename: readers see the old file or the new one."""
    temp = path.with_name(path.name + TEMP_SUFFIX)
    try:
        with open(temp, "wb") as out:
            fill(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    finally:
        if temp.exists():
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
        while not folder.exists():
            missing.add(relative(webui, folder))
            folder = folder.parent
    return sorted(missing)


def prune_dirs(webui: Path, created: list[str], keep: Path | None) -> list[str]:
    """Remove the created folders that are now empty, deepest first; return those left."""
    left = []
    for rel in sorted(created, key=lambda r: r.count("/"), reverse=True):
        folder = webui / rel
        if not folder.is_dir():
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
