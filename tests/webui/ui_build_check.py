"""Build the extension's ui() inside gr.Blocks with a minimal fake `modules.shared` (test helper, not shipped).

Only for the UI-construction check: the fake webui holds just the components the extension
attaches listeners to (LoRA menu, model status, template, preset, mode, interface state)
and `shared.args`. Runs the hooks as the webui does (setup, ui, state_modifier, the chat hooks), runs a few
listeners through gradio's own processing (EVENTS), and prints a JSON summary of the built
page, of those events and of the modules loaded from the extension's folder, for
tests/test_extension_ui.py:

    python ui_build_check.py EXTENSION_DIR [--bundle-root DIR] [--as-package] [--multi-user]

--bundle-root puts a bundle checkout's `training` package on sys.path (without it, the one
install.py copied into EXTENSION_DIR is used); --as-package imports the script as the webui
does for its extensions/ folder (`extensions.spanish_ft.script`, from the current folder).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import sys
import tempfile
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import launch_webui  # noqa: E402  (makes gradio 4.37 importable with huggingface_hub 1.x before importing it)

gr = launch_webui.gr
# Listeners run as a browser event would run them, with their inputs: "Aplicar perfil" with no
# adapter applied, and two adapters the LoRA folder does not hold picked in the LoRA menu.
EVENTS = {"Aplicar perfil.click": [], "lora_menu.change": [["a", "b"]]}


def fake_shared(multi_user: bool, lora_dir: Path) -> types.ModuleType:
    modules = types.ModuleType("modules")
    modules.__path__ = []  # a package, so `from modules import shared` works
    shared = types.ModuleType("modules.shared")
    shared.__file__ = str(lora_dir.parent / "modules" / "shared.py")
    shared.args = argparse.Namespace(multi_user=multi_user, lora_dir=str(lora_dir), loader="Transformers")
    shared.gradio, shared.settings, shared.lora_names = {}, {}, []
    shared.model, shared.model_name, shared.generation_lock = None, "None", None
    shared.user_data_dir = lora_dir.parent
    shared.input_elements = ["mode", "instruction_template_str", "preset_menu"]
    modules.shared = shared
    sys.modules.update({"modules": modules, "modules.shared": shared})
    return shared


def build_webui_controls(shared) -> None:
    """The webui components the extension listens to or writes, as the webui declares them."""
    g = shared.gradio
    g["lora_menu"] = gr.Dropdown(multiselect=True, choices=["None", "a", "b"], value=[], label="LoRA(s)")
    g["lora_menu_apply"] = gr.Button("Apply LoRAs")
    g["model_status"] = gr.Markdown("Ready")
    g["mode"] = gr.Radio(choices=["instruct", "chat-instruct", "chat"], value=None, label="Mode")
    g["instruction_template"] = gr.Dropdown(choices=["None"], value="None", label="Saved instruction templates")
    g["instruction_template_str"] = gr.Textbox(label="Instruction template")
    g["preset_menu"] = gr.Dropdown(choices=["Top-P"], value="Top-P", label="Preset")
    g["interface_state"] = gr.State({})


def load_script(extension_dir: Path, as_package: bool):
    if as_package:
        sys.path.insert(0, str(Path.cwd()))
        return importlib.import_module(f"extensions.{extension_dir.name}.script")
    spec = importlib.util.spec_from_file_location("user_ext_spanish_ft", extension_dir / "script.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def modules_from(folder: Path, script_file: Path) -> list[str]:
    """Names in sys.modules of the modules loaded from `folder`, except the script (the webui names it)."""
    names = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve().is_relative_to(folder) and Path(file).resolve() != script_file:
            names.append(name)
    return sorted(names)


def component_names(demo, shared) -> dict:
    """{component id: the webui's name for it, else its elem_id, else a button's label}."""
    names = {}
    for component in demo.get_config_file()["components"]:
        props = component.get("props", {})
        label = props.get("value") if component.get("type") == "button" else None
        if props.get("elem_id") or label:
            names[component["id"]] = props.get("elem_id") or label
    return {**names, **{c._id: name for name, c in shared.gradio.items() if hasattr(c, "_id")}}


def run_events(demo, names: dict) -> dict:
    """{"target.event": {output: the value gradio sends to the browser}} for the listeners of EVENTS."""
    from gradio.state_holder import SessionState

    results = {}
    for index, dep in enumerate(demo.get_config_file()["dependencies"]):
        target, event = dep["targets"][0]
        key = f"{names.get(target, target)}.{event}"
        if key in EVENTS:
            data = asyncio.run(demo.process_api(index, EVENTS[key], SessionState(demo)))["data"]
            results[key] = dict(zip((str(names.get(o, o)) for o in dep["outputs"]), data, strict=True))
    return results


def summary(demo, shared) -> dict:
    config = demo.get_config_file()
    names = component_names(demo, shared)
    listeners = [{"targets": [[names.get(t[0], t[0]), t[1]] for t in dep["targets"]],
                  "outputs": [names.get(o, o) for o in dep["outputs"]]} for dep in config["dependencies"]]
    labels = [c.get("props", {}).get("label") or c.get("props", {}).get("value") for c in config["components"]]
    interactive = {c["props"].get("value"): c["props"].get("interactive") for c in config["components"]
                   if c.get("type") == "button"}
    return {"gradio": gr.__version__, "listeners": listeners, "labels": [str(x) for x in labels if x],
            "buttons": interactive, "training_file": sys.modules["training"].__file__,
            "events": run_events(demo, names)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("extension_dir", type=Path)
    parser.add_argument("--bundle-root", type=Path)
    parser.add_argument("--as-package", action="store_true")
    parser.add_argument("--multi-user", action="store_true")
    args = parser.parse_args()
    if args.bundle_root:
        sys.path.insert(0, str(args.bundle_root))
    webui = Path(tempfile.mkdtemp())
    (webui / "loras").mkdir()
    shared = fake_shared(args.multi_user, webui / "loras")
    extension = args.extension_dir.resolve()
    script = load_script(extension, args.as_package)
    script.setup()
    with gr.Blocks() as demo:
        shared.gradio["interface"] = demo
        build_webui_controls(shared)
        with gr.Tab(script.params["display_name"]):
            script.ui()
    state = {"mode": "instruct", "instruction_template_str": "x"}
    assert script.state_modifier(state) is state
    question = "¿Cuántas horas dura la jornada máxima de trabajo?"  # no adapter of ours active: Fuentes stays out
    assert script.chat_input_modifier(question, question, state) == (question, question)
    assert script.output_modifier("Ocho horas.", state, is_chat=True) == "Ocho horas."
    page = summary(demo, shared)
    page["extension_modules"] = modules_from(extension, extension / "script.py")
    print(json.dumps(page))


if __name__ == "__main__":
    main()
