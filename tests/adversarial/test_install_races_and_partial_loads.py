"""Two runs of install.py at once, a run that fails halfway, link loops around the installer, and adapters
whose tensors do not all land in the base model.

- install.py holds <webui>/.spanish_ft-install.lock while it plans and writes: a second install or
  uninstall is refused (exit 2) naming the lock and its holder; a dead holder's lock is taken over.
  However the runs interleave, the record equals a plain install's and --uninstall restores the webui.
- A run stopped by a write error (a file-size limit here) names the file and the cause, and leaves no
  folder it created behind; --uninstall afterwards restores the webui exactly.
- A symbolic link loop anywhere the installer looks is named, never a RuntimeError traceback.
- merge, export-gguf, evaluate and a recipe's lora.stack_on refuse an adapter with tensors for a module
  the base lacks, or one its target_modules leave out, naming the modules and the adapter folder
  (PEFT would load the rest and drop those without a word).

install.py runs as a user runs it, in a fresh process; the training commands run in-process.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from harness import (
    FAST,
    ROOT,
    assert_refused,
    fingerprint,
    make_adapter,
    refused,
    user_folder,
    write,
    write_recipe,
    write_rows,
)
from safetensors.torch import load_file, save_file

RECORD = "extensions/spanish_ft/.spanish_ft-install.json"
LOCK = ".spanish_ft-install.lock"
HIDDEN = 64  # the tiny llama2's hidden size (tests/tiny.py)


@pytest.fixture
def bundle(tmp_path) -> Path:
    """A bundle with enough files that two runs overlap: the extension, 40 helper modules, a falcon adapter."""
    root = tmp_path / "paquete"
    write(root / "pyproject.toml", '[project]\nname = "spanish_ft"\nversion = "2.0.0"\n')
    write(root / "extensions/spanish_ft/script.py", "params = {'display_name': 'spanish_ft'}\n")
    for n in range(40):
        write(root / f"extensions/spanish_ft/ayudas/modulo_{n:02}.py", f"VALOR = {n}\n" * 50)
    write(root / "training/__init__.py", '"""training"""\n')
    write(root / "instruction-templates/spanish_ft-Falcon.yaml", "instruction_template: falcon\n")
    write(root / "presets/spanish_ft-Falcon.yaml", "temperature: 0.6\n")
    write(root / "loras/falcon-fusionado/adapter_config.json", '{"r": 16}\n')
    write(root / "loras/falcon-fusionado/adapter_model.safetensors", os.urandom(64 << 10))
    return root


def make_webui(root: Path) -> Path:
    """A 2025-layout webui with the user's own template, preset and adapter."""
    write(root / "server.py", "# webui\n")
    write(root / "modules/shared.py", "# webui\n")
    write(root / "extensions/gallery/script.py", "# the webui's own extension\n")
    write(root / "user_data/presets/Mirostat.yaml", "mirostat_mode: 2\n")
    write(root / "user_data/instruction-templates/Vicuna.yaml", "instruction_template: vicuna\n")
    write(root / "user_data/loras/mi-lora/adapter_config.json", '{"r": 4}\n')
    return root


@pytest.fixture
def webui(tmp_path) -> Path:
    user_folder(tmp_path / "tesis")  # the user's own work beside the webui
    return make_webui(tmp_path / "webui")


def installer(webui: Path, bundle: Path, *flags: str) -> list[str]:
    return [sys.executable, str(ROOT / "install.py"), "--webui", str(webui), "--bundle", str(bundle), *flags]


def install(webui: Path, bundle: Path, *flags: str, **options) -> subprocess.CompletedProcess:
    return subprocess.run(installer(webui, bundle, *flags), capture_output=True, text=True, timeout=120,
                          cwd=webui.parent, **options)


def plain_record(tmp_path: Path, bundle: Path) -> dict:
    """The record of one plain install into a twin of the webui."""
    twin = make_webui(tmp_path / "gemelo")
    assert install(twin, bundle).returncode == 0
    return json.loads((twin / RECORD).read_text())


def holding_lock(webui: Path, pid: int, host: str | None = None) -> Path:
    """A lock as install.py writes it, naming `pid` on `host` (this machine by default)."""
    holder = {"pid": pid, "host": host or socket.gethostname(), "since": "2026-01-05 09:00:00",
              "command": f"install.py --webui {webui}"}
    return write(webui / LOCK, json.dumps(holder))


# --- two runs at once ---------------------------------------------------------------------------------

