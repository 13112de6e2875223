"""GGUF export from the webui, and recognising an exported GGUF model when the llama.cpp loader loads it.

The export runs `python -m training export-gguf` in a subprocess with the webui's own Python: it
merges a model and must not run inside the webui's process (memory, torch threads), and a crash or a
refusal there leaves the webui as it was. It runs only where the bundle's `training` package (the
copy install.py puts beside the extension, or a checkout) has the export module and the `gguf`
package is installed; otherwise `export_blocker` says, in Spanish, the command to run by hand.
An exported file carries its record `FILE.gguf.json` (training/adapters/gguf/file_record.py): its family,
template and preset become an `AdapterInfo`, so the profile logic treats a loaded GGUF model like
an active adapter. No webui needed:

    gguf_model_info(Path("user_data/models"), "mistral-fusionado-q8_0.gguf")
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from training.adapters.gguf.file_record import METADATA_KEYS, read_gguf_record

from .adapters import AdapterInfo

# the bundle's one command table (training/__main__.py, copied beside the extension by install.py) and its command
EXPORT_COMMAND = ("training", "export-gguf")
# offered in the tab, most useful first (q4_k_m needs llama.cpp's llama-quantize)
MENU_TYPES = ("q8_0", "q4_k_m", "f16", "bf16")


def export_target(models_dir: Path, adapter: str, gguf_type: str) -> Path:
    return models_dir / f"{adapter}-{gguf_type}.gguf"


def hand_command(adapter: str, out: Path, gguf_type: str) -> str:
    """The command a user runs from the bundle's folder when the webui cannot run the export."""
    return f"python -m training export-gguf loras/{adapter} --out {out} --type {gguf_type}"


def training_root() -> Path | None:
    """The folder that holds the importable `training` package (for the subprocess's PYTHONPATH)."""
    spec = importlib.util.find_spec("training")
    return Path(spec.origin).resolve().parents[1] if spec and spec.origin else None


def export_blocker(adapter: str, out: Path, gguf_type: str) -> str:
    """Why the webui cannot run the export ('' when it can), with the command to run by hand, in Spanish."""
    root = training_root()
    missing = []
    needed = (Path("training", "__main__.py"), Path("training", "adapters", "gguf", "export.py"))
    if root is None or not all((root / path).is_file() for path in needed):
        missing.append("el módulo de exportación de spanish_ft (vuelve a instalar: python install.py --webui ...)")
    if importlib.util.find_spec("gguf") is None:
        missing.append("el paquete gguf (pip install gguf)")
    if not missing:
        return ""
    return (f"No se puede exportar desde la webui: falta {' y '.join(missing)}. Ejecútalo a mano en la carpeta del "
            f"paquete spanish_ft: `{hand_command(adapter, out, gguf_type)}`")


def export_command(adapter_path: Path, out: Path, gguf_type: str, template: Path | None = None,
                   base: Path | None = None) -> tuple[list, dict]:
    """(argv, environment) of the export subprocess, run with the webui's own Python.

    `template`: the webui's copy of the adapter's instruction template, stored as the GGUF's chat template
    (the copy of training/ beside the extension has no instruction-templates/ of its own); `base`: the
    model folder the webui has loaded the adapter on (the record's base path is the trainer's, not the webui's).
    """
    root = training_root()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
           "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", *EXPORT_COMMAND, str(adapter_path), "--out", str(out), "--type", gguf_type]
    return argv + (["--template", str(template)] if template else []) + (["--base", str(base)] if base else []), env


def run_export(argv: list[str], env: dict, every_seconds: float = 0.5) -> Iterator[tuple[str, int | None]]:
    """Run the export; yields (last output line, None) as it goes, then (last line, exit code).

    The error a refusal prints ("error: ...") is its last line, so the final pair says why it failed.
    """
    process = subprocess.Popen(argv, env=env, cwd=env["PYTHONPATH"].split(os.pathsep)[0], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    output, shown = "", time.monotonic()
    try:
        while chunk := process.stdout.read1(4096):
            output = (output + chunk.decode("utf-8", "replace"))[-8192:]
            if time.monotonic() - shown >= every_seconds:
                shown = time.monotonic()
                yield last_progress_line(output), None
        code = process.wait()
    finally:
        if process.poll() is None:  # the page was closed or the event cancelled: stop the export (it cleans up)
            process.terminate()
            process.wait()
    yield last_progress_line(output), code


def last_progress_line(output: str) -> str:
    """The last non-empty line of a subprocess's output; tqdm redraws its bar after a carriage return."""
    lines = [line.strip() for line in re.split(r"[\r\n]+", output) if line.strip()]
    return lines[-1] if lines else ""


def gguf_file(models_dir: Path, model_name: str) -> Path | None:
    """The GGUF file the llama.cpp loader loads for `model_name`: the file, or the first .gguf in its folder."""
    if not model_name or model_name == "None":
        return None
    path = models_dir / model_name
    if path.is_file() and path.suffix == ".gguf":
        return path
    return next(iter(sorted(path.glob("*.gguf"))), None) if path.is_dir() else None


def gguf_model_info(models_dir: Path, model_name: str) -> AdapterInfo | None:
    """The profile source of a loaded GGUF model exported by spanish_ft (its record, else its metadata), or None."""
    path = gguf_file(models_dir, model_name)
    record = read_gguf_record(path) if path is not None else None
    if record is not None:
        adapter = (record.get("adapter") or {}).get("name")
        return AdapterInfo(name=model_name, path=path, rank=None, has_record=True, family=record.get("family"),
                           task=(record.get("adapter_record") or {}).get("task"),
                           template=(record.get("template") or {}).get("name"), preset=record.get("preset"),
                           base_model=(record.get("base_model") or {}).get("name_or_path"),
                           sources=(adapter,) if adapter else ())
    metadata = spanish_ft_metadata(path) if path is not None else {}
    if not metadata:
        return None
    return AdapterInfo(name=model_name, path=path, rank=None, has_record=True, family=metadata.get("family"),
                       template=metadata.get("template"), preset=metadata.get("preset"),
                       sources=(metadata["adapter"],) if metadata.get("adapter") else ())


def spanish_ft_metadata(path: Path) -> dict[str, str]:
    """The `spanish_ft.*` keys of a GGUF file copied without its record ({} without the gguf package)."""
    if importlib.util.find_spec("gguf") is None:
        return {}
    from gguf import GGUFReader

    try:
        fields = GGUFReader(path).fields
    except (OSError, ValueError):  # not a GGUF file, or a truncated one: not ours to profile
        return {}
    return {name: str(fields[key].contents()) for name, key in METADATA_KEYS.items() if key in fields}
