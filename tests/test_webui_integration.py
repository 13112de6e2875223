"""Opt-in: the bundle in a real text-generation-webui (set TGW_DIR to a webui checkout).

TGW_PYTHON names the webui's Python (default: this one). The test copies the webui to a
temporary folder (it never touches TGW_DIR itself), installs the bundle with install.py,
starts the webui on 127.0.0.1 on the CPU with a tiny model and the extension, and checks
that the prompt the webui builds in instruct mode (/v1/internal/chat-prompt) equals
`python -m training render` for the same conversation, for every shipped template.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from tiny import build_model_dir

pytestmark = pytest.mark.webui
ROOT = Path(__file__).resolve().parents[1]
TGW_DIR = os.environ.get("TGW_DIR")
LAUNCHER = Path(__file__).resolve().parent / "webui" / "launch_webui.py"
CONVERSATION = [
    {"role": "user", "content": "¿Cuál es la capital de Ecuador?"},
    {"role": "assistant", "content": "La capital de Ecuador es Quito."},
    {"role": "user", "content": "¿Qué dice el artículo 71 de la Constitución?"},
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def wait_ready(url: str, process: subprocess.Popen, log: Path, seconds: int = 180) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the webui exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(1)
    pytest.fail(f"the webui did not answer {url} in {seconds} s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def webui(tmp_path_factory):
    if not TGW_DIR:
        pytest.skip("set TGW_DIR to a text-generation-webui checkout to run the integration test")
    root = tmp_path_factory.mktemp("tgw") / "webui"
    shutil.copytree(TGW_DIR, root, ignore=shutil.ignore_patterns("models", "loras", ".git", "__pycache__"),
                    symlinks=True)
    for sub in ("models", "loras"):
        (root / "user_data" / sub).mkdir(parents=True, exist_ok=True)
    build_model_dir("llama2", root / "user_data" / "models" / "tiny-llama")
    subprocess.run([sys.executable, str(ROOT / "install.py"), "--webui", str(root)], check=True)
    api_port, ui_port = free_port(), free_port()
    log = root / "webui.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    python = os.environ.get("TGW_PYTHON", sys.executable)
    command = [python, str(LAUNCHER), "--cpu", "--loader", "Transformers", "--model", "tiny-llama",
               "--extensions", "spanish_ft", "--api", "--api-port", str(api_port),
               "--listen-port", str(ui_port), "--verbose"]
    with open(log, "w") as handle:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=handle, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{api_port}/v1/internal/health", process, log)
        yield {"api": f"http://127.0.0.1:{api_port}", "ui": f"http://127.0.0.1:{ui_port}", "root": root, "log": log}
    finally:
        process.terminate()
        process.wait(timeout=30)


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
