"""install.py never loses or exposes anything: links in the bundle are refused (not followed, so what they
point at never reaches the webui), a contradictory webui layout is refused, folders that are not the
installer's are never written into, and a tampered install record removes nothing. Every refusal happens
before the first write, exits 2, names the culprit path and the fix, and leaves every file as it was.

install.py runs as a user runs it: `python install.py --webui DIR` in a fresh process.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from harness import ROOT, assert_refused, fingerprint, read_only_command, user_folder, write

RECORD = "extensions/spanish_ft/.spanish_ft-install.json"
KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"


@pytest.fixture
def home(tmp_path) -> Path:
    """The user's home beside the webui: a private key and a thesis, which must never be read or touched."""
    write(tmp_path / "home/.ssh/id_ed25519", KEY)
    user_folder(tmp_path / "home/tesis")
    return tmp_path / "home"


@pytest.fixture
def bundle(tmp_path) -> Path:
    """A small bundle: the extension, its training modules, a template, a preset and one adapter."""
    root = tmp_path / "bundle"
    write(root / "pyproject.toml", '[project]\nname = "spanish_ft"\nversion = "1.0.0"\n')
    write(root / "extensions/spanish_ft/script.py", "params = {}\n")
    write(root / "extensions/spanish_ft/helpers/adapters.py", "X = 1\n")
    write(root / "training/__init__.py", '"""training"""\n')
    write(root / "training/adapters/fuse.py", "def fuse(): ...\n")
    write(root / "instruction-templates/spanish_ft-Mistral.yaml", "instruction_template: mistral\n")
    write(root / "presets/spanish_ft-Mistral.yaml", "temperature: 0.7\n")
    write(root / "loras/mistral-fusionado/adapter_config.json", '{"r": 32}\n')
    write(root / "loras/mistral-fusionado/adapter_model.safetensors", bytes(range(256)) * 16)
    return root


@pytest.fixture
def webui(tmp_path) -> Path:
    """A text-generation-webui of the 2025 layout (user_data/), with the user's own preset and adapter."""
    root = tmp_path / "webui"
    write(root / "server.py", "# webui\n")
    write(root / "modules/shared.py", "# webui\n")
    write(root / "extensions/example/script.py", "# the webui's own extension\n")
    write(root / "user_data/presets/Top-P.yaml", "top_p: 0.9\n")
    write(root / "user_data/instruction-templates/Alpaca.yaml", "instruction_template: alpaca\n")
    write(root / "user_data/loras/mi-adaptador/adapter_config.json", '{"r": 8}\n')
    return root


def install(webui: Path, bundle: Path | None, *flags: str, prefix: list[str] = ()) -> subprocess.CompletedProcess:
    command = [*prefix, sys.executable, str(ROOT / "install.py"), "--webui", str(webui), *flags]
    command += ["--bundle", str(bundle)] if bundle else []  # None: the real bundle, this checkout
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=webui.parent)


def refused(webui: Path, bundle: Path | None, culprit: Path, watched: list[Path], *flags: str, said=(),
            prefix: list[str] = ()) -> str:
    """Run the installer: exit 2, the culprit named with `said`, no traceback, every `watched` tree unchanged."""
    before = {folder: fingerprint(folder) for folder in watched}
    result = install(webui, bundle, *flags, prefix=prefix)
    assert_refused(result.returncode, result.stderr, culprit, expected_code=2)
    for text in ("fix: ", "nothing was written", *said):
        assert text in result.stderr, result.stderr
    assert {folder: fingerprint(folder) for folder in watched} == before
    return result.stderr


def installed(webui: Path, bundle: Path | None) -> dict:
    """Install for real (exit 0) and return the install record."""
    result = install(webui, bundle)
    assert result.returncode == 0, result.stderr
    return json.loads((webui / RECORD).read_text())


