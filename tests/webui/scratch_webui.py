"""A scratch copy of a real text-generation-webui with the bundle, a model and adapters (test helper).

Used by the opt-in integration test and by take_screenshots.py. The copy never touches the
source checkout. Two line-ups (lineups.py): TINY, a tiny llama model and three LoRA adapters
with spanish_ft training records (instrucciones, leyes-ec, and fusionado made from those two
by the bundle's fuser) standing in for the real ones; DEMO, the CPU demo model Gemma-3-270M
with the bundle's shipped demo adapters (loras/gemma3-270m-*, installed by install.py).

    root = prepare_webui(Path("/path/to/text-generation-webui"), tmp / "webui")
    with running_webui(root, "/path/to/webui/python", "--lora", TINY.fused) as webui:
        webui.api  # http://127.0.0.1:PORT
    root = prepare_demo_webui(webui_dir, tmp / "demo", demo_model_dir())
    with running_webui(root, python, "--lora", DEMO.fused, model=DEMO.model) as webui: ...
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT), str(HERE.parent), str(HERE)]

from lineups import DEMO, TINY  # noqa: E402
from tiny import build_model_dir  # noqa: E402
from tiny_adapters import make_adapter  # noqa: E402

LAUNCHER = HERE / "launch_webui.py"
# a converted demo model folder to copy instead of running fetch-demo-model (saves about a minute)
DEMO_MODEL_ENV = "SPANISH_FT_DEMO_MODEL"


def prepare_webui(source: Path, root: Path, settings: str = "") -> Path:
    """Copy the webui to root, add the tiny model and adapters, install the bundle; returns root."""
    from training.adapters.fuse import FuseSettings, fuse_adapters

    data = copy_webui(source, root)
    base = build_model_dir("llama2", data / "models" / TINY.model)
    for seed, name in enumerate(TINY.singles, start=1):
        make_adapter(base, data / "loras" / name, task=name.split("-", 1)[1], rank=4, seed=seed)
    fuse_adapters(FuseSettings(adapters=[data / "loras" / name for name in TINY.singles],
                               out=data / "loras" / TINY.fused))
    if settings:
        (data / "settings.yaml").write_text(settings, encoding="utf-8")
    install_bundle(root)
    return root


def prepare_demo_webui(source: Path, root: Path, model_dir: Path) -> Path:
    """Copy the webui to root, copy the demo model folder in, install the bundle (and its demo adapters)."""
    missing = [name for name in (*DEMO.singles, DEMO.fused) if not (ROOT / "loras" / name).is_dir()]
    if missing:
        raise FileNotFoundError(f"the bundle has no {', '.join(missing)} in {ROOT / 'loras'}: train them with "
                                "`python -m training demo --retrain` or check out a commit that ships them")
    data = copy_webui(source, root)
    shutil.copytree(model_dir, data / "models" / DEMO.model)
    install_bundle(root)
    return root


def demo_model_dir() -> Path:
    """The demo model's HF folder: $SPANISH_FT_DEMO_MODEL, or fetch-demo-model's output cached in the temp folder."""
    given = os.environ.get(DEMO_MODEL_ENV)
    if given:
        return Path(given)
    cache = Path(tempfile.gettempdir()) / "spanish_ft-demo-model" / DEMO.model
    cache.parent.mkdir(exist_ok=True)
    # a no-op when the cached folder is complete
    subprocess.run([sys.executable, "-m", "training", "fetch-demo-model", str(cache), "--model", DEMO.model],
                   cwd=ROOT, check=True)
    return cache


def copy_webui(source: Path, root: Path) -> Path:
    """Copy the webui without its models, adapters and git folder; returns its (empty) user_data folder."""
    skip = shutil.ignore_patterns("models", "loras", ".git", "__pycache__")
    shutil.copytree(source, root, ignore=skip, symlinks=True)
    data = root / "user_data"
    for sub in ("models", "loras"):
        (data / sub).mkdir(parents=True, exist_ok=True)
    return data


def install_bundle(root: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "install.py"), "--webui", str(root)], check=True, capture_output=True)


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


def wait_ready(url: str, process: subprocess.Popen, log: Path, seconds: int = 300) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the webui exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=10):
                return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"the webui did not answer {url} in {seconds} s:\n{log.read_text()[-4000:]}")


@contextlib.contextmanager
def running_webui(root: Path, python: str, *extra_args: str, model: str = TINY.model, log_name: str = "webui.log"):
    """Start server.py (through the gradio-patching launcher) on free 127.0.0.1 ports; stop it afterwards."""
    api_port, ui_port = free_port(), free_port()
    log = root / log_name
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    env.pop("PYTHONPATH", None)  # the webui must not see the bundle checkout
    command = [python, str(LAUNCHER), "--cpu", "--loader", "Transformers", "--model", model,
               "--extensions", "spanish_ft", "--api", "--api-port", str(api_port),
               "--listen-port", str(ui_port), "--verbose", *extra_args]
    with open(log, "w") as handle:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=handle, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{api_port}/v1/internal/health", process, log)
        if "--nowebui" not in extra_args:  # the API answers before the page is up: no test may race its start
            wait_ready(f"http://127.0.0.1:{ui_port}/", process, log)
        yield RunningWebui(root, f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{ui_port}", log, process)
    finally:
        process.terminate()
        process.wait(timeout=30)