def test_installs_started_together_end_as_one_plain_install(webui, bundle, tmp_path):
    expected = plain_record(tmp_path, bundle)
    before = fingerprint(tmp_path / "tesis")
    tree = fingerprint(webui)
    runs = [subprocess.Popen(installer(webui, bundle), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(4)]
    results = [(run.wait(timeout=120), run.stderr.read()) for run in runs]
    for code, err in results:
        assert code in (0, 2) and "Traceback" not in err, err
        if code == 2:
            assert str(webui / LOCK) in err and "another install or uninstall runs in this webui" in err, err
    assert 0 in [code for code, _ in results]
    assert json.loads((webui / RECORD).read_text()) == expected
    assert not (webui / LOCK).exists()
    assert install(webui, bundle, "--uninstall").returncode == 0
    assert fingerprint(webui) == tree and fingerprint(tmp_path / "tesis") == before


@pytest.mark.parametrize("flags", [[], ["--uninstall"], ["--force"]], ids=["install", "uninstall", "force"])
def test_a_second_run_is_refused_while_the_first_holds_the_lock(webui, bundle, flags):
    assert install(webui, bundle).returncode == 0
    first = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = holding_lock(webui, first.pid)
        tree = fingerprint(webui)
        result = install(webui, bundle, *flags)
        assert_refused(result.returncode, result.stderr, lock, expected_code=2)
        assert f"pid {first.pid}" in result.stderr and "another install or uninstall runs" in result.stderr
        assert "nothing was written" in result.stderr
        assert fingerprint(webui) == tree  # the holder's lock included
    finally:
        first.kill()
        first.wait()


def test_a_lock_from_another_machine_is_never_taken_over(webui, bundle):
    lock = holding_lock(webui, 4242, host="servidor-del-laboratorio")
    tree = fingerprint(webui)
    result = install(webui, bundle)
    assert_refused(result.returncode, result.stderr, lock, expected_code=2)
    assert "servidor-del-laboratorio" in result.stderr and "delete the lock" in result.stderr
    assert fingerprint(webui) == tree


def test_the_lock_of_a_run_that_died_is_taken_over(webui, bundle, tmp_path):
    expected = plain_record(tmp_path, bundle)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    holding_lock(webui, dead.pid)
    result = install(webui, bundle)
    assert result.returncode == 0, result.stderr
    assert "taking over the lock" in result.stderr and "Traceback" not in result.stderr
    assert json.loads((webui / RECORD).read_text()) == expected
    assert not (webui / LOCK).exists()


@pytest.mark.parametrize("planted", ["notes", "loop"])
def test_a_file_of_the_users_at_the_lock_path_is_refused_and_kept(webui, bundle, planted):
    lock = webui / LOCK
    if planted == "notes":
        write(lock, "apuntes: no es un candado\n")
    else:
        lock.symlink_to(lock.name)  # a link to itself
    tree = fingerprint(webui)
    result = install(webui, bundle)
    assert_refused(result.returncode, result.stderr, lock, expected_code=2)
    assert "not an install lock" in result.stderr
    assert fingerprint(webui) == tree


def test_a_dry_run_beside_a_running_install_takes_no_lock(webui, bundle):
    first = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        holding_lock(webui, first.pid)
        result = install(webui, bundle, "--dry-run")
        assert result.returncode == 0, result.stderr
    finally:
        first.kill()
        first.wait()


# --- a run that fails halfway -------------------------------------------------------------------------

def file_size_limit(limit_bytes: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))


@pytest.mark.parametrize("limit_bytes, culprit", [(300, RECORD), (16 << 10, "user_data/loras/falcon-fusionado/")],
                         ids=["at-the-record", "at-the-adapter"])
def test_a_failed_install_then_uninstall_leaves_the_webui_as_it_was(webui, bundle, tmp_path, limit_bytes, culprit):
    tree, thesis = fingerprint(webui), fingerprint(tmp_path / "tesis")
    result = install(webui, bundle, preexec_fn=file_size_limit(limit_bytes))
    assert result.returncode == 3 and "Traceback" not in result.stderr, result.stderr
    assert "error: stopped: " + str(webui / culprit) in result.stderr and "file-size limit" in result.stderr
    if limit_bytes == 300:  # nothing was written: not even the extension folder is left
        assert fingerprint(webui) == tree and "Nothing of this run is left" in result.stderr
    assert not [path for path in webui.rglob("*") if path.is_dir() and not any(path.iterdir())
                and path.relative_to(webui).as_posix() not in tree]  # no empty folder of ours
    result = install(webui, bundle, "--uninstall")
    assert result.returncode == 0, result.stderr
    assert fingerprint(webui) == tree and fingerprint(tmp_path / "tesis") == thesis


def test_a_failed_install_is_finished_by_a_rerun_with_a_plain_record(webui, bundle, tmp_path):
    expected = plain_record(tmp_path, bundle)
    assert install(webui, bundle, preexec_fn=file_size_limit(16 << 10)).returncode == 3
    assert install(webui, bundle).returncode == 0
    assert json.loads((webui / RECORD).read_text()) == expected


# --- link loops ---------------------------------------------------------------------------------------