def tamper(webui: Path, key: str, entry: str, sha: str | None = None) -> None:
    record = json.loads((webui / RECORD).read_text())
    if key == "created_dirs":
        record[key].append(entry)
    else:
        record.setdefault(key, {})[entry] = sha
    (webui / RECORD).write_text(json.dumps(record))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- links in the bundle: refused, named, never followed ------------------------------------------

@pytest.mark.parametrize("flags", [[], ["--force"], ["--dry-run"]], ids=["install", "force", "dry-run"])
def test_a_link_to_a_private_key_in_an_adapter_folder_is_refused(webui, bundle, home, flags):
    link = bundle / "loras/mistral-fusionado/id_ed25519"
    link.symlink_to(home / ".ssh/id_ed25519")
    err = refused(webui, bundle, link, [webui, home, bundle], *flags, said=("symbolic link in the bundle",
                                                                              "replace the link by the real file"))
    assert KEY not in err


def test_a_linked_adapter_folder_is_refused(webui, bundle, home, tmp_path):
    elsewhere = write(tmp_path / "elsewhere/llama-fusionado/adapter_config.json", '{"r": 4}\n').parent
    write(elsewhere / "notas-privadas.txt", "privado\n")
    link = bundle / "loras/llama-fusionado"
    link.symlink_to(elsewhere, target_is_directory=True)
    refused(webui, bundle, link, [webui, home, tmp_path / "elsewhere"])
    assert not list(webui.rglob("notas-privadas.txt"))


def test_a_linked_preset_is_refused(webui, bundle, home):
    link = bundle / "presets/spanish_ft-Falcon.yaml"
    link.symlink_to(home / ".ssh/id_ed25519")
    refused(webui, bundle, link, [webui, home])


def test_every_link_in_the_bundle_is_named_in_one_run(webui, bundle, home):
    links = [bundle / "extensions/spanish_ft/helpers/clave.py", bundle / "training/adapters/extra",
             bundle / "instruction-templates/spanish_ft-Falcon.yaml", bundle / "loras/roto"]
    links[0].symlink_to(home / ".ssh/id_ed25519")
    links[1].symlink_to(home / ".ssh", target_is_directory=True)
    links[2].symlink_to(home / "tesis/tesis.tex")
    links[3].symlink_to(home / "no-existe")  # dangling: still named, never followed
    err = refused(webui, bundle, links[0], [webui, home])
    assert all(str(link) in err for link in links), err
    assert "Refused (4 problems above)" in err


def test_a_pipe_in_the_bundle_is_refused_without_hanging(webui, bundle, home):
    pipe = bundle / "extensions/spanish_ft/helpers/pipe.py"
    os.mkfifo(pipe)
    refused(webui, bundle, pipe, [webui, home], said=("not a regular file",))


def test_once_the_link_is_replaced_by_the_file_the_install_goes_through(webui, bundle, home):
    link = bundle / "loras/mistral-fusionado/README.md"
    link.symlink_to(home / "tesis/notas.txt")
    assert install(webui, bundle).returncode == 2
    link.unlink()
    write(link, (home / "tesis/notas.txt").read_bytes())
    record = installed(webui, bundle)
    assert "user_data/loras/mistral-fusionado/README.md" in record["files"]
    assert not [path for path in webui.rglob("*") if path.is_symlink()]


# --- a contradictory webui layout ----------------------------------------------------------------------

def test_a_user_data_file_is_refused_not_installed_into_the_old_layout(webui, bundle, home, tmp_path):
    for folder in ("presets", "instruction-templates", "loras"):
        os.rename(webui / "user_data" / folder, tmp_path / folder)
    (webui / "user_data").rmdir()
    write(webui / "user_data", "not a folder\n")
    refused(webui, bundle, webui / "user_data", [webui, home], said=("is not a folder", "--user-data-dir"))


