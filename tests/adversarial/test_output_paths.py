"""Output paths: train, fuse, merge and evaluate never delete, replace or write into anything
spanish_ft did not make, and refuse before loading a model or data, naming the path and the fix."""

from __future__ import annotations

import json
import shutil

import pytest
from harness import (
    FAST,
    assert_refused,
    fingerprint,
    read_only_command,
    run_cli,
    user_folder,
    write_recipe,
    write_rows,
)

from training.__main__ import main
from training.files import OUTPUT_MARKER

COMMANDS = ["train", "fuse", "merge", "evaluate"]


def argv(command: str, out, kit: dict, tmp_path, *extra: str, **recipe_keys) -> list[str]:
    """The command line that writes `out`; train's recipe lives in tmp_path/recipe (a folder of its own)."""
    if command == "train":
        (tmp_path / "recipe").mkdir(exist_ok=True)
        recipe = write_recipe(tmp_path / "recipe" / "tiny.yaml", kit["base"], kit["train"], out, **recipe_keys)
        return ["train", str(recipe), *FAST, "training.max_steps=2", *extra]
    if command == "fuse":
        return ["fuse", str(kit["a"]), str(kit["b"]), "--out", str(out), *extra]
    if command == "merge":
        return ["merge", str(kit["a"]), "--out", str(out), "--dtype", "float32", *extra]
    return ["evaluate", "--base", str(kit["base"]), "--adapters", str(kit["a"]), "--data", str(kit["test"]),
            "--report", str(out), "--limit", "1", "--max-new-tokens", "2", *extra]


