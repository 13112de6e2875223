"""The webui step: the bundle's own install.py run from Python, then the adapters a run trained.

install.py copies the bundle (extension, templates, presets, shipped adapters) into the webui;
adapters trained by a pipeline run are copied after it, each replacing only an adapter folder of
ours of the same name (it holds a training record), never a folder of the user's.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

from training.adapters.record import RECORD_NAME
from training.files import BUNDLE_ROOT, atomic_output_dir


def load_installer():
    """install.py as a module (it lives at the bundle root, outside any package)."""
    spec = importlib.util.spec_from_file_location("spanish_ft_install", BUNDLE_ROOT / "install.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def install_bundle(webui: Path) -> Path:
    """Install the bundle into `webui`; return its data folder (user_data/ or the webui root)."""
    installer = load_installer()
    code = installer.main(["--webui", str(webui)])
    if code not in (0, 1):  # 1: done, but files the user changed were kept
        raise ValueError(f"install.py failed with exit code {code} for {webui}")
    return installer.locate_webui(webui, None).data


def install_adapters(data_dir: Path, adapters: list[Path]) -> None:
    """Copy the adapters a run trained (those outside the bundle's loras/) into the webui's loras/."""
    for adapter in adapters:
        if adapter.resolve().parent == (BUNDLE_ROOT / "loras").resolve():
            continue  # shipped: install.py copied it already
        with atomic_output_dir(data_dir / "loras" / adapter.name, replace=True, marker=RECORD_NAME,
                               what="adapter folder") as tmp:
            shutil.copytree(adapter, tmp, dirs_exist_ok=True)
