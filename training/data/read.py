"""Raw training rows from a file, a local dataset folder or a hub dataset, each with its place.

Every row comes with a label saying where it is (`line 17` for JSONL, `row 3 (line 4)` for
CSV, `row 12` otherwise) so that a bad row can be named. A line that is not UTF-8 or not
valid JSON becomes a `RowError` in the stream instead of stopping the read, so the caller
can list every bad row at once or skip them. Problems with the whole file (missing, not a
JSON array, unreadable) raise `DataError`.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from training.files import BUNDLE_ROOT, find_bundle_file, sha256_file


class DataError(ValueError):
    """A dataset that cannot be used as a whole; the message names it and the fix."""


class RowError(ValueError):
    """Why one row is unusable."""


@dataclass(frozen=True)
class Source:
    name: str  # as the recipe gave it
    rows: list[tuple[str, object]]  # (where, row or RowError)
    sha256: str
    hashed: str  # "file": sha256 of the file; "rows": of the rows as canonical JSON lines


def read_source(text: str, split: str = "train") -> Source:
    """All rows of a local file (.jsonl/.json/.csv/.parquet), local dataset folder or hub dataset id."""
    path = find_bundle_file(text)
    if path is not None and path.is_file():
        reader = READERS.get(path.suffix.lower())
        if reader is None:
            raise DataError(f"{text}: unsupported file type {path.suffix!r}; use one of {', '.join(READERS)}")
        return Source(text, list(reader(path)), sha256_file(path), "file")
    if path is None and (Path(text).suffix.lower() in READERS or text.startswith((".", "/", "~"))):
        raise DataError(
            f"{text}: data file not found (looked in {Path.cwd()} and in {BUNDLE_ROOT}); "
            "fix dataset.train / dataset.eval, e.g. dataset.train=path/to/train.jsonl"
        )
    rows = list(_hub_rows(str(path or text), split))
    digest = hashlib.sha256()
    for _, row in rows:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode() + b"\n")
    return Source(text, rows, digest.hexdigest(), "rows")


def _jsonl_rows(path: Path) -> Iterator[tuple[str, object]]:
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue  # blank lines separate nothing in JSONL; they are not rows
            where = f"line {number}"
            try:
                yield where, json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as err:
                yield where, RowError(f"not UTF-8 text (bad byte 0x{raw[err.start]:02x} at column {err.start + 1})")
            except json.JSONDecodeError as err:
                yield where, RowError(f"invalid JSON: {err.msg} at column {err.colno}")


def _json_rows(path: Path) -> Iterator[tuple[str, object]]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (bad byte at offset {err.start}); save the file as UTF-8") from err
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from err
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of row objects, found a {type(data).__name__}")
    for number, row in enumerate(data, start=1):
        yield f"row {number}", row


def _csv_rows(path: Path) -> Iterator[tuple[str, object]]:
    # surrogateescape keeps bytes that are not UTF-8 as lone surrogates, so one bad row
    # can be reported (and skipped) instead of failing the whole file.
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
        reader = csv.DictReader(handle)
        for number, row in enumerate(reader, start=1):
            where = f"row {number} (line {reader.line_num})"
            if None in row:
                yield where, RowError("more cells than the header has columns")
            elif any(_not_utf8(value) for value in row.values() if value):
                yield where, RowError("not UTF-8 text")
            else:
                yield where, {key: value for key, value in row.items() if value is not None}


def _not_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _parquet_rows(path: Path) -> Iterator[tuple[str, object]]:
    import pyarrow.parquet as pq

    for number, row in enumerate(pq.read_table(path).to_pylist(), start=1):
        yield f"row {number}", row


def _hub_rows(name: str, split: str) -> Iterator[tuple[str, object]]:
    from datasets import load_dataset

    try:
        dataset = load_dataset(name, split=split)
    except Exception as err:  # datasets raises many unrelated types; all mean "cannot read this"
        raise DataError(
            f"{name}: not a local data file, and loading it as a dataset (hub id or folder, split {split!r}) "
            f"failed: {type(err).__name__}: {err}"
        ) from err
    for number, row in enumerate(dataset, start=1):
        yield f"row {number}", row


READERS = {".jsonl": _jsonl_rows, ".json": _json_rows, ".csv": _csv_rows, ".parquet": _parquet_rows}
