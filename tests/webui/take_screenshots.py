"""Screenshots of the extension in a real webui, for docs/ (not shipped; needs Playwright + Chromium).

    python tests/webui/take_screenshots.py --webui /path/to/text-generation-webui \\
        --python /path/to/webui/venv/bin/python --out docs [--demo-model DIR] [--lineup tiny]

Copies the webui to a temporary folder with the CPU demo model, Gemma-3-270M, and the bundle's
shipped demo adapters (loras/gemma3-270m-*; --demo-model names a converted model folder to copy,
default $SPANISH_FT_DEMO_MODEL or fetch-demo-model's cached output, scratch_webui.py), starts it
with the extension, runs the user paths of ui_flows.py (each asserts what the user should see)
and saves one PNG per path: the profile the extension applies to the fused adapter, an instruct
chat in Spanish with that profile, a legal question answered with its Fuentes, the guard against
two adapters, the side-by-side comparison and the memory table of the loaded model. `--lineup tiny`
uses the tiny stand-ins instead (a tiny random llama: fast, but its answers are noise; the memory
table is Mistral-7B's).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ui_flows  # noqa: E402
from lineups import DEMO, TINY  # noqa: E402
from scratch_webui import demo_model_dir, prepare_demo_webui, prepare_webui, running_webui  # noqa: E402

# the last one is written by flow_profile
SHOTS = ("extension-profile.png", "demo-chat.png", "extension-guard.png", "extension-compare.png",
         "extension-memory.png", "demo-fuentes.png", "extension-profile-parameters.png")
MAX_BYTES = 500_000


def shoot(root: Path, python: str, lineup, out: Path) -> str:
    """Run the user paths in the prepared webui at root, saving SHOTS to out; returns the chat's answer."""
    profile, chat, guard, compare, memory, fuentes = (out / name for name in SHOTS[:6])
    with running_webui(root, python, model=lineup.model) as webui, ui_flows.browser_page(webui.ui) as page:
        ui_flows.flow_profile(page, lineup, profile)
        answer = ui_flows.flow_chat(page, shot=chat)
        ui_flows.flow_profile_kept(page)
        ui_flows.flow_fuentes(page, shot=fuentes)
        ui_flows.flow_guard(page, webui.api, lineup, guard)
        ui_flows.flow_compare(page, webui.api, compare)
        ui_flows.flow_memory(page, memory, source="mistral-7b" if lineup is TINY else "")
    return answer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--webui", type=Path, required=True, help="a text-generation-webui checkout (read only)")
    parser.add_argument("--python", default=sys.executable, help="the webui's Python")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--lineup", choices=("demo", "tiny"), default="demo",
                        help="demo: Gemma-3-270M + the shipped demo adapters (default); tiny: tiny stand-ins")
    parser.add_argument("--demo-model", type=Path, help="a converted demo model folder to copy (read only)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="spanish_ft-shots-") as tmp:
        root = Path(tmp) / "webui"
        if args.lineup == "demo":
            lineup = DEMO
            prepare_demo_webui(args.webui, root, args.demo_model or demo_model_dir())
        else:
            lineup = TINY
            prepare_webui(args.webui, root)
        answer = shoot(root, args.python, lineup, args.out)
    print(f"{lineup.model} + {lineup.fused}, asked {ui_flows.QUESTION!r}, answered: {answer!r}")
    for name in SHOTS:
        size = (args.out / name).stat().st_size
        print(f"{args.out / name}: {size // 1000} KB")
        if size > MAX_BYTES:
            print(f"  larger than {MAX_BYTES // 1000} KB", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
