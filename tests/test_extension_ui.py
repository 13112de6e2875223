"""The extension as the webui sees it, without a webui: hooks, params, UI construction, the installed copy.

The UI is built inside gr.Blocks with a minimal fake `modules.shared` (tests/webui/ui_build_check.py,
in a subprocess) with this interpreter's gradio, and with every interpreter listed in
SFT_EXTRA_GRADIO_PYTHONS (os.pathsep-separated; e.g. the webui's venv with gradio 4.37 and one
with the latest gradio). The real webui is exercised by the opt-in test_webui_integration.py.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXTENSION = ROOT / "extensions" / "spanish_ft"
CHECK = Path(__file__).resolve().parent / "webui" / "ui_build_check.py"
PYTHONS = [sys.executable] + [p for p in os.environ.get("SFT_EXTRA_GRADIO_PYTHONS", "").split(os.pathsep) if p]
# The hooks' signatures in the webui's extensions/example/script.py (read from TGW_DIR when set).
EXAMPLE_SIGNATURES = {"setup": [], "ui": [], "state_modifier": ["state"]}


def load_script():
    spec = importlib.util.spec_from_file_location("spanish_ft_script_under_test", EXTENSION / "script.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def example_signatures() -> dict[str, list[str]]:
    tgw = os.environ.get("TGW_DIR")
    if not tgw:
        return EXAMPLE_SIGNATURES
    tree = ast.parse((Path(tgw) / "extensions" / "example" / "script.py").read_text(encoding="utf-8"))
    return {f.name: [a.arg for a in f.args.args] for f in tree.body if isinstance(f, ast.FunctionDef)}


def test_hooks_keep_the_webui_signatures_and_params_are_documented():
    script = load_script()
    hooks = {name: obj for name, obj in vars(script).items()
             if inspect.isfunction(obj) and obj.__module__ == script.__name__}
    expected = example_signatures()
    assert set(hooks) <= set(expected), f"not webui hooks: {set(hooks) - set(expected)}"
    for name, function in hooks.items():
        assert list(inspect.signature(function).parameters) == expected[name], name
    source = (EXTENSION / "script.py").read_text(encoding="utf-8")
    for key in script.params:  # each key has a comment (or docstring line) right above it
        line = next(i for i, text in enumerate(source.splitlines()) if text.strip().startswith(f'"{key}":'))
        assert source.splitlines()[line - 1].strip().startswith(("#", '"')), key
    assert script.params["is_tab"] is True and script.params["auto_profile"] is True


def test_requirements_install_nothing_that_could_move_the_webui_pins():
    lines = (EXTENSION / "requirements.txt").read_text(encoding="utf-8").splitlines()
    assert [line for line in lines if line.strip() and not line.lstrip().startswith("#")] == []


def build(python: str, extension: Path, *options: str, cwd: Path | None = None, bundle: Path | None = ROOT) -> dict:
    probe = f"import sys; sys.path.insert(0, {str(CHECK.parent)!r}); import launch_webui"  # gradio, hub-1.x-proofed
    if subprocess.run([python, "-c", probe], capture_output=True).returncode != 0:
        pytest.skip(f"{python} has no gradio (pip install -e '.[ui]')")
    command = [python, str(CHECK), str(extension), *options] + (["--bundle-root", str(bundle)] if bundle else [])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(command, cwd=cwd or ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def listener(page: dict, target: str, event: str) -> dict:
    found = [dep for dep in page["listeners"] if [target, event] in dep["targets"]]
    assert len(found) == 1, f"{target}.{event}: {found}"
    return found[0]


@pytest.mark.parametrize("python", PYTHONS)
def test_ui_builds_and_listens_to_the_webui_controls(python):
    page = build(python, EXTENSION)
    for label in ("Adaptador", "Comparar", "Memoria", "Aplicar perfil", "Fusionar ahora", "Pregunta", "Calcular"):
        assert label in page["labels"], (page["gradio"], label)
    profile = ["instruction_template", "instruction_template_str", "preset_menu", "mode"]
    assert listener(page, "model_status", "change")["outputs"][:4] == profile
    assert "model_status" in listener(page, "lora_menu", "change")["outputs"]
    assert all(page["buttons"][name] for name in ("Comparar", "Fusionar ahora", "Cargar el adaptador fusionado"))


@pytest.mark.parametrize("python", PYTHONS)
def test_multi_user_mode_disables_the_controls_that_write_files_or_switch_adapters(python):
    page = build(python, EXTENSION, "--multi-user")
    assert not any(page["buttons"][name] for name in ("Comparar", "Fusionar ahora", "Cargar el adaptador fusionado"))
    assert page["buttons"]["Aplicar perfil"] and any("multiusuario" in label for label in page["labels"])


@pytest.fixture(scope="module")
def installed_webui(tmp_path_factory) -> Path:
    """A webui skeleton with the bundle installed by install.py (the repo is not on its path)."""
    webui = tmp_path_factory.mktemp("tgw") / "webui"
    (webui / "modules").mkdir(parents=True)
    (webui / "user_data").mkdir()
    (webui / "server.py").write_text("# webui\n", encoding="utf-8")
    subprocess.run([sys.executable, str(ROOT / "install.py"), "--webui", str(webui)], check=True, capture_output=True)
    return webui


@pytest.mark.parametrize("where", ["extensions", "user_data/extensions"])
def test_installed_copy_works_without_the_bundle_checkout(installed_webui, where):
    extension = installed_webui / "extensions" / "spanish_ft"
    if where != "extensions":  # the webui's other place for extensions: script.py loaded with no parent package
        copy = installed_webui / where / "spanish_ft"
        shutil.copytree(extension, copy, dirs_exist_ok=True)
        extension = copy
    options = ["--as-package"] if where == "extensions" else []
    page = build(sys.executable, extension, *options, cwd=installed_webui, bundle=None)
    assert Path(page["training_file"]).resolve() == (extension / "training" / "__init__.py").resolve()
    assert "Aplicar perfil" in page["labels"]