def test_a_linked_user_data_is_refused_with_the_option_to_use(webui, bundle, home, tmp_path):
    real = tmp_path / "disco-grande/user_data"
    real.parent.mkdir()
    os.rename(webui / "user_data", real)
    (webui / "user_data").symlink_to(real, target_is_directory=True)
    refused(webui, bundle, webui / "user_data", [webui, home, real.parent], said=(f"--user-data-dir {real}",))
    assert install(webui, bundle, "--user-data-dir", str(real)).returncode == 0  # the fix it gives works
    assert (real / "presets/spanish_ft-Mistral.yaml").is_file()


def test_a_loras_file_where_the_folder_belongs_is_refused(webui, bundle, home):
    loras = webui / "user_data/loras"
    (loras / "mi-adaptador/adapter_config.json").unlink()
    (loras / "mi-adaptador").rmdir()
    loras.rmdir()
    write(loras, "a file where the webui keeps its adapters\n")
    refused(webui, bundle, loras, [webui, home], said=("is a file where the installer needs a folder",))


@pytest.mark.parametrize("flags", [[], ["--force"]], ids=["install", "force"])
def test_a_presets_folder_linked_outside_the_webui_is_refused(webui, bundle, home, tmp_path, flags):
    outside = tmp_path / "mis-presets"
    os.rename(webui / "user_data/presets", outside)
    (webui / "user_data/presets").symlink_to(outside, target_is_directory=True)
    refused(webui, bundle, webui / "user_data/presets", [webui, home, outside], *flags,
            said=(f"symbolic link (to {outside})",))


def test_a_destination_file_linked_to_a_private_key_is_refused_even_with_force(webui, bundle, home):
    link = webui / "user_data/presets/spanish_ft-Mistral.yaml"
    link.symlink_to(home / ".ssh/id_ed25519")
    refused(webui, bundle, link, [webui, home], "--force", said=("never writes, reads or removes",))
    assert (home / ".ssh/id_ed25519").read_text() == KEY


# --- folders that are not the installer's ------------------------------------------------------------

@pytest.mark.parametrize("flags", [[], ["--force"]], ids=["install", "force"])
def test_a_foreign_extension_folder_gets_none_of_the_bundle_files(webui, home, flags):
    foreign = user_folder(webui / "extensions/spanish_ft")  # someone's own extension of that name
    write(foreign / "script.py", "# another extension called spanish_ft\n")
    refused(webui, None, foreign, [webui, home], *flags, said=("no install record", "move it away"))
    assert sorted(path.name for path in foreign.iterdir()) == ["figuras", "notas.txt", "script.py", "tesis.tex"]


@pytest.mark.parametrize("flags", [[], ["--force"]], ids=["install", "force"])
def test_a_users_own_adapter_folder_of_the_same_name_is_refused(webui, bundle, home, flags):
    mine = write(webui / "user_data/loras/mistral-fusionado/adapter_config.json", '{"r": 64}\n').parent
    write(mine / "adapter_model.safetensors", b"my own weights")
    refused(webui, bundle, mine, [webui, home], *flags, said=("a folder of yours", "rename it or move it away"))


def test_an_empty_folder_of_the_same_name_is_used(webui, bundle):
    (webui / "user_data/loras/mistral-fusionado").mkdir()
    installed(webui, bundle)
    assert (webui / "user_data/loras/mistral-fusionado/adapter_config.json").read_text() == '{"r": 32}\n'


# --- a tampered install record: nothing removed, nothing written --------------------------------------

REMOVING = [["--uninstall"], ["--uninstall", "--force"], []]  # the runs that remove what the record lists
ESCAPES = {"dotdot": ("files", "../home/.ssh/id_ed25519"),
           "absolute": ("files", "{home}/.ssh/id_ed25519"),
           "not-normal": ("pending", "extensions/spanish_ft/../../../home/.ssh/id_ed25519"),
           "webui-own-file": ("files", "server.py"),
           "created-dir": ("created_dirs", "../home/tesis/figuras")}


