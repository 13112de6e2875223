"""install.py against fake webui trees of both layouts: install, upgrade, conflicts, undo, crashes;
and the parts of training/ it copies against what the extension imports."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import install

ROOT = Path(__file__).resolve().parents[1]
RECORD = install.MANIFEST


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def snapshot(root: Path) -> dict[str, str]:
    """{relative path: sha256 for files, 'dir' for folders}: the whole tree, empty folders included."""
    tree = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        tree[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return tree


@pytest.fixture
def bundle(tmp_path) -> Path:
    root = tmp_path / "bundle"
    write(root / "pyproject.toml", '[project]\nname = "spanish_ft"\nversion = "1.0.0"\n')
    write(root / "extensions/spanish_ft/script.py", "params = {}\n")
    write(root / "extensions/spanish_ft/helpers/adapters.py", "X = 1\n")
    write(root / "extensions/spanish_ft/__pycache__/script.cpython-311.pyc", b"\0junk")
    write(root / "instruction-templates/spanish_ft-Mistral.yaml", "instruction_template: mistral\n")
    write(root / "instruction-templates/notes.txt", "not a template\n")
    write(root / "presets/spanish_ft-Mistral.yaml", "temperature: 0.7\n")
    write(root / "loras/README.md", "top-level file, not an adapter\n")
    write(root / "loras/mistral-fusionado/adapter_config.json", '{"r": 32}\n')
    write(root / "loras/mistral-fusionado/adapter_model.safetensors", bytes(range(256)) * 64)
    write(root / "loras/mistral-fusionado/extra/record.json", "{}\n")
    write(root / "training/__init__.py", '"""training"""\n')
    write(root / "training/families.py", "FAMILIES = {}\n")
    write(root / "training/adapters/fuse.py", "def fuse(): ...\n")
    write(root / "training/memory/configs/mistral-7b.json", "{}\n")
    write(root / "training/train.py", "not used by the extension: not copied\n")
    write(root / "training/schema.json", "{}\n")
    write(root / "training/recipes/mistral-leyes-ec.yaml", "lora: {}\n")
    write(root / "training/notes.txt", "not copied\n")
    write(root / "training/data/leyes.jsonl", "{}\n")
    write(root / "training/data/loader.py", "not copied either\n")
    write(root / "training/__pycache__/fuse.cpython-311.pyc", b"\0junk")
    return root


def make_webui(root: Path, layout: str) -> Path:
    write(root / "server.py", "# webui\n")
    write(root / "modules/shared.py", "# webui\n")
    write(root / "extensions/example/script.py", "# webui's own extension\n")
    data = root / "user_data" if layout == "new" else root
    write(data / "presets/Top-P.yaml", "top_p: 0.9\n")
    write(data / "instruction-templates/Alpaca.yaml", "instruction_template: alpaca\n")
    (data / "loras").mkdir(parents=True)  # an empty folder must survive install + uninstall
    (data / "models").mkdir()
    return root


@pytest.fixture(params=["new", "old"])
def webui(request, tmp_path) -> Path:
    return make_webui(tmp_path / f"webui-{request.param}", request.param)


def data_dir(webui: Path) -> Path:
    return webui / "user_data" if (webui / "user_data").is_dir() else webui


def run(webui: Path, bundle: Path, *flags: str) -> int:
    return install.main(["--webui", str(webui), "--bundle", str(bundle), *flags])


def test_fresh_install_copies_the_bundle_and_records_every_file(webui, bundle, capsys):
    assert run(webui, bundle) == 0
    data = data_dir(webui)
    ext = webui / "extensions/spanish_ft"
    for path in (ext / "script.py", ext / "helpers/adapters.py", ext / "training/__init__.py",
                 ext / "training/families.py", ext / "training/adapters/fuse.py",
                 ext / "training/memory/configs/mistral-7b.json",
                 data / "instruction-templates/spanish_ft-Mistral.yaml", data / "presets/spanish_ft-Mistral.yaml",
                 data / "loras/mistral-fusionado/adapter_model.safetensors",
                 data / "loras/mistral-fusionado/extra/record.json"):
        assert path.is_file(), path
    for path in (ext / "__pycache__", ext / "training/data", ext / "training/__pycache__", ext / "training/notes.txt",
                 ext / "training/train.py", ext / "training/schema.json", ext / "training/recipes",
                 data / "instruction-templates/notes.txt", data / "loras/README.md"):
        assert not path.exists(), path
    record = json.loads((webui / RECORD).read_text())
    assert record["bundle_version"] == "1.0.0" and "pending" not in record
    assert record["files"] == {rel: sha for rel, sha in snapshot(webui).items()
                               if rel in record["files"]}
    assert len(record["files"]) == 11
    out = capsys.readouterr().out
    assert f"cd {webui} && python server.py --extensions spanish_ft\n" in out
    assert "adapters: mistral-fusionado" in out and "11 added" in out


def test_second_install_is_a_no_op(webui, bundle, capsys):
    run(webui, bundle)
    before = snapshot(webui)
    capsys.readouterr()
    assert run(webui, bundle) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert snapshot(webui) == before


def test_upgrade_replaces_adds_and_removes_only_what_it_owns(webui, bundle, capsys):
    run(webui, bundle)
    data = data_dir(webui)
    write(bundle / "presets/spanish_ft-Mistral.yaml", "temperature: 0.5\n")
    write(bundle / "instruction-templates/spanish_ft-Falcon.yaml", "instruction_template: falcon\n")
    (bundle / "loras/mistral-fusionado/extra/record.json").unlink()
    (bundle / "loras/mistral-fusionado/extra").rmdir()
    capsys.readouterr()

    assert run(webui, bundle) == 0
    assert (data / "presets/spanish_ft-Mistral.yaml").read_text() == "temperature: 0.5\n"
    assert (data / "instruction-templates/spanish_ft-Falcon.yaml").is_file()
    assert not (data / "loras/mistral-fusionado/extra").exists()  # the folder it created goes too
    assert (data / "presets/Top-P.yaml").read_text() == "top_p: 0.9\n"
    assert "1 added, 1 updated, 9 unchanged, 0 kept (changed by you), 1 removed" in capsys.readouterr().out
    record = json.loads((webui / RECORD).read_text())
    assert "user_data/loras/mistral-fusionado/extra/record.json" not in record["files"]
    assert not any("extra" in folder for folder in record["created_dirs"])


def test_upgrade_from_an_install_with_the_sft_modules_removes_them(webui, bundle, monkeypatch, capsys):
    """An older bundle shipped sft_* modules beside script.py and copied all of training/: an upgrade to
    this layout removes what is no longer shipped, and its folders, and uninstall still restores the tree."""
    before = snapshot(webui)
    old = ["extensions/spanish_ft/sft_ui.py", "extensions/spanish_ft/sft_webui.py", "training/train.py",
           "training/model/load.py"]
    for rel in old:
        write(bundle / rel, "# the older layout\n")
    with monkeypatch.context() as patch:  # the older installer copied more of training/
        patch.setattr(install, "EXTENSION_TRAINING", (*install.EXTENSION_TRAINING, "train.py", "model"))
        assert run(webui, bundle) == 0
    ext = webui / "extensions/spanish_ft"
    assert all((ext / rel.removeprefix("extensions/spanish_ft/")).is_file() for rel in old)
    for rel in old:
        (bundle / rel).unlink()
    capsys.readouterr()

    assert run(webui, bundle) == 0
    for path in (ext / "sft_ui.py", ext / "sft_webui.py", ext / "training/train.py", ext / "training/model"):
        assert not path.exists(), path
    assert (ext / "script.py").is_file() and (ext / "training/adapters/fuse.py").is_file()
    assert "0 added, 0 updated, 11 unchanged, 0 kept (changed by you), 4 removed" in capsys.readouterr().out
    record = json.loads((webui / RECORD).read_text())
    assert not [rel for rel in record["files"] if "/sft_" in rel or "/training/model/" in rel or "train.py" in rel]
    assert not [folder for folder in record["created_dirs"] if folder.endswith("training/model")]
    assert run(webui, bundle, "--uninstall") == 0
    assert snapshot(webui) == before


def test_a_file_the_user_changed_is_kept_unless_forced_then_backed_up(webui, bundle, capsys):
    run(webui, bundle)
    preset = data_dir(webui) / "presets/spanish_ft-Mistral.yaml"
    write(preset, "temperature: 1.3  # mine\n")
    write(bundle / "presets/spanish_ft-Mistral.yaml", "temperature: 0.5\n")

    assert run(webui, bundle) == 1
    assert preset.read_text() == "temperature: 1.3  # mine\n"
    assert f"\n  kept     {install.relative(webui, preset)}  (changed since" in capsys.readouterr().out
    assert run(webui, bundle) == 1  # still recorded as ours-but-changed, still reported

    assert run(webui, bundle, "--force") == 0
    assert preset.read_text() == "temperature: 0.5\n"
    [backup] = preset.parent.glob("spanish_ft-Mistral.yaml.bak-*")
    assert backup.read_text() == "temperature: 1.3  # mine\n"
    assert f"your version moved to {backup.name}" in capsys.readouterr().out


def test_a_users_own_file_at_a_target_path_is_never_taken_over(webui, bundle):
    own = write(data_dir(webui) / "presets/spanish_ft-Mistral.yaml", "my own preset\n")
    same = write(data_dir(webui) / "instruction-templates/spanish_ft-Mistral.yaml",
                 (bundle / "instruction-templates/spanish_ft-Mistral.yaml").read_bytes())
    before = snapshot(webui)

    assert run(webui, bundle) == 1
    assert own.read_text() == "my own preset\n"
    record = json.loads((webui / RECORD).read_text())
    assert not {install.relative(webui, own), install.relative(webui, same)} & set(record["files"])
    assert run(webui, bundle, "--uninstall") == 0
    assert snapshot(webui) == before


def test_dry_run_writes_nothing(webui, bundle, capsys):
    before = snapshot(webui)
    assert run(webui, bundle, "--dry-run") == 0
    assert snapshot(webui) == before
    assert "dry run: nothing written" in capsys.readouterr().out

    run(webui, bundle)
    installed = snapshot(webui)
    write(bundle / "presets/spanish_ft-Mistral.yaml", "temperature: 0.5\n")
    for flags in (["--dry-run"], ["--dry-run", "--force"], ["--dry-run", "--uninstall"]):
        run(webui, bundle, *flags)
        assert snapshot(webui) == installed


def test_uninstall_restores_the_tree_exactly(webui, bundle, capsys):
    before = snapshot(webui)
    run(webui, bundle)
    write(bundle / "presets/spanish_ft-Falcon.yaml", "temperature: 0.6\n")
    run(webui, bundle)  # an upgrade in between
    assert run(webui, bundle, "--uninstall") == 0
    assert snapshot(webui) == before
    capsys.readouterr()
    assert run(webui, bundle, "--uninstall") == 0
    assert "nothing to do" in capsys.readouterr().out


def test_uninstall_keeps_changed_files_unless_forced(webui, bundle, capsys):
    before = snapshot(webui)
    run(webui, bundle)
    preset = write(data_dir(webui) / "presets/spanish_ft-Mistral.yaml", "mine\n")
    assert run(webui, bundle, "--uninstall") == 1
    assert preset.read_text() == "mine\n" and not (webui / RECORD).exists()
    assert "kept" in capsys.readouterr().out
    assert {rel for rel in snapshot(webui)} - set(before) == {install.relative(webui, preset)}

    assert run(webui, bundle) == 1  # the kept file is now the user's own: never taken over
    assert run(webui, bundle, "--uninstall", "--force") == 0
    assert preset.read_text() == "mine\n"

    preset.unlink()
    run(webui, bundle)
    write(preset, "mine again\n")
    assert run(webui, bundle, "--uninstall", "--force") == 0
    assert not preset.exists()
    [backup] = preset.parent.glob("*.bak-*")
    assert backup.read_text() == "mine again\n"


def test_forced_user_data_dir_and_start_command(tmp_path, bundle, capsys):
    webui = make_webui(tmp_path / "webui", "old")
    write(webui / "mydata/presets/Top-P.yaml", "top_p: 0.9\n")
    assert run(webui, bundle, "--user-data-dir", "mydata") == 0
    assert (webui / "mydata/presets/spanish_ft-Mistral.yaml").is_file()
    assert not (webui / "presets/spanish_ft-Mistral.yaml").exists()
    assert f"--extensions spanish_ft --user-data-dir {webui / 'mydata'}" in capsys.readouterr().out
    assert run(webui, bundle, "--user-data-dir", "nowhere") == 2


def test_a_data_folder_outside_the_webui_portable_layout(tmp_path, bundle, capsys):
    """A portable webui keeps user_data/ beside its folder: --user-data-dir ../user_data installs, upgrades and
    uninstalls there; without the option the record's ../ entries are outside the webui and nothing is removed."""
    webui = make_webui(tmp_path / "portable/text-generation-webui", "old")
    outside = tmp_path / "portable/user_data"
    write(outside / "presets/Top-P.yaml", "top_p: 0.9\n")
    before = snapshot(tmp_path / "portable")
    assert run(webui, bundle, "--user-data-dir", "../user_data") == 0
    assert (outside / "loras/mistral-fusionado/adapter_config.json").is_file()
    assert "../user_data/presets/spanish_ft-Mistral.yaml" in json.loads((webui / RECORD).read_text())["files"]
    write(bundle / "presets/spanish_ft-Mistral.yaml", "temperature: 0.5\n")
    assert run(webui, bundle, "--user-data-dir", "../user_data") == 0
    assert (outside / "presets/spanish_ft-Mistral.yaml").read_text() == "temperature: 0.5\n"
    installed = snapshot(tmp_path / "portable")
    capsys.readouterr()
    assert run(webui, bundle, "--uninstall") == 2
    assert "Rerun with the same option" in capsys.readouterr().err
    assert snapshot(tmp_path / "portable") == installed
    assert run(webui, bundle, "--uninstall", "--user-data-dir", str(outside)) == 0
    assert snapshot(tmp_path / "portable") == before


