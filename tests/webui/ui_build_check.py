"""Build the extension's ui() inside gr.Blocks with a minimal fake `modules.shared` (test helper, not shipped).

Only for the UI-construction check: the fake webui holds just the components the extension
attaches listeners to (LoRA menu, model status, template, preset, mode, interface state)
and `shared.args`. Prints a JSON summary of the built page for tests/test_extension_ui.py:

    python ui_build_check.py EXTENSION_DIR [--bundle-root DIR] [--as-package] [--multi-user]

--bundle-root puts a bundle checkout's `training` package on sys.path (without it, the one
install.py copied into EXTENSION_DIR is used); --as-package imports the script as the webui
does for its extensions/ folder (`extensions.spanish_ft.script`, from the current folder).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import launch_webui  # noqa: E402  (makes gradio 4.37 importable with huggingface_hub 1.x before importing it)

gr = launch_webui.gr


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


def summary(demo, shared) -> dict:
    config = demo.get_config_file()
    ids = {id(component): component._id for component in shared.gradio.values() if hasattr(component, "_id")}
    names = {ids[id(component)]: name for name, component in shared.gradio.items() if id(component) in ids}
    listeners = [{"targets": [[names.get(t[0], t[0]), t[1]] for t in dep["targets"]],
                  "outputs": [names.get(o, o) for o in dep["outputs"]]} for dep in config["dependencies"]]
    labels = [c.get("props", {}).get("label") or c.get("props", {}).get("value") for c in config["components"]]
    interactive = {c["props"].get("value"): c["props"].get("interactive") for c in config["components"]
                   if c.get("type") == "button"}
    return {"gradio": gr.__version__, "listeners": listeners, "labels": [str(x) for x in labels if x],
            "buttons": interactive, "training_file": sys.modules["training"].__file__}


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
    script = load_script(args.extension_dir.resolve(), args.as_package)
    with gr.Blocks() as demo:
        shared.gradio["interface"] = demo
        build_webui_controls(shared)
        with gr.Tab(script.params["display_name"]):
            script.ui()
    print(json.dumps(summary(demo, shared)))


if __name__ == "__main__":
    main()