def cli(capsys, args: list[str]) -> tuple[int, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.err + captured.out


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if a command loads a model or data before refusing its output."""
    def loaded(*args, **kwargs):
        raise AssertionError("a model or data was loaded before the output was checked")

    import training.adapters.fuse as fuse
    import training.adapters.merge as merge
    import training.evaluate.evaluate as evaluation
    import training.train as train

    for module, name in [(train, "load_tokenizer"), (train, "prepare_data"), (fuse, "open_fusable"),
                         (merge.AutoConfig, "from_pretrained"), (evaluation, "load_model_with_adapters")]:
        monkeypatch.setattr(module, name, loaded)


def ours(kind_of: str, path, kit: dict):
    """An earlier output of ours at `path`: an adapter (train, fuse, merge recognise its record) or a report."""
    if kind_of == "evaluate":
        path.mkdir()
        (path / OUTPUT_MARKER).write_text(json.dumps({"made_by": "spanish_ft", "what": "report folder"}))
        (path / "report.json").write_text("{}")
    else:
        shutil.copytree(kit["a"], path)
    return path


@pytest.mark.parametrize("command", COMMANDS)
def test_an_existing_folder_of_the_users_is_never_written(command, kit, tmp_path, capsys, no_loading):
    thesis = user_folder(tmp_path / "tesis")
    args = argv(command, thesis, kit, tmp_path)
    before = fingerprint(tmp_path)
    code, err = cli(capsys, args)
    assert_refused(code, err, thesis)
    assert "did not make" in err and "choose a new" in err
    assert fingerprint(tmp_path) == before  # not even a tesis.work/ beside it


@pytest.mark.parametrize("command", COMMANDS)
def test_an_existing_file_is_never_replaced_nor_hidden(command, kit, tmp_path, capsys, no_loading):
    pdf = tmp_path / "tesis.pdf"
    pdf.write_bytes(b"%PDF-1.7 mi tesis")
    args = argv(command, pdf, kit, tmp_path)
    before = fingerprint(tmp_path)
    code, err = cli(capsys, args)
    assert_refused(code, err, pdf)
    assert "is a file" in err
    assert fingerprint(tmp_path) == before  # no .tesis.pdf.old-<pid>, no tesis.pdf.work/


@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_of_ours_is_replaced_only_with_replace(command, kit, tmp_path, capsys, no_loading):
    out = ours(command, tmp_path / "previous", kit)
    args = argv(command, out, kit, tmp_path)
    before = fingerprint(tmp_path)
    code, err = cli(capsys, args)
    assert_refused(code, err, out)
    assert "--replace" in err
    assert fingerprint(tmp_path) == before


@pytest.mark.parametrize("command", COMMANDS)
def test_replace_replaces_our_output_and_nothing_beside_it(command, kit, tmp_path, capsys):
    out = ours(command, tmp_path / "previous", kit)
    thesis = user_folder(tmp_path / "tesis")
    beside = fingerprint(thesis)
    code, err = cli(capsys, argv(command, out, kit, tmp_path, "--replace"))
    assert code == 0, err
    assert fingerprint(thesis) == beside
    if command == "evaluate":
        assert json.loads((out / "report.json").read_text())["variants"] == ["base", "a"]
    else:
        record = json.loads((out / "spanish_ft_record.json").read_text())
        assert record["kind"] == {"train": "trained", "fuse": "fused", "merge": "merged"}[command]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary leftovers


@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_overlapping_an_input_is_refused(command, kit, tmp_path, capsys, no_loading):
    source = shutil.copytree(kit["a"], tmp_path / "mi-adaptador")
    inside = source / "nuevo"
    if command == "train":  # the frozen adapter it trains on
        args = argv(command, inside, kit, tmp_path, f"lora.stack_on={source}")
    elif command == "fuse":
        args = ["fuse", str(source), str(kit["b"]), "--out", str(inside)]
    elif command == "merge":
        args = ["merge", str(source), "--out", str(inside)]
    else:
        args = ["evaluate", "--base", str(kit["base"]), "--adapters", str(source), "--data", str(kit["test"]),
                "--report", str(inside)]
    before = fingerprint(tmp_path)
    code, err = cli(capsys, args)
    assert_refused(code, err, inside)
    assert f"overlaps the input {source}" in err
    assert fingerprint(tmp_path) == before


def test_an_adapter_of_ours_holding_the_training_rows_is_not_replaced(kit, tmp_path, capsys, no_loading):
    out = ours("train", tmp_path / "previous", kit)
    rows = write_rows(out / "mis-datos.jsonl")
    recipe = write_recipe(tmp_path / "tiny.yaml", kit["base"], rows, out)
    before = fingerprint(tmp_path)
    code, err = cli(capsys, ["train", "--replace", str(recipe), *FAST])
    assert_refused(code, err, out)
    assert "overlaps the input" in err and str(rows) in err
    assert fingerprint(tmp_path) == before


@pytest.mark.parametrize("command", ["train", "fuse"])
def test_a_symlink_output_is_never_followed(command, kit, tmp_path, capsys, no_loading):
    thesis = user_folder(tmp_path / "tesis")
    link = tmp_path / "salida"
    link.symlink_to(thesis)
    args = argv(command, link, kit, tmp_path, "--replace")
    before = fingerprint(tmp_path)
    code, err = cli(capsys, args)
    assert_refused(code, err, link)
    assert "symbolic link" in err
    assert fingerprint(tmp_path) == before


def test_a_file_in_the_output_path_is_named(kit, tmp_path, capsys, no_loading):
    pdf = tmp_path / "tesis.pdf"
    pdf.write_bytes(b"%PDF-1.7")
    args = argv("fuse", pdf / "fusionado", kit, tmp_path)
    before = fingerprint(tmp_path)
    code, err = cli(capsys, args)
    assert_refused(code, err, pdf)
    assert "is a file, not a folder" in err
    assert fingerprint(tmp_path) == before


def test_an_empty_folder_is_taken(kit, tmp_path, capsys):
    empty = tmp_path / "vacia"
    empty.mkdir()
    code, err = cli(capsys, argv("fuse", empty, kit, tmp_path))
    assert code == 0, err
    assert json.loads((empty / "spanish_ft_record.json").read_text())["kind"] == "fused"


def test_a_work_folder_of_the_users_is_refused(kit, tmp_path, capsys, no_loading):
    thesis = user_folder(tmp_path / "tesis")
    args = argv("train", tmp_path / "adapter", kit, tmp_path, work_dir=str(thesis))
    before = fingerprint(tmp_path)
    code, err = cli(capsys, args)
    assert_refused(code, err, thesis)
    assert fingerprint(tmp_path) == before


@pytest.mark.parametrize("command", ["demo", "fetch-demo-model"])
def test_the_demo_never_writes_into_a_users_folder(command, tmp_path, capsys, monkeypatch):
    import training.demo.model as demo_model

    monkeypatch.setattr(demo_model, "source_sha256", lambda source, install: pytest.fail("the GGUF was looked for"))
    monkeypatch.setattr(demo_model, "source_gguf", lambda *args: pytest.fail("the GGUF was looked for"))
    thesis = user_folder(tmp_path / "tesis")
    before = fingerprint(tmp_path)
    code, err = cli(capsys, ["demo", "--out", str(thesis)] if command == "demo" else [command, str(thesis)])
    assert_refused(code, err, thesis)
    assert fingerprint(tmp_path) == before


@pytest.mark.parametrize("command", ["train", "fuse"])
def test_a_read_only_place_is_refused_up_front(command, kit, tmp_path):
    locked = user_folder(tmp_path / "solo-lectura")
    prefix = read_only_command(locked)
    if prefix is None:
        pytest.skip("cannot make a read-only folder here (root without unshare and mount)")
    out = locked / "adapter"
    args = argv(command, out, kit, tmp_path)
    before = fingerprint(tmp_path)
    locked.chmod(0o555)
    try:
        result = run_cli(*args, prefix=prefix)
    finally:
        locked.chmod(0o755)
    assert_refused(result.returncode, result.stderr, out)
    assert f"{locked} is read-only" in result.stderr and "chmod u+w" in result.stderr
    assert "data:" not in result.stdout  # refused before the data and the model were loaded
    assert fingerprint(tmp_path) == before


def test_the_check_is_the_same_from_a_fresh_process(kit, tmp_path):
    thesis = user_folder(tmp_path / "tesis")
    before = fingerprint(tmp_path)
    result = run_cli(*argv("fuse", thesis, kit, tmp_path))
    assert_refused(result.returncode, result.stderr, thesis)
    assert fingerprint(tmp_path) == before


def test_a_run_that_fails_before_training_leaves_no_work_folder(kit, tmp_path, capsys):
    missing = tmp_path / "no-existe.jsonl"
    recipe = write_recipe(tmp_path / "tiny.yaml", kit["base"], missing, tmp_path / "adapter")
    before = fingerprint(tmp_path)
    code, err = cli(capsys, ["train", str(recipe), *FAST])
    assert_refused(code, err, missing)
    assert fingerprint(tmp_path) == before  # no adapter.work/ left with only its marker