def test_missing_bundle_folders_are_skipped(tmp_path, capsys):
    webui = make_webui(tmp_path / "webui", "new")
    bundle = tmp_path / "small-bundle"
    write(bundle / "presets/spanish_ft-Mistral.yaml", "temperature: 0.7\n")
    assert run(webui, bundle) == 0
    assert "1 added" in capsys.readouterr().out
    assert run(webui, tmp_path / "empty-bundle") == 2
    assert "nothing to install" in capsys.readouterr().err


@pytest.mark.parametrize("layout, missing", [("no-server", "no server.py in"), ("no-modules", "no modules/ folder in"),
                                             ("empty", "no server.py and no modules/ folder in"),
                                             ("absent", "no such folder")])
def test_a_wrong_webui_folder_is_named(tmp_path, bundle, capsys, layout, missing):
    root = tmp_path / "not-a-webui"
    if layout != "absent":
        root.mkdir()
    if layout == "no-server":
        (root / "modules").mkdir()
    if layout == "no-modules":
        write(root / "server.py", "")
    assert run(root, bundle) == 2
    err = capsys.readouterr().err
    assert missing in err and str(root) in err
    assert layout == "absent" or "text-generation-webui checkout" in err


def run_and_crash(webui: Path, bundle: Path, monkeypatch, after_files: int) -> None:
    """Run an install whose disk fails while writing file number after_files + 1."""
    real_copy, calls = install.copy_into, []

    def copy_then_crash(source, out):
        calls.append(1)
        if len(calls) > after_files:
            out.write(source.read(3))  # half a file, then the disk goes
            raise OSError("disk unplugged")
        real_copy(source, out)

    with monkeypatch.context() as patch:
        patch.setattr(install, "copy_into", copy_then_crash)
        assert run(webui, bundle) == 3


