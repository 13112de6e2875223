"""Fuzzing the output rule: random names and random things around an output path (files, folders of
the user's and of ours, links to files, folders and nowhere, link loops), for check_output,
atomic_output_dir, the GGUF file rule, and the early checks of `fuse`, `evaluate` and `export-gguf`.

The property: the path is accepted, and then writing it loses nothing of the user's; or it is
refused with our error naming the path (or the culprit on its way). Any other exception fails,
and nothing around the output ever changes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "adversarial"))
from harness import fingerprint, make_adapter, write_rows  # noqa: E402

from training.__main__ import main  # noqa: E402
from training.adapters.gguf.file_record import check_output_file, record_path  # noqa: E402
from training.adapters.record import RECORD_NAME  # noqa: E402
from training.files import OUTPUT_MARKER, OutputError, atomic_output_dir, check_output, is_ours  # noqa: E402

KINDS = ("absent", "file", "empty", "users", "ours", "record", "link-file", "link-dir", "dangling", "loop")
# any character a file name may hold, but the separator, NUL and lone surrogates (not encodable)
NAME = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1,
               max_size=16).filter(lambda name: name not in (".", ".."))
LAYOUT = st.lists(st.tuples(NAME, st.sampled_from(KINDS)), min_size=1, max_size=3)


def place(path: Path, kind: str, root: Path) -> bool:
    """Make `kind` at `path`; False when nothing can be made there (a file or a loop above it)."""
    try:
        if kind == "file":
            path.write_bytes(b"los datos de alguien")
        elif kind in ("empty", "users", "ours", "record"):
            path.mkdir()
            if kind == "users":
                (path / "tesis.tex").write_text("mi tesis", encoding="utf-8")
            elif kind == "ours":
                (path / OUTPUT_MARKER).write_text(json.dumps({"made_by": "spanish_ft"}), encoding="utf-8")
            elif kind == "record":
                (path / RECORD_NAME).write_text(json.dumps({"kind": "trained"}), encoding="utf-8")
        elif kind == "link-file":
            (root / "destino.txt").write_text("enlazado", encoding="utf-8")
            path.symlink_to(root / "destino.txt")
        elif kind == "link-dir":
            (root / "destino").mkdir(exist_ok=True)
            path.symlink_to(root / "destino")
        elif kind == "dangling":
            path.symlink_to(root / "no-existe")
        elif kind == "loop":
            path.symlink_to(path.name + ".b")
            path.with_name(path.name + ".b").symlink_to(path.name)
    except OSError:  # ENOTDIR, ELOOP, ENAMETOOLONG: the layout stops here, which is a layout too
        return False
    return kind != "absent"


def build(root: Path, layout: list[tuple[str, str]]) -> Path:
    """root/name1/name2/...: each part made as its kind, while the part above is a folder to go into."""
    path, going = root / "u", True
    path.mkdir()
    for name, kind in layout:
        path = path / name
        if going:
            going = place(path, kind, root) and path.is_dir()
    return path


@contextlib.contextmanager
def scratch():
    root = Path(tempfile.mkdtemp(prefix="fuzz-paths-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def named(message: str, path: Path) -> bool:
    """Whether the message names the path or one of the parts on its way (the culprit)."""
    return any(str(part) in message for part in (path, *path.parents))


@given(layout=LAYOUT, replace=st.booleans(), marker=st.sampled_from([OUTPUT_MARKER, RECORD_NAME]))
def test_check_output_accepts_only_what_loses_nothing(layout, replace, marker):
    with scratch() as root:
        out = build(root, layout)
        before = fingerprint(root)
        try:
            check_output(out, replace=replace, marker=marker, what="fuzz output")
        except OutputError as err:
            assert named(str(err), out), str(err)
        else:
            assert not out.is_symlink() and not (out.exists() and not out.is_dir())
            assert not out.is_dir() or not any(out.iterdir()) or (is_ours(out, marker) and replace)
        assert fingerprint(root) == before


def outside(root: Path, out: Path) -> dict[str, str]:
    """The fingerprint of everything under root but the output (as written: through links on its way)."""
    target = os.path.realpath(out)
    return {key: value for key, value in fingerprint(root).items()
            if not (os.path.realpath(root / key) + os.sep).startswith(target + os.sep)}


@given(layout=LAYOUT, replace=st.booleans())
def test_atomic_output_dir_never_touches_anything_beside_its_output(layout, replace):
    with scratch() as root:
        out = build(root, layout)
        before = outside(root, out)
        try:
            with atomic_output_dir(out, replace=replace, what="fuzz output") as tmp:
                (tmp / "resultado.txt").write_text("nuevo", encoding="utf-8")
        except OutputError as err:
            assert named(str(err), out), str(err)
        else:
            assert (out / "resultado.txt").read_text(encoding="utf-8") == "nuevo" and is_ours(out)
        after = outside(root, out)
        assert {key: after.get(key) for key in before} == before
        made = set(after) - set(before)  # only the folders leading to the output (through links), nothing beside it
        target = Path(os.path.realpath(out))
        assert all(after[key] == "dir" and target.is_relative_to(os.path.realpath(root / key)) for key in made), made


GGUF_KINDS = ("absent", "file", "empty", "link-file", "dangling", "loop")


@given(parent=LAYOUT, stem=NAME, file_kind=st.sampled_from(GGUF_KINDS), record_kind=st.sampled_from(GGUF_KINDS),
       replace=st.booleans())
def test_the_gguf_file_rule_covers_the_file_and_its_record(parent, stem, file_kind, record_kind, replace):
    with scratch() as root:
        folder = build(root, parent)
        out = folder / f"{stem[:40]}.gguf"
        if folder.is_dir() and not folder.is_symlink():
            place(out, file_kind, root)
            place(record_path(out), record_kind, root)
        before = fingerprint(root)
        try:
            check_output_file(out, replace)
            check_output(out.with_name(f".{out.name}.tmp-1"), what="GGUF file")
        except OutputError as err:
            assert named(str(err), out) or str(record_path(out)) in str(err), str(err)
        else:
            assert not os.path.lexists(out) and not os.path.lexists(record_path(out))
        assert fingerprint(root) == before


class Reached(BaseException):
    """The command got past its checks (raised where its work would start)."""


@pytest.fixture(scope="module")
def adapters(tiny_model_dirs, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("fuzz-adapters")
    base = tiny_model_dirs["llama2"]
    return {"base": base, "a": make_adapter(base, root / "a", seed=1), "b": make_adapter(base, root / "b", seed=2),
            "rows": write_rows(root / "t" / "test.jsonl")}


@pytest.fixture
def stop_at_work(monkeypatch):
    import training.adapters.fuse as fuse
    import training.adapters.gguf.checks as checks
    import training.evaluate.evaluate as evaluation

    def reached(*args, **kwargs):
        raise Reached()

    for module, name in [(fuse, "open_fusable"), (evaluation, "evaluate"), (checks, "find_llama_quantize"),
                         (checks, "open_adapter")]:
        monkeypatch.setattr(module, name, reached)


def command_line(command: str, out: Path, adapters: dict) -> list[str]:
    if command == "fuse":
        return ["fuse", str(adapters["a"]), str(adapters["b"]), "--out", str(out)]
    if command == "evaluate":
        return ["evaluate", "--base", str(adapters["base"]), "--adapters", str(adapters["a"]), "--data",
                str(adapters["rows"]), "--report", str(out)]
    return ["export-gguf", str(adapters["a"]), "--out", str(out.with_name(out.name + ".gguf"))]


@given(command=st.sampled_from(["fuse", "evaluate", "export-gguf"]), layout=LAYOUT, replace=st.booleans())
def test_the_commands_refuse_a_bad_output_before_any_work(command, layout, replace, adapters, stop_at_work, capsys):
    with scratch() as root:
        out = build(root, layout)
        before = fingerprint(root)
        try:
            code = main(command_line(command, out, adapters) + (["--replace"] if replace else []))
        except Reached:
            code = None
        err = capsys.readouterr().err
        if code is not None:
            assert code == 1 and "Traceback" not in err and err.startswith("error: "), err
            assert named(err, out) or str(out) + ".gguf" in err, err
        assert fingerprint(root) == before