def loop(path: Path) -> Path:
    """`path` as one of two links pointing at each other."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partner = path.with_name(path.name + "-b")
    path.symlink_to(partner.name)
    partner.symlink_to(path.name)
    return path


@pytest.mark.parametrize("where", ["--webui", "--user-data-dir", "user_data", "--bundle", "bundle adapter",
                                   "installed extension"])
def test_a_link_loop_is_named_without_a_traceback(webui, bundle, tmp_path, where):
    flags, target, source = [], webui, bundle
    if where == "--webui":
        target = culprit = loop(tmp_path / "bucle")
    elif where == "--user-data-dir":
        culprit = loop(tmp_path / "datos")
        flags = ["--user-data-dir", str(culprit)]
    elif where == "user_data":
        shutil.rmtree(webui / "user_data")
        culprit = loop(webui / "user_data")
    elif where == "--bundle":
        source = culprit = loop(tmp_path / "otro-paquete")
    elif where == "bundle adapter":
        culprit = loop(bundle / "loras/mistral-fusionado")
    else:
        culprit = loop(webui / "extensions/spanish_ft")
    before = fingerprint(tmp_path)
    result = install(target, source, *flags)
    assert_refused(result.returncode, result.stderr, culprit, expected_code=2)
    assert "RuntimeError" not in result.stderr
    assert fingerprint(tmp_path) == before


# --- adapters whose tensors do not all land -----------------------------------------------------------

@pytest.fixture(scope="module")
def lab(tiny_model_dirs, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("lab")
    base = tiny_model_dirs["llama2"]
    return {"base": base, "good": make_adapter(base, root / "buena", seed=3),
            "test": write_rows(root / "held" / "test.jsonl"), "train": write_rows(root / "train.jsonl", 8)}


def partial_adapter(lab: dict, folder: Path, case: str) -> tuple[Path, str]:
    """A copy of the good q_proj adapter with tensors for one more module per layer, and that module's name.

    "absent": Baichuan's fused `W_pack`, which llama lacks, listed in target_modules beside q_proj (an adapter
    trained on another base); "left-out": llama's own mlp.down_proj, missing from target_modules.
    """
    shutil.copytree(lab["good"], folder)
    tensors = load_file(folder / "adapter_model.safetensors")
    config = json.loads((folder / "adapter_config.json").read_text())
    module = "self_attn.W_pack" if case == "absent" else "mlp.down_proj"
    d_in = HIDDEN if case == "absent" else 2 * HIDDEN
    d_out = 3 * HIDDEN if case == "absent" else HIDDEN
    for layer in range(2):
        key = f"base_model.model.model.layers.{layer}.{module}"
        tensors[f"{key}.lora_A.weight"] = torch.randn(2, d_in)
        tensors[f"{key}.lora_B.weight"] = torch.randn(d_out, 2)
    save_file(tensors, folder / "adapter_model.safetensors")
    if case == "absent":
        config["target_modules"] = ["q_proj", "W_pack"]
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder, f"model.layers.0.{module}"


def command_line(command: str, adapter: Path, lab: dict, out: Path) -> list:
    if command == "merge":
        return ["merge", adapter, "--out", out, "--base", lab["base"], "--dtype", "float32"]
    if command == "export-gguf":
        return ["export-gguf", adapter, "--out", out.with_suffix(".gguf"), "--base", lab["base"], "--type", "f16"]
    if command == "evaluate-second":  # a good adapter first: the bad one joins a model PEFT already wraps
        return ["evaluate", "--base", lab["base"], "--adapters", lab["good"], adapter, "--data", lab["test"],
                "--report", out, "--limit", "1", "--max-new-tokens", "2"]
    return ["evaluate", "--base", lab["base"], "--adapters", adapter, "--data", lab["test"], "--report", out,
            "--limit", "1", "--max-new-tokens", "2"]


@pytest.mark.parametrize("case", ["absent", "left-out"])
@pytest.mark.parametrize("command", ["merge", "export-gguf", "evaluate", "evaluate-second"])
def test_an_adapter_that_does_not_all_land_is_refused(command, case, lab, tmp_path, capsys):
    user_folder(tmp_path / "tesis")
    adapter, module = partial_adapter(lab, tmp_path / "parcial", case)
    why = "does not have" if case == "absent" else "target_modules leave out"
    refused(command_line(command, adapter, lab, tmp_path / "salida"), capsys, tmp_path, adapter, module, why,
            "model.layers.1.")


def test_a_stacked_adapter_that_does_not_all_land_is_refused(lab, tmp_path, capsys):
    user_folder(tmp_path / "tesis")
    adapter, module = partial_adapter(lab, tmp_path / "parcial", "absent")
    (tmp_path / "receta").mkdir()
    recipe = write_recipe(tmp_path / "receta" / "tiny.yaml", lab["base"], lab["train"], tmp_path / "salida",
                          lora={"stack_on": str(adapter)})
    refused(["train", recipe, *FAST, "training.max_steps=1"], capsys, tmp_path, adapter, module, "does not have")


def test_an_adapter_whose_config_adapts_modules_it_has_no_tensors_for_is_refused(lab, tmp_path, capsys):
    user_folder(tmp_path / "tesis")
    adapter = shutil.copytree(lab["good"], tmp_path / "incompleta")
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "target_modules": ["q_proj", "k_proj"]}))
    refused(command_line("merge", adapter, lab, tmp_path / "salida"), capsys, tmp_path, adapter,
            "model.layers.0.self_attn.k_proj", "no tensors for modules its target_modules adapt")