def upgrade_bundle(bundle: Path) -> None:
    for path in sorted(bundle.rglob("*.yaml")) + sorted(bundle.rglob("*.py")):  # 7 files
        write(path, path.read_text() + "# v2\n")


@pytest.mark.parametrize("upgrade", [False, True], ids=["fresh", "upgrade"])
@pytest.mark.parametrize("crash_at", [0, 1, 4, 6])
def test_an_interrupted_install_leaves_nothing_unrecorded(webui, bundle, monkeypatch, capsys, crash_at, upgrade):
    before = snapshot(webui)
    if upgrade:
        run(webui, bundle)
        upgrade_bundle(bundle)
    run_and_crash(webui, bundle, monkeypatch, crash_at)
    assert "disk unplugged" in capsys.readouterr().err

    record = json.loads((webui / RECORD).read_text())
    new_files = {rel for rel, sha in snapshot(webui).items() if sha != "dir"} - set(before) - {RECORD}
    assert not [rel for rel in new_files if rel.endswith(install.TEMP_SUFFIX)]
    assert new_files <= set(record["files"]) | set(record["pending"])
    assert run(webui, bundle) == 0
    assert "\n  kept " not in capsys.readouterr().out
    assert all(path.read_bytes().endswith(b"# v2\n") for path in (webui / "extensions/spanish_ft").rglob("*.py")
               if upgrade)
    assert run(webui, bundle, "--uninstall") == 0
    assert snapshot(webui) == before


