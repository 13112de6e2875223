"""What an exported GGUF file is, without torch: its types, its record `FILE.gguf.json`, and the file rule.

The record sits next to the GGUF file (`mistral-fusionado-q8_0.gguf.json`) and says where the file
came from: `made_by` "spanish_ft", `file`, `gguf_type`, `sha256`, `bytes`, and the fields of a
merged model's training record (training/adapters/record.py: family, base model, template, preset,
the adapter and its sha256, merge dtype, `dequantized_nf4`), plus `adapter_record` (the adapter's
own record). The same names are stored in the GGUF metadata under `spanish_ft.*` (METADATA_KEYS),
so a GGUF copied without its record is still recognised. The webui extension reads both to
apply the template and preset of an exported model when the user loads it.

A model of a family whose licence must travel with everything made from it (Gemma: the Gemma Terms of
Use, training/families.py) carries it in both: `general.license` and `general.license.link` in the
GGUF metadata (as Google's own GGUF files name it), the notice under `spanish_ft.notice`, and
`licence` {name, link, notice} in the record (licence_of).

The file rule (training/files.py says it for folders): an output file must be new, or a GGUF whose
record proves spanish_ft made it and the user asked to replace it (--replace). The record is an
output too: a file of that name that is not the record of this export is never written over.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from training.families import FAMILIES, notice_of
from training.files import OutputError, check_place

RECORD_SUFFIX = ".json"  # FILE.gguf -> FILE.gguf.json
MADE_BY = "spanish_ft"
# written by the gguf package itself; no llama.cpp needed
WRITER_TYPES = ("f16", "bf16", "q8_0")
# made by llama.cpp's llama-quantize from an f16 GGUF
QUANTIZE_TYPES = ("q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m",
                  "q5_k_s", "q5_k_m", "q6_k")
GGUF_TYPES = WRITER_TYPES + QUANTIZE_TYPES
# GGUF metadata keys of an exported file (strings)
METADATA_KEYS = {"adapter": "spanish_ft.adapter", "family": "spanish_ft.family", "template": "spanish_ft.template",
                 "preset": "spanish_ft.preset", "adapter_sha256": "spanish_ft.adapter_sha256"}
NOTICE_KEY = "spanish_ft.notice"


def record_path(gguf_file: str | Path) -> Path:
    gguf_file = Path(gguf_file)
    return gguf_file.with_name(gguf_file.name + RECORD_SUFFIX)


def licence_of(family: str | None) -> dict | None:
    """{name, link, notice} of the licence an export of this family carries, or None."""
    if family not in FAMILIES or FAMILIES[family].licence is None:
        return None
    name, link = FAMILIES[family].licence
    return {"name": name, "link": link, "notice": notice_of(family)}


def check_type(gguf_type: str) -> str:
    if gguf_type not in GGUF_TYPES:
        raise ValueError(f"--type {gguf_type!r} is not supported; choose one of {', '.join(WRITER_TYPES)} (written "
                         f"directly) or {', '.join(QUANTIZE_TYPES)} (made by llama.cpp's llama-quantize)")
    return gguf_type


def read_gguf_record(gguf_file: str | Path) -> dict | None:
    """The record of an exported GGUF file, or None when there is none or it is not spanish_ft's."""
    path = record_path(gguf_file)
    if not path.is_file() or path.is_symlink():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("made_by") != MADE_BY or data.get("file") != Path(gguf_file).name:
        return None
    return data


def check_output_file(out: Path, replace: bool) -> Path:
    """Refuse an output file unless writing it loses nothing of the user's (new, or ours with --replace)."""
    if not out.name.endswith(".gguf"):
        raise OutputError(f"{out}: the output must be a .gguf file name (llama.cpp and the webui look for that suffix)")
    if out.is_symlink():
        raise OutputError(f"{out} is a symbolic link; spanish_ft does not write through links: give a new file name")
    if out.is_dir():
        raise OutputError(f"{out} is a folder; give a file name ending in .gguf")
    if out.exists():
        if read_gguf_record(out) is None:
            raise OutputError(f"{out} exists and spanish_ft did not make it (no {record_path(out).name} naming it); "
                              "it was left as it is: choose a new file name")
        if not replace:
            raise OutputError(f"{out} already exists: it is a GGUF of an earlier spanish_ft export; pass --replace "
                              "to replace it (replace=True from Python), or choose a new file name")
    record = record_path(out)
    if os.path.lexists(record) and read_gguf_record(out) is None:
        raise OutputError(f"{record} exists and is not the record of a spanish_ft export named {out.name} (the record "
                          f"is written beside the file); it was left as it is: move it away, or choose another name "
                          "for the GGUF file")
    check_place(out)
    return out
