"""Opt-in: the bundle in a real text-generation-webui (set TGW_DIR to a webui checkout).

TGW_PYTHON names the webui's Python (default: this one). The test copies the webui to a
temporary folder (it never touches TGW_DIR itself), installs the bundle with install.py,
adds a tiny llama model and tiny adapters with spanish_ft training records
(tests/webui/scratch_webui.py), starts the webui on 127.0.0.1 on the CPU with the model,
`--lora llama2-fusionado` and the extension, and checks:
- the prompt the webui builds in instruct mode (/v1/internal/chat-prompt) equals
  `python -m training render` for the same conversation, for every shipped template;
- the extension loads, applies the adapter's profile at start-up, reads its params from
  settings.yaml, and warns in the console when two adapters are loaded through the API;
- in headless Chromium (when Playwright and /usr/bin/chromium are there): profile, guard,
  comparison and memory panel, as a user drives them (tests/webui/ui_flows.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "webui"))
from scratch_webui import ADAPTERS, FUSED, prepare_webui, running_webui  # noqa: E402

pytestmark = pytest.mark.webui
ROOT = Path(__file__).resolve().parents[1]
TGW_DIR = os.environ.get("TGW_DIR")
CONVERSATION = [
    {"role": "user", "content": "¿Cuál es la capital de Ecuador?"},
    {"role": "assistant", "content": "La capital de Ecuador es Quito."},
    {"role": "user", "content": "¿Qué dice el artículo 71 de la Constitución?"},
]
# settings.yaml overrides of the extension's params (`<extension>-<key>`, modules/extensions.py)
SETTINGS = "spanish_ft-compare_seed: 7\nspanish_ft-memory_rank: 8\n"


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def webui(tmp_path_factory):
    if not TGW_DIR:
        pytest.skip("set TGW_DIR to a text-generation-webui checkout to run the integration test")
    root = prepare_webui(Path(TGW_DIR), tmp_path_factory.mktemp("tgw") / "webui", settings=SETTINGS)
    python = os.environ.get("TGW_PYTHON", sys.executable)
    with running_webui(root, python, "--lora", FUSED) as running:
        yield {"api": running.api, "ui": running.ui, "root": root, "log": running.log}


def render_cli(template: Path, tmp_path: Path) -> str:
    conversation = tmp_path / "conversation.json"
    conversation.write_text(json.dumps(CONVERSATION, ensure_ascii=False), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "training", "render", str(template), str(conversation),
                           "--generation-prompt"], cwd=ROOT, capture_output=True, text=True, check=True)
    return done.stdout


@pytest.mark.parametrize("template", sorted((ROOT / "instruction-templates").glob("*.yaml")), ids=lambda p: p.stem)
def test_webui_instruct_prompt_equals_render_cli(webui, template, tmp_path):
    body = {"messages": CONVERSATION, "mode": "instruct", "instruction_template": template.stem, "max_tokens": 16}
    webui_prompt = post(webui["api"] + "/v1/internal/chat-prompt", body)["prompt"]
    assert webui_prompt == render_cli(template, tmp_path)


def test_extension_loaded_without_errors(webui):
    log = webui["log"].read_text()
    assert 'Loading the extension "spanish_ft"' in log
    assert "Failed to load the extension" not in log


def test_adapter_given_at_startup_gets_its_profile(webui, tmp_path):
    """--lora llama2-fusionado: the API's default instruct template is the adapter's."""
    body = {"messages": CONVERSATION, "mode": "instruct", "max_tokens": 16}
    prompt = post(webui["api"] + "/v1/internal/chat-prompt", body)["prompt"]
    assert prompt == render_cli(ROOT / "instruction-templates" / "spanish_ft-Llama-2-chat.yaml", tmp_path)
    assert "spanish_ft: al inicio (--lora). Perfil de «llama2-fusionado» aplicado" in webui["log"].read_text()


def test_params_are_read_from_settings_yaml(webui):
    components = get(webui["ui"] + "/config")["components"]
    values = {c["props"].get("label"): c["props"].get("value") for c in components if c.get("props")}
    assert values["Semilla"] == 7 and values["Rango LoRA (r)"] == 8


def chat(webui) -> None:
    body = {"messages": CONVERSATION[:1], "mode": "instruct", "instruction_template": "spanish_ft-Llama-2-chat",
            "preset": "spanish_ft-Llama-2-chat", "seed": 1, "max_tokens": 4}
    assert post(webui["api"] + "/v1/chat/completions", body)["choices"]


def test_two_adapters_through_the_api_are_reported_and_the_fused_adapter_fixes_it(webui):
    guard = "spanish_ft: Has elegido"
    try:  # the webui crashes on two equal-rank adapters, or keeps only the first when it sees other ranks
        post(webui["api"] + "/v1/internal/lora/load", {"lora_names": list(ADAPTERS)})
    except urllib.error.HTTPError:
        pass
    chat(webui)
    log = webui["log"].read_text()
    warning = log[log.index(guard):]
    assert all(name in warning[:300] for name in ADAPTERS) and "/v1/internal/lora/unload" in warning
    post(webui["api"] + "/v1/internal/lora/unload", {})
    post(webui["api"] + "/v1/internal/lora/load", {"lora_names": [FUSED]})
    assert get(webui["api"] + "/v1/internal/model/info")["lora_names"] == [FUSED]
    seen = len(webui["log"].read_text())
    chat(webui)
    assert guard not in webui["log"].read_text()[seen:]
    assert "la plantilla en uso no es" not in webui["log"].read_text()[seen:]  # the adapter's own template


def memory_cli(config: Path, method: str, bits: int, seq_len: int, batch: int, rank: int) -> dict:
    command = [sys.executable, "-m", "training", "memory", str(config), "--method", method, "--bits", str(bits),
               "--seq-len", str(seq_len), "--batch", str(batch), "--rank", str(rank), "--json"]
    return json.loads(subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout)


def test_user_paths_in_a_browser(webui):
    """Profile, guard, comparison and memory panel, driven in headless Chromium like a user would."""
    pytest.importorskip("playwright")
    if not shutil.which("chromium") and not Path("/usr/bin/chromium").exists():
        pytest.skip("no Chromium (apt-get install chromium)")
    import ui_flows

    sys.path.insert(0, str(ROOT / "extensions" / "spanish_ft"))
    from spanish_ft_ext.memory import SCENARIOS, gib

    with ui_flows.browser_page(webui["ui"]) as page:
        ui_flows.flow_profile(page, adapter="llama2-instrucciones")
        ui_flows.flow_guard(page, webui["api"])
        export = ui_flows.flow_compare(page, webui["api"])
        table = ui_flows.flow_memory(page)
    assert "**Pregunta:** " + ui_flows.QUESTION in export and "- semilla: `7`" in export
    for name in ("modelo base (sin adaptadores)", *ADAPTERS, FUSED):
        assert f"| {name} |" in export
    rows = {line.split("\t")[0]: line.split("\t") for line in table.splitlines()}
    config = webui["root"] / "user_data" / "models" / "tiny-llama" / "config.json"
    for label, method, bits in SCENARIOS:
        assert rows[label][-1] == gib(memory_cli(config, method, bits, 2048, 1, 8)["total_bytes"]), label