def test_two_interruptions_in_a_row_still_recover(webui, bundle, monkeypatch, capsys):
    before = snapshot(webui)
    run(webui, bundle)
    upgrade_bundle(bundle)
    run_and_crash(webui, bundle, monkeypatch, 3)
    run_and_crash(webui, bundle, monkeypatch, 0)  # the files the first run wrote must stay ours
    capsys.readouterr()
    assert run(webui, bundle) == 0
    assert "\n  kept " not in capsys.readouterr().out
    assert run(webui, bundle, "--uninstall") == 0
    assert snapshot(webui) == before


def test_an_adapter_folder_is_never_half_upgraded(webui, bundle, capsys):
    run(webui, bundle)
    adapter = data_dir(webui) / "loras/mistral-fusionado"
    write(adapter / "adapter_config.json", '{"r": 8}\n')  # the user's own edit
    write(bundle / "loras/mistral-fusionado/adapter_model.safetensors", b"new weights")
    write(bundle / "loras/mistral-fusionado/training_record.json", "{}\n")

    assert run(webui, bundle) == 1
    assert (adapter / "adapter_model.safetensors").read_bytes() != b"new weights"
    assert not (adapter / "training_record.json").exists()
    assert "not mixing two adapters" in capsys.readouterr().out
    assert run(webui, bundle, "--force") == 0
    assert (adapter / "adapter_model.safetensors").read_bytes() == b"new weights"
    assert (adapter / "adapter_config.json").read_text() == '{"r": 32}\n'