@pytest.mark.parametrize("flags", REMOVING, ids=["uninstall", "force", "upgrade"])
@pytest.mark.parametrize("escape", ESCAPES)
def test_a_record_listing_paths_outside_the_installers_folders_removes_nothing(webui, bundle, home, escape, flags):
    installed(webui, bundle)
    key, entry = ESCAPES[escape]
    entry = entry.format(home=home)
    target = Path(os.path.normpath(webui / entry))
    tamper(webui, key, entry, sha256(target) if target.is_file() else None)  # the file's real hash: it would match
    write(webui / "user_data/presets/spanish_ft-Mistral.yaml", "temperature: 0.7  # changed\n")  # something to do
    refused(webui, bundle, webui / RECORD, [webui, home], *flags, said=("is tampered", repr(entry)))
    assert target.exists()


@pytest.mark.parametrize("flags", REMOVING, ids=["uninstall", "force", "upgrade"])
def test_a_record_entry_through_a_linked_folder_removes_nothing(webui, bundle, home, flags):
    installed(webui, bundle)
    link = webui / "extensions/spanish_ft/cache"
    link.symlink_to(home / ".ssh", target_is_directory=True)
    tamper(webui, "files", "extensions/spanish_ft/cache/id_ed25519", sha256(home / ".ssh/id_ed25519"))
    refused(webui, bundle, link, [webui, home], *flags, said=("tampered record", "nothing is removed"))
    assert (home / ".ssh/id_ed25519").read_text() == KEY


def test_an_installed_adapter_moved_to_another_disk_and_linked_back_is_not_emptied(webui, bundle, tmp_path):
    """The record is genuine but the tree changed: uninstall must not delete the adapter's files on the other disk."""
    installed(webui, bundle)
    disk = tmp_path / "disco/mistral-fusionado"
    disk.parent.mkdir()
    os.rename(webui / "user_data/loras/mistral-fusionado", disk)
    (webui / "user_data/loras/mistral-fusionado").symlink_to(disk, target_is_directory=True)
    refused(webui, bundle, webui / "user_data/loras/mistral-fusionado", [webui, disk.parent], "--uninstall")
    assert sorted(path.name for path in disk.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]


def test_a_linked_install_record_is_refused(webui, bundle, home):
    installed(webui, bundle)
    record = webui / RECORD
    outside = write(home / "record.json", record.read_bytes())
    record.unlink()
    record.symlink_to(outside)
    refused(webui, bundle, record, [webui, home], "--uninstall")


# --- the webui folder itself ---------------------------------------------------------------------------

def test_a_read_only_webui_is_refused_before_the_first_write(webui, bundle, home):
    prefix = read_only_command(webui)
    if prefix is None:
        pytest.skip("cannot make a read-only folder here (root without unshare and mount)")
    folders = [webui, *(path for path in webui.rglob("*") if path.is_dir())]
    for folder in folders:
        folder.chmod(0o555)
    try:
        refused(webui, bundle, webui / "extensions", [webui, home], prefix=prefix,
                said=("is read-only", "chmod u+w", str(webui / "user_data/presets")))
    finally:
        for folder in folders:
            folder.chmod(0o755)


@pytest.mark.parametrize("case", ["a-file", "no-server", "missing"])
def test_a_webui_path_that_is_not_a_webui_is_refused(tmp_path, bundle, home, case):
    path = tmp_path / "webui"
    if case == "a-file":
        write(path, "not a folder\n")
    elif case == "no-server":
        write(path / "modules/shared.py", "# webui\n")
    before = fingerprint(tmp_path)
    result = install(path, bundle)
    assert_refused(result.returncode, result.stderr, path, expected_code=2)
    said = {"a-file": "is a file, not a folder", "no-server": "no server.py in", "missing": "no such folder"}[case]
    assert said in result.stderr
    assert fingerprint(tmp_path) == before and not (tmp_path / "extensions").exists()
