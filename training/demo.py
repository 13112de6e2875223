"""`python -m training demo`: the bundle's main job on a CPU, end to end.

Steps (each reuses its finished output when re-run):
1. install the bundle into a webui (`--webui DIR`, or a throwaway webui skeleton in the
   output folder) with the bundle's own install.py;
2. render, from the templates as installed in that webui, the Spanish prompt the webui
   builds for the same question for each model family.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from training.templates import load_template

BUNDLE = Path(__file__).resolve().parents[1]
DEMO_QUESTION = "¿Cuál es la capital de Ecuador?"
FAMILY_TEMPLATES = {
    "mistral": "spanish_ft-Mistral",
    "llama2": "spanish_ft-Llama-2-chat",
    "falcon": "spanish_ft-Falcon",
    "demo (SmolLM2)": "spanish_ft-ChatML",
}


def add_arguments(parser) -> None:
    parser.add_argument("--webui", type=Path, help="a text-generation-webui folder to install the bundle into")
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="where the demo writes (default: demo-output)")


def run(args) -> int:
    webui = args.webui or make_webui_skeleton(args.out / "webui-skeleton")
    templates_dir = install_bundle(webui)
    print("\n== Prompts the webui builds in instruct mode for:", DEMO_QUESTION)
    for family, name in FAMILY_TEMPLATES.items():
        prompt = render_demo_prompt(templates_dir / f"{name}.yaml")
        print(f"\n--- {family}: template {name} ---\n{prompt}")
    return 0


def make_webui_skeleton(path: Path) -> Path:
    """The files by which install.py recognises a webui (2025 layout), nothing else."""
    (path / "modules").mkdir(parents=True, exist_ok=True)
    for sub in ("instruction-templates", "presets", "loras", "models", "extensions"):
        (path / "user_data" / sub).mkdir(parents=True, exist_ok=True)
    server = path / "server.py"
    if not server.exists():
        server.write_text("# stand-in for text-generation-webui's server.py (spanish_ft demo)\n", encoding="utf-8")
    return path


def install_bundle(webui: Path) -> Path:
    """Run the bundle's install.py into `webui`; return the installed templates folder."""
    installer = _load_installer()
    code = installer.main(["--webui", str(webui)])
    if code not in (0, 1):
        raise ValueError(f"install.py failed with exit code {code} for {webui}")
    return installer.locate_webui(webui, None).data / "instruction-templates"


def _load_installer():
    spec = importlib.util.spec_from_file_location("spanish_ft_install", BUNDLE / "install.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def render_demo_prompt(template_path: Path) -> str:
    return load_template(template_path).render([{"role": "user", "content": DEMO_QUESTION}], add_generation_prompt=True)
