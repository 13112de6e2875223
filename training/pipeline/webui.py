"""The webui step: the bundle's own install.py run from Python, then the adapters a run trained.

install.py copies the bundle (extension, templates, presets, shipped adapters) into the webui;
adapters trained by a pipeline run are copied after it, each replacing only an adapter folder of
ours of the same name (it holds a training record), never a folder of the user's. `check_webui`
asks the same of the webui before the run's first step: install.py's dry run (a file, not a
webui, a tampered record, read-only places) and each adapter folder the run will copy there.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import shutil
import sys
from pathlib import Path

from training.adapters.record import RECORD_NAME
from training.files import BUNDLE_ROOT, atomic_output_dir, check_output

ADAPTER = "adapter folder"


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
    code = installer.main([f"--webui={webui}"])
    if code not in (0, 1):  # 1: done, but files the user changed were kept
        raise ValueError(f"install.py failed with exit code {code} for {webui}")
    return installer.locate_webui(webui, None).data


def check_webui(webui: Path, adapters: list[Path]) -> None:
    """Refuse now what installing into `webui` later would refuse: the installer's checks, then the adapter folders."""
    installer = load_installer()
    said = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(said):
        code = installer.main([f"--webui={webui}", "--dry-run"])
    if code not in (0, 1):  # 1: files the user changed would be kept, which is no refusal
        reason = said.getvalue().strip().removeprefix("error: ")
        named = reason if reason.startswith("--webui") else f"--webui {webui}: {reason}"
        raise ValueError(f"{named}\nNothing was trained or written: fix the webui folder, or leave out --webui and "
                         "install later with install.py")
    data_dir = installer.locate_webui(webui, None).data
    for adapter in copied(adapters):
        check_output(data_dir / "loras" / adapter.name, replace=True, marker=RECORD_NAME, what=ADAPTER)


def copied(adapters: list[Path]) -> list[Path]:
    """The adapters a run copies into the webui itself: not the bundle's own (install.py copies those)."""
    shipped = (BUNDLE_ROOT / "loras").resolve()
    return [adapter for adapter in adapters if Path(adapter).resolve().parent != shipped]


def install_adapters(data_dir: Path, adapters: list[Path]) -> None:
    """Copy the adapters a run trained (those outside the bundle's loras/) into the webui's loras/."""
    for adapter in copied(adapters):
        with atomic_output_dir(data_dir / "loras" / adapter.name, replace=True, marker=RECORD_NAME,
                               what=ADAPTER) as tmp:
            shutil.copytree(adapter, tmp, dirs_exist_ok=True)
