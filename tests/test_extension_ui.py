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
PACKAGE = "spanish_ft_ext"  # the one top-level name the extension adds to the webui's Python
CHECK = Path(__file__).resolve().parent / "webui" / "ui_build_check.py"
PYTHONS = [sys.executable] + [p for p in os.environ.get("SFT_EXTRA_GRADIO_PYTHONS", "").split(os.pathsep) if p]
# The hooks' signatures in the webui's extensions/example/script.py (read from TGW_DIR when set).
EXAMPLE_SIGNATURES = {"setup": [], "ui": [], "state_modifier": ["state"],
                      "chat_input_modifier": ["text", "visible_text", "state"],
                      "output_modifier": ["string", "state", "is_chat"]}


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
    """Only Fuentes' two search packages, whose own requirements are numpy unpinned (already in the webui):
    the webui's "install extension requirements" adds them and upgrades nothing."""
    from importlib.metadata import requires

    lines = (EXTENSION / "requirements.txt").read_text(encoding="utf-8").splitlines()
    packages = [line.split(">=")[0].strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    assert packages == ["bm25s", "PyStemmer"]
    for package in packages:
        needed = [r for r in requires(package) or [] if "extra ==" not in r]
        assert needed in ([], ["numpy"]), (package, needed)


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


@pytest.mark.parametrize("python", PYTHONS)
def test_handlers_change_only_the_components_they_name(python):
    """Run through gradio's own processing: each handler's {component: update} reaches the right output."""
    events = build(python, EXTENSION)["events"]
    unchanged = {"__type__": "update"}
    apply = events["Aplicar perfil.click"]  # no adapter applied: the webui's controls stay as they are
    assert [apply[name] for name in ("instruction_template", "instruction_template_str", "preset_menu", "mode")] == [
        unchanged] * 4
    assert "⚠️ aplica exactamente un adaptador en Model → LoRA(s)" in apply["sft-status"]
    guard = events["lora_menu.change"]  # two adapters picked: the guard shows, the webui's status says why
    assert guard["sft-guard"]["visible"] and "### ⚠️ Varios adaptadores" in guard["sft-guard"]["value"]
    assert guard["model_status"].startswith("⚠️ spanish_ft: Has elegido 2 adaptadores a la vez (a, b)")
    assert guard["Fusionar ahora"]["visible"] and not guard["Fusionar ahora"]["interactive"]  # not in the folder


def test_the_extension_adds_one_top_level_name_to_the_webui_process():
    """Hooks run and UI built: every module loaded from the extension's folder is the package or one of its own."""
    page = build(sys.executable, EXTENSION)
    files = sorted((EXTENSION / PACKAGE).glob("*.py"))
    package_modules = {f"{PACKAGE}.{path.stem}" for path in files if path.stem != "__init__"}
    assert set(page["extension_modules"]) == {PACKAGE, *package_modules}  # all of them imported, nothing else
    assert {name.split(".")[0] for name in page["extension_modules"]} == {PACKAGE}
    assert not [name for name in page["extension_modules"] if name.split(".")[-1].startswith("sft_")]


@pytest.fixture(scope="module")
def installed_webui(tmp_path_factory) -> Path:
    """A webui skeleton with the bundle installed by install.py (the repo is not on its path)."""
    webui = tmp_path_factory.mktemp("tgw") / "webui"
    (webui / "modules").mkdir(parents=True)
    (webui / "user_data").mkdir()
    (webui / "server.py").write_text("# webui\n", encoding="utf-8")
    subprocess.run([sys.executable, str(ROOT / "install.py"), "--webui", str(webui)], check=True, capture_output=True)
    return webui


def test_the_installed_copy_gives_the_same_fuentes_as_training(installed_webui, tmp_path):
    """Fuentes in the webui reads the corpus copied beside the extension and renders the user's turn
    exactly as training does (retrieval needs bm25s and PyStemmer, extensions/spanish_ft/requirements.txt)."""
    from training.retrieval.fuentes import grounded_turn
    from training.retrieval.search import retrieve

    question = "¿Cuántas horas dura la jornada máxima de trabajo?"
    extension = installed_webui / "extensions" / "spanish_ft"
    code = ("import sys, json; sys.path.insert(0, sys.argv[1]); from spanish_ft_ext.fuentes import ground; "
            "import training; print(json.dumps([training.__file__, ground(sys.argv[2], 3).user]))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"SPANISH_FT_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", code, str(extension), question], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    where, turn = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(where).is_relative_to(extension) and turn == grounded_turn(question, retrieve(question, 3))


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
    assert {name.split(".")[0] for name in page["extension_modules"]} == {PACKAGE, "training"}


IMPORT_TRAINING_COPY = """
import importlib, json, sys
from pathlib import Path
extension = Path(sys.argv[1])
sys.path.insert(0, str(extension))
for path in sorted((extension / "training").rglob("*.py")):
    parts = path.relative_to(extension).with_suffix("").parts
    importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
print(json.dumps({name: module.__file__ for name, module in sys.modules.items() if name.split(".")[0] == "training"}))
"""


def test_the_installed_training_copy_needs_nothing_of_training_outside_it(installed_webui):
    """Each copied module imports, and every training.* module loaded is the copy's: a development
    environment's editable install of the bundle must not fill a gap from the checkout."""
    extension = installed_webui / "extensions" / "spanish_ft"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", IMPORT_TRAINING_COPY, str(extension)], cwd=installed_webui, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    outside = {name: file for name, file in loaded.items()
               if not Path(file).resolve().is_relative_to((extension / "training").resolve())}
    assert outside == {}
