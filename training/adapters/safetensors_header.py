"""The header of a safetensors file, read and checked without safetensors (the door's weights check).

A safetensors file is an 8-byte little-endian header length, a JSON header {tensor: {dtype, shape,
data_offsets}} and the tensors' bytes, which the byte ranges must tile exactly. Each of these is
checked against the file's size here, so a truncated or forged file is refused with its name and
what is wrong instead of a SafetensorError traceback later. Used by training/adapters/folder.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from training.strict_json import is_text

HEADER_MAX_BYTES = 100_000_000  # safetensors' own limit
NUMBER_LIMIT = 2**64  # shapes and offsets are unsigned 64-bit integers to safetensors
# safetensors dtype -> bits per element
DTYPE_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "I16": 16, "U16": 16,
              "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "I64": 64, "U64": 64, "F64": 64, "C64": 64,
              "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}


class CorruptFileError(ValueError):
    """A safetensors file that is truncated or corrupt; the message names it."""


def _corrupt(where: str, what: str) -> CorruptFileError:
    return CorruptFileError(f"{where}: {what}; the file is corrupt (download or save the adapter again)")


def check_safetensors(path: Path) -> dict[str, tuple[str, list[int]]]:
    """{tensor: (dtype, shape)} from the header of a safetensors file, checked against its size."""
    where = f"{path.name} in {path.parent}"
    size = path.stat().st_size
    with path.open("rb") as file:
        prefix = file.read(8)
        if len(prefix) < 8:
            raise _corrupt(where, f"truncated ({size} bytes; a safetensors file starts with an 8-byte header length)")
        header_bytes = int.from_bytes(prefix, "little")
        if header_bytes > HEADER_MAX_BYTES or 8 + header_bytes > size:
            raise _corrupt(where, f"truncated or not safetensors (its header length, {header_bytes} bytes, runs "
                                  f"past the end of the {size}-byte file)")
        raw = file.read(header_bytes)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise _corrupt(where, f"its header is not valid JSON ({err})") from None
    if not isinstance(header, dict):
        raise _corrupt(where, f"its header is a JSON {type(header).__name__}, not an object")
    metadata = header.pop("__metadata__", None)
    metadata = {} if metadata is None else metadata  # null: no metadata, to safetensors too
    if not isinstance(metadata, dict) or not all(isinstance(value, str) for value in metadata.values()):
        raise _corrupt(where, "its __metadata__ is not an object of strings")
    if not all(is_text(text) for text in (*metadata, *metadata.values(), *header)):
        raise _corrupt(where, "its header holds text that is not valid Unicode (a lone surrogate escape such as "
                              "\\ud800 in a tensor name or in __metadata__)")
    if not header:
        raise CorruptFileError(f"{where}: holds no tensors")
    tensors = {name: _tensor_entry(name, entry, where) for name, entry in header.items()}
    _check_layout(header, size - 8 - header_bytes, where)
    return tensors


def _tensor_entry(name: str, entry, where: str) -> tuple[str, list[int]]:
    """(dtype, shape) of one header entry whose byte range matches its dtype and shape."""
    if not isinstance(entry, dict):
        raise _corrupt(where, f"tensor {name!r} has a header entry that is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise _corrupt(where, f"tensor {name!r} has an unknown dtype {str(dtype)[:40]!r}")
    numbers = [*shape, *offsets] if isinstance(shape, list) and isinstance(offsets, list) else [None]
    if len(offsets or ()) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < NUMBER_LIMIT
                                          for n in numbers):
        raise _corrupt(where, f"tensor {name!r} has a malformed shape or data_offsets")
    bits = math.prod(shape) * DTYPE_BITS[dtype]
    begin, end = offsets
    if bits % 8 or end - begin != bits // 8:
        raise _corrupt(where, f"tensor {name!r} ({dtype} {shape}) needs {bits // 8} bytes but its data_offsets "
                              f"{offsets} span {end - begin}")
    return dtype, shape


def _check_layout(header: dict, data_bytes: int, where: str) -> None:
    """The tensors' byte ranges tile the data after the header exactly, as safetensors requires."""
    last_end, last = max((entry["data_offsets"][1], name) for name, entry in header.items())
    if last_end > data_bytes:
        raise _corrupt(where, f"truncated (tensor {last!r} ends at byte {last_end} of the data, past the end of the "
                              f"file's {data_bytes} bytes of data)")
    position = 0
    for (begin, end), name in sorted((entry["data_offsets"], name) for name, entry in header.items()):
        if begin != position:
            raise _corrupt(where, f"tensor {name!r} starts at byte {begin} of the data, expected {position} "
                                  "(overlapping or gapped tensors)")
        position = end
    if position != data_bytes:
        raise _corrupt(where, f"{data_bytes - position} unexpected bytes after the last tensor")
