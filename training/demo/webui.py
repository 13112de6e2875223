"""Run the bundle's own install.py from Python (the demo and the tests use it)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from training.files import BUNDLE_ROOT


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