def test_a_link_made_between_planning_and_writing_is_not_written_through(tmp_path, bundle, monkeypatch, capsys):
    webui = make_webui(tmp_path / "webui", "new")
    outside = write(tmp_path / "mine/Top-P.yaml", "top_p: 0.9\n").parent
    real_plan = install.plan

    def plan_then_link(target, *args):
        steps = real_plan(target, *args)
        presets = target.data / "presets"
        for path in presets.iterdir():
            path.unlink()
        presets.rmdir()
        presets.symlink_to(outside, target_is_directory=True)
        return steps

    monkeypatch.setattr(install, "plan", plan_then_link)
    assert run(webui, bundle) == 3
    assert "a symbolic link appeared on the way to" in capsys.readouterr().err
    assert [path.name for path in outside.iterdir()] == ["Top-P.yaml"]


def test_a_planted_temporary_link_is_removed_not_written_through(tmp_path, bundle):
    webui = make_webui(tmp_path / "webui", "new")
    secret = write(tmp_path / "home/.ssh/id_ed25519", "private key\n")
    planted = webui / f"user_data/presets/spanish_ft-Mistral.yaml{install.TEMP_SUFFIX}"
    planted.symlink_to(secret)
    assert run(webui, bundle) == 0
    assert secret.read_text() == "private key\n" and not os.path.lexists(planted)
    assert (webui / "user_data/presets/spanish_ft-Mistral.yaml").read_text() == "temperature: 0.7\n"


