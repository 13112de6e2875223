"""A scratch copy of a real text-generation-webui with the bundle, a tiny model and tiny adapters (test helper).

Used by the opt-in integration test and by take_screenshots.py. The copy never touches the
source checkout; the tiny llama model and three LoRA adapters with spanish_ft training
records (instrucciones, leyes-ec, and fusionado made from those two by the bundle's fuser)
stand in for the real ones.

    root = prepare_webui(Path("/path/to/text-generation-webui"), tmp / "webui")
    with running_webui(root, "/path/to/webui/python", "--lora", "llama2-fusionado") as webui:
        webui.api  # http://127.0.0.1:PORT
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT), str(HERE.parent), str(HERE)]

from tiny import build_model_dir  # noqa: E402
from tiny_adapters import make_adapter  # noqa: E402

LAUNCHER = HERE / "launch_webui.py"
MODEL = "tiny-llama"
ADAPTERS = ("llama2-instrucciones", "llama2-leyes-ec")
FUSED = "llama2-fusionado"


def prepare_webui(source: Path, root: Path, settings: str = "") -> Path:
    """Copy the webui to root, add the tiny model and adapters, install the bundle; returns root."""
    from training.adapters.fuse import fuse_adapters

    skip = shutil.ignore_patterns("models", "loras", ".git", "__pycache__")
    shutil.copytree(source, root, ignore=skip, symlinks=True)
    data = root / "user_data"
    for sub in ("models", "loras"):
        (data / sub).mkdir(parents=True, exist_ok=True)
    base = build_model_dir("llama2", data / "models" / MODEL)
    for seed, name in enumerate(ADAPTERS, start=1):
        make_adapter(base, data / "loras" / name, task=name.split("-", 1)[1], rank=4, seed=seed)
    fuse_adapters([data / "loras" / name for name in ADAPTERS], data / "loras" / FUSED)
    if settings:
        (data / "settings.yaml").write_text(settings, encoding="utf-8")
    subprocess.run([sys.executable, str(ROOT / "install.py"), "--webui", str(root)], check=True, capture_output=True)
    return root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class RunningWebui:
    root: Path
    api: str
    ui: str
    log: Path
    process: subprocess.Popen


def wait_ready(url: str, process: subprocess.Popen, log: Path, seconds: int = 180) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the webui exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"the webui did not answer {url} in {seconds} s:\n{log.read_text()[-4000:]}")


@contextlib.contextmanager
def running_webui(root: Path, python: str, *extra_args: str, log_name: str = "webui.log"):
    """Start server.py (through the gradio-patching launcher) on free 127.0.0.1 ports; stop it afterwards."""
    import os

    api_port, ui_port = free_port(), free_port()
    log = root / log_name
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    env.pop("PYTHONPATH", None)  # the webui must not see the bundle checkout
    command = [python, str(LAUNCHER), "--cpu", "--loader", "Transformers", "--model", MODEL,
               "--extensions", "spanish_ft", "--api", "--api-port", str(api_port),
               "--listen-port", str(ui_port), "--verbose", *extra_args]
    with open(log, "w") as handle:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=handle, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{api_port}/v1/internal/health", process, log)
        yield RunningWebui(root, f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{ui_port}", log, process)
    finally:
        process.terminate()
        process.wait(timeout=30)
