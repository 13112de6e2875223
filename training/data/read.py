"""Raw training rows from a file, a local dataset folder or a hub dataset, each with its place.

Every row comes with a label saying where it is (`line 17` for JSONL, `row 3 (line 4)` for
CSV and JSON arrays, `row 12` otherwise) so that a bad row can be named. A row that is not
UTF-8, not valid JSON, or not text (a lone surrogate escape, a key given twice, a number too
long to read: training/strict_json.py) becomes a `RowError` in the stream instead of
stopping the read, so the caller can list every bad row at once or skip them. Problems with the
whole file (missing, empty, not a JSON array, a CSV header naming a column twice, unreadable)
raise `DataError` naming it. A UTF-8 byte order mark (what Excel and Notepad write) is read as
nothing.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from training import strict_json
from training.files import BUNDLE_ROOT, find_bundle_file, sha256_file
from training.safeyaml import shown
from training.strict_json import RowError, is_text, parse_row

UTF8_BOM = b"\xef\xbb\xbf"
PARQUET_CHUNK_ROWS = 1024  # rows turned into Python objects at a time
_BETWEEN_ELEMENTS = re.compile(r"[\s,]*")


class DataError(ValueError):
    """A dataset that cannot be used as a whole; the message names it and the fix."""


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
        return _read_file(path, text)
    if path is None and Path(text).expanduser().is_symlink():
        target = os.readlink(Path(text).expanduser())
        raise DataError(f"{text}: a symbolic link that loops or points to nothing (to {target}); "
                        "point dataset.train / dataset.eval at the data file itself")
    if path is None and (Path(text).suffix.lower() in READERS or text.startswith((".", "/", "~"))):
        raise DataError(
            f"{text}: data file not found (looked in {Path.cwd()} and in {BUNDLE_ROOT}); "
            "fix dataset.train / dataset.eval, e.g. dataset.train=path/to/train.jsonl"
        )
    rows = _some(list(_hub_rows(str(path or text), split)), text)
    digest = hashlib.sha256()
    for _, row in rows:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode() + b"\n")
    return Source(text, rows, digest.hexdigest(), "rows")


def _read_file(path: Path, text: str) -> Source:
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{text}: unsupported file type {path.suffix!r}; use one of {', '.join(READERS)}")
    try:
        if _is_blank(path):
            what = "only blank lines" if path.stat().st_size else "0 bytes"
            raise DataError(f"{text}: the file is empty ({what}); it needs at least one row")
        rows = list(reader(path))
        digest = sha256_file(path)
    except OSError as err:
        raise DataError(f"{text}: cannot read the file: {err.strerror or err}") from err
    return Source(text, _some(rows, text), digest, "file")


def _is_blank(path: Path) -> bool:
    """Whether the file holds only whitespace (and perhaps a BOM); reads up to its first other byte."""
    with open(path, "rb") as handle:
        chunk = handle.read(1 << 20).removeprefix(UTF8_BOM)
        while chunk:
            if chunk.strip():
                return False
            chunk = handle.read(1 << 20)
    return True


def _some(rows: list, text: str) -> list:
    if not rows:
        raise DataError(f"{text}: no rows (only a header, an empty JSON array or an empty split); "
                        "it needs at least one row")
    return rows


def _jsonl_rows(path: Path) -> Iterator[tuple[str, object]]:
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1:
                raw = raw.removeprefix(UTF8_BOM)
            if not raw.strip():
                continue  # blank lines separate nothing in JSONL; they are not rows
            where = f"line {number}"
            try:
                yield where, parse_row(raw.decode("utf-8"))
            except UnicodeDecodeError as err:
                yield where, RowError(f"not UTF-8 text (bad byte 0x{raw[err.start]:02x} at column {err.start + 1})")
            except RowError as err:
                yield where, err


def _json_rows(path: Path) -> Iterator[tuple[str, object]]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
        data = strict_json.loads(text)
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: not UTF-8 text (bad byte 0x{raw[err.start]:02x} at offset "
                        f"{err.start}); save the file as UTF-8") from err
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from err
    except ValueError as err:
        raise DataError(f"{path}: invalid JSON: {err}") from err
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of row objects, found a {type(data).__name__}")
    for number, (row, line) in enumerate(zip(data, _element_lines(text), strict=True), start=1):
        problem = strict_json.problem(row)
        yield f"row {number} (line {line})", RowError(problem) if problem else row


def _element_lines(text: str) -> Iterator[int]:
    """The line on which each element of a valid top-level JSON array starts."""
    decoder, index, line, counted = strict_json.DECODER, text.index("[") + 1, 1, 0
    while True:
        index = _BETWEEN_ELEMENTS.match(text, index).end()
        if text[index] == "]":
            return
        line, counted = line + text.count("\n", counted, index), index
        yield line
        _, index = decoder.raw_decode(text, index)


def _csv_rows(path: Path) -> Iterator[tuple[str, object]]:
    # surrogateescape keeps bytes that are not UTF-8 as lone surrogates, so one bad row
    # can be reported (and skipped) instead of failing the whole file.
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        reader = csv.DictReader(handle)
        try:
            _check_header(reader.fieldnames or [], path)
            for number, row in enumerate(reader, start=1):
                where = f"row {number} (line {reader.line_num})"
                if None in row:
                    yield where, RowError("more cells than the header has columns")
                elif any(not is_text(value) for value in row.values() if value):
                    yield where, RowError("not UTF-8 text")
                else:
                    yield where, {key: value for key, value in row.items() if value is not None}
        except csv.Error as err:  # a cell over the csv module's size limit, a NUL byte: the rest cannot be read
            raise DataError(f"{path}, line {reader.reader.line_num}: unreadable CSV: {err} "
                            "(save long texts as JSONL, or fix the line)") from err


def _check_header(names: list[str], path: Path) -> None:
    if any(not is_text(name) for name in names):
        raise DataError(f"{path}, line 1: the header is not UTF-8 text; save the file as UTF-8")
    # empty names (trailing commas a spreadsheet leaves) name no field that is read
    repeated = [name for name, count in collections.Counter(filter(None, names)).items() if count > 1]
    if repeated:
        raise DataError(f"{path}, line 1: the header names column {shown(repeated[0])} more than once, so only its "
                        "last cell would be read; rename or remove the other one")


def _parquet_rows(path: Path) -> Iterator[tuple[str, object]]:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except pyarrow.ArrowException as err:
        raise DataError(f"{path}: not a readable Parquet file: {err}") from err
    for start in range(0, table.num_rows, PARQUET_CHUNK_ROWS):
        chunk = table.slice(start, PARQUET_CHUNK_ROWS)
        try:
            rows = chunk.to_pylist()
        except UnicodeDecodeError:  # Parquet does not check that a string column holds UTF-8: find the rows
            rows = [_parquet_row(chunk.slice(index, 1)) for index in range(chunk.num_rows)]
        for number, row in enumerate(rows, start=start + 1):
            yield f"row {number}", row


def _parquet_row(table) -> object:
    """The one row of `table`, or a RowError naming the first column whose text is not UTF-8."""
    for name in table.column_names:
        try:
            table.column(name).to_pylist()
        except UnicodeDecodeError:
            return RowError(f"column {shown(name)}: not UTF-8 text")
    return table.to_pylist()[0]


def _hub_rows(name: str, split: str) -> Iterator[tuple[str, object]]:
    from datasets import load_dataset

    try:
        dataset = load_dataset(name, split=split)
    except Exception as err:  # datasets raises many unrelated types; all mean "cannot read this"
        raise DataError(
            f"{name}: not a local data file, and loading it as a dataset (hub id or folder, split {split!r}) "
            f"failed: {type(err).__name__}: {err}"
        ) from err
    number = 0
    try:
        for number, row in enumerate(dataset, start=1):
            yield f"row {number}", row
    except UnicodeDecodeError as err:  # arrow strings that are not UTF-8 fail as they are read
        raise DataError(f"{name}, row {number + 1}: not UTF-8 text ({err.reason}); save its data as UTF-8") from err


READERS = {".jsonl": _jsonl_rows, ".json": _json_rows, ".csv": _csv_rows, ".parquet": _parquet_rows}