def test_an_unreadable_record_is_reported(webui, bundle, capsys):
    run(webui, bundle)
    write(webui / RECORD, "{not json")
    assert run(webui, bundle) == 2
    assert "delete it to start over" in capsys.readouterr().err


def test_the_real_bundle_installs_in_a_dry_run(tmp_path, capsys):
    webui = make_webui(tmp_path / "webui", "new")
    assert install.main(["--webui", str(webui), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "user_data/presets/spanish_ft-Mistral.yaml" in out
    assert "extensions/spanish_ft/training/__init__.py" in out
    assert "extensions/spanish_ft/spanish_ft_ext/webui.py" in out
    assert "extensions/spanish_ft/training/memory/configs/mistral-7b.json" in out
    assert "extensions/spanish_ft/training/train.py" not in out and "/sft_" not in out


def imported_training_modules(path: Path) -> set[str]:
    """The training.* names a file imports, at the top or inside a function (`from training.x import y`
    gives training.x and training.x.y: y may be a module)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return {name for name in names if name.split(".")[0] == "training"}


def module_file(name: str) -> Path | None:
    """The bundle file of module `name`, or None when the name is not a module (an attribute)."""
    path = ROOT / Path(*name.split("."))
    return next((file for file in (path.with_suffix(".py"), path / "__init__.py") if file.is_file()), None)


def test_the_installer_copies_every_training_module_the_extension_imports(tmp_path):
    """The extension's training.* imports, followed through the modules they import and their parent
    packages, all land in the webui's copy; so do the memory estimator's shipped configs."""
    webui = make_webui(tmp_path / "webui", "new")
    copied = set(install.collect_bundle(ROOT, install.locate_webui(webui, None)))
    extension = ROOT / "extensions/spanish_ft"
    todo = [(name, path) for path in sorted(extension.rglob("*.py")) for name in imported_training_modules(path)]
    listed = {entry.removesuffix(".py").split("/")[0] for entry in install.EXTENSION_TRAINING}
    assert todo and [name for name, _ in todo if name.split(".")[1] not in listed] == []  # the extension's own
    needed: dict[str, Path] = {}  # webui path of a needed training file: the file that needs it
    while todo:
        name, importer = todo.pop()
        file = module_file(name)
        rel = file and f"extensions/spanish_ft/{file.relative_to(ROOT).as_posix()}"
        if file is None or rel in needed:  # an attribute (training.families.FAMILIES), or seen
            continue
        needed[rel] = importer
        parent = name.rpartition(".")[0]
        todo += [(module, file) for module in imported_training_modules(file)] + ([(parent, file)] if parent else [])
    assert {f"extensions/spanish_ft/training/{rel}" for rel in (
        "__init__.py", "adapters/__init__.py", "adapters/fuse.py", "memory/estimate.py", "families.py")} <= set(needed)
    missing = {rel: needed[rel].relative_to(ROOT).as_posix() for rel in sorted(set(needed) - copied)}
    assert missing == {}, "not copied into the webui (needed by): install.EXTENSION_TRAINING lacks them"
    configs = {f"extensions/spanish_ft/training/memory/configs/{path.name}"
               for path in (ROOT / "training/memory/configs").glob("*.json")}
    assert configs and configs <= copied


def test_help_runs_standalone_and_documents_exit_codes():
    result = subprocess.run([sys.executable, str(ROOT / "install.py"), "--help"],
                            capture_output=True, text=True, timeout=60, check=True)
    for text in ("--webui", "--user-data-dir", "--dry-run", "--force", "--uninstall", "Exit codes", ".bak-"):
        assert text in result.stdout
