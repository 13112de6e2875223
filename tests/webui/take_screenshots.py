"""Screenshots of the extension in a real webui, for docs/ (not shipped; needs Playwright + Chromium).

    python tests/webui/take_screenshots.py --webui /path/to/text-generation-webui \\
        --python /path/to/webui/venv/bin/python --out docs

Copies the webui to a temporary folder with a tiny model and tiny adapters
(scratch_webui.py), starts it with the extension, runs the user paths of ui_flows.py
(each asserts what the user should see) and saves one PNG per path.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ui_flows  # noqa: E402
from scratch_webui import prepare_webui, running_webui  # noqa: E402

SHOTS = ("extension-profile.png", "extension-guard.png", "extension-compare.png", "extension-memory.png",
         "extension-profile-parameters.png")  # the last one is written by flow_profile beside the first
MAX_BYTES = 500_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--webui", type=Path, required=True, help="a text-generation-webui checkout (read only)")
    parser.add_argument("--python", default=sys.executable, help="the webui's Python")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    profile, guard, compare, memory = (args.out / name for name in SHOTS[:4])
    with tempfile.TemporaryDirectory(prefix="spanish_ft-shots-") as tmp:
        root = prepare_webui(args.webui, Path(tmp) / "webui")
        with running_webui(root, args.python) as webui, ui_flows.browser_page(webui.ui) as page:
            ui_flows.flow_profile(page, profile)
            ui_flows.flow_guard(page, webui.api, guard)
            ui_flows.flow_compare(page, webui.api, compare)
            ui_flows.flow_memory(page, memory, source="mistral-7b")
    for name in SHOTS:
        size = (args.out / name).stat().st_size
        print(f"{args.out / name}: {size // 1000} KB")
        if size > MAX_BYTES:
            print(f"  larger than {MAX_BYTES // 1000} KB", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
