"""Fuzz the row readers: training/data/read.py (JSONL, JSON arrays, CSV) and validate-data's reader.

Two kinds of input. Random bytes: the reader returns rows or raises DataError naming the file;
each row is labelled with its place and is a value whose text is all Unicode, or a RowError.
Generated JSON that may hold lone surrogates, keys given twice and integers too long to read:
the oracle knows which rows hold one of those, and exactly those rows must come back as a
RowError at their line (`problem` below); every other row is read.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from training.data.read import DataError, RowError, read_source
from training.datasets.validate import Report, _read_rows

LONG_INTEGER = "9" * 4400  # more digits than int() reads


class Obj:
    """A JSON object as its pairs, so that a key may be given twice."""

    def __init__(self, pairs):
        self.pairs = pairs


class LongInteger:
    """An integer literal too long to read."""


LONE = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
TEXT = st.one_of(st.text(max_size=8), st.builds(lambda a, s, b: a + s + b, st.text(max_size=3), LONE,
                                                 st.text(max_size=3)))
KEYS = st.one_of(st.sampled_from(["instruction", "input", "output", "role", "content"]), TEXT)
LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT, st.just(LongInteger()))
VALUES = st.recursive(LEAVES, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.builds(Obj, st.lists(st.tuples(KEYS, inner), max_size=4))), max_leaves=12)


def dump(value) -> str:
    """JSON text of a generated value: surrogates as \\u escapes, keys as given (twice if so)."""
    if isinstance(value, Obj):
        return "{" + ", ".join(f"{json.dumps(key)}: {dump(item)}" for key, item in value.pairs) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(dump(item) for item in value) + "]"
    if isinstance(value, LongInteger):
        return LONG_INTEGER
    return json.dumps(value)  # NaN and Infinity as Python writes them: still accepted


def problem(value) -> bool:
    """Whether the value holds what the reader must refuse."""
    if isinstance(value, Obj):
        keys = [key for key, _ in value.pairs]
        return len(set(keys)) < len(keys) or any(problem(key) or problem(item) for key, item in value.pairs)
    if isinstance(value, list):
        return any(problem(item) for item in value)
    if isinstance(value, str):
        return any(0xD800 <= ord(char) <= 0xDFFF for char in value)
    return isinstance(value, LongInteger)


def is_text(value) -> bool:
    """Every string in the value (keys too) is Unicode that UTF-8 can encode."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read(path: Path) -> list | None:
    """The rows, or None after a DataError that names the file (any other exception fails the test)."""
    try:
        return read_source(str(path)).rows
    except DataError as err:
        assert str(path) in str(err), err
        return None


def check_rows(rows: list, label: str) -> None:
    for where, row in rows:
        assert re.fullmatch(label, where), where
        assert isinstance(row, RowError) or is_text(row), (where, row)


@given(values=st.lists(VALUES, min_size=1, max_size=5))
def test_generated_jsonl_rows_are_read_or_refused_at_their_line(tmp_path, values):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(dump(value) + "\n" for value in values), encoding="utf-8")
    rows = read_source(str(path)).rows
    assert [where for where, _ in rows] == [f"line {n}" for n in range(1, len(values) + 1)]
    for (_, row), value in zip(rows, values, strict=True):
        assert isinstance(row, RowError) == problem(value), (dump(value)[:300], row)
    check_rows(rows, r"line \d+")


@given(values=st.lists(VALUES, max_size=5), crlf=st.booleans())
def test_generated_json_arrays_are_read_or_refused_at_their_row(tmp_path, values, crlf):
    path = tmp_path / "rows.json"
    newline = "\r\n" if crlf else "\n"
    path.write_text("[" + newline + ("," + newline).join(dump(value) for value in values) + newline + "]",
                    encoding="utf-8", newline="")
    rows = read(path)
    if rows is None:  # only an empty array is refused as a whole
        assert not values
        return
    assert [where for where, _ in rows] == [f"row {n} (line {n + 1})" for n in range(1, len(values) + 1)]
    for (_, row), value in zip(rows, values, strict=True):
        assert isinstance(row, RowError) == problem(value), (dump(value)[:300], row)


LINES = st.one_of(st.binary(max_size=40), VALUES.map(lambda value: dump(value).encode()),
                  st.sampled_from([b"\xef\xbb\xbf{}", b"{\"a\": NaN}", b"\r", b"  ", b"[" * 3000, b"\x00"]))


@pytest.mark.parametrize("suffix, label", [(".jsonl", r"line \d+"), (".json", r"row \d+ \(line \d+\)"),
                                           (".csv", r"row \d+ \(line \d+\)")])
@given(lines=st.lists(LINES, max_size=6), sep=st.sampled_from([b"\n", b"\r\n", b","]))
def test_random_bytes_are_rows_or_our_error_naming_the_file(tmp_path, suffix, label, lines, sep):
    path = tmp_path / f"rows{suffix}"
    framed = b"[" + sep.join(lines) + b"]" if suffix == ".json" else sep.join(lines)
    path.write_bytes(framed)
    rows = read(path)
    if rows is not None:
        check_rows(rows, label)


CELLS = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=6)
NAMES = st.one_of(st.sampled_from(["instruction", "input", "output", ""]), CELLS)


@given(header=st.lists(NAMES, min_size=1, max_size=5), body=st.lists(st.lists(CELLS, max_size=6), max_size=4))
def test_a_csv_header_naming_a_column_twice_is_refused_on_line_1(tmp_path, header, body):
    text = io.StringIO()
    csv.writer(text).writerows([header, *body])
    path = tmp_path / "rows.csv"
    path.write_text(text.getvalue(), encoding="utf-8", newline="")
    rows = read(path)
    named = [name for name in header if name]
    if len(set(named)) < len(named) and rows is None:
        with pytest.raises(DataError, match=r"line 1: the header names column .* more than once"):
            read_source(str(path))
    if rows is not None:
        assert len(set(named)) == len(named), header
        check_rows(rows, r"row \d+ \(line \d+\)")


@given(lines=st.lists(LINES, max_size=6))
def test_validate_data_names_the_file_and_line_of_every_problem(tmp_path, lines):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\n".join(lines))
    report = Report(tmp_path)
    rows = _read_rows(path, report)
    assert all(isinstance(row, dict) and is_text(row) for _, row in rows)
    assert all(re.match(r".*train\.jsonl:\d+: ", error) for error in report.errors), report.errors
