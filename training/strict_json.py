"""JSON read strictly: what Python's json module lets through that is not text, or not one value.

Python's json reads a lone surrogate escape (`"\\ud800"`: valid JSON, not Unicode, and a
tokenizer's TypeError later) as if it were a character, keeps the last of two equal keys without
a word, and raises a bare ValueError for an integer longer than `int()` reads (4300 digits) or a
RecursionError for deep nesting. `loads` parses with hooks that mark repeated keys and over-long
integers instead, and turns deep nesting into a ValueError; `problem` then names the first field
that is not usable text. NaN and Infinity (Python's extension of JSON) stay accepted: a field the
bundle reads must be text anyway (training/data/conversations.py says so), other fields are ignored.

    value = loads(text)        # json.JSONDecodeError, or ValueError for deep nesting
    problem(value)             # "field 'messages[2].content': ..." or None
    parse_row(text)            # both, for one row: the value, or RowError saying why not

Used by the row readers (training/data/read.py), the dataset validator and resume's recipe record.
"""

from __future__ import annotations

import collections
import json
import re

from training.safeyaml import shorten

_SURROGATE = re.compile("[\ud800-\udfff]")  # a pair is decoded as one character: any left is alone


class _RepeatedKeys(dict):
    """A JSON object in which some keys were given more than once (the last value is kept)."""

    def __init__(self, pairs: list, repeated: list[str]):
        super().__init__(pairs)
        self.repeated = repeated


class _LongInteger:
    """An integer literal longer than Python converts; kept as its length, reported by `problem`."""

    def __init__(self, digits: int):
        self.digits = digits


def _object(pairs: list) -> dict:
    counts = collections.Counter(key for key, _ in pairs)
    if len(counts) == len(pairs):
        return dict(pairs)
    return _RepeatedKeys(pairs, [key for key, count in counts.items() if count > 1])


def _integer(text: str):
    try:
        return int(text)
    except ValueError:  # more digits than sys.get_int_max_str_digits()
        return _LongInteger(len(text.lstrip("-")))


_HOOKS = {"object_pairs_hook": _object, "parse_int": _integer}
DECODER = json.JSONDecoder(**_HOOKS)  # for raw_decode (the element-by-element walk of a JSON array)


def loads(text: str):
    """`json.loads` with the strict hooks; JSONDecodeError for bad syntax, ValueError for deep nesting."""
    try:
        return json.loads(text, **_HOOKS)
    except RecursionError:
        raise ValueError("nested deeper than the JSON reader goes (about 1000 levels of lists or objects)") from None


def problem(value) -> str | None:
    """What makes a value read by `loads` unusable, naming its field (`a.b[2].c`), or None."""
    stack = [("", value)]
    while stack:  # a loop, not recursion: a row may be nested as deep as the reader allowed
        path, item = stack.pop()
        if isinstance(item, dict):
            for key in item:
                if _SURROGATE.search(key):
                    return f"{_field(path)}: a field name {_lone(key)}"
            if isinstance(item, _RepeatedKeys):
                return (f"{_field(_join(path, item.repeated[0]))}: given more than once in one object; keep one "
                        "(JSON readers differ on which value counts)")
            stack += reversed([(_join(path, key), sub) for key, sub in item.items()])
        elif isinstance(item, list):
            stack += reversed([(f"{path}[{number}]", sub) for number, sub in enumerate(item, start=1)])
        elif isinstance(item, str) and (found := _SURROGATE.search(item)):
            return f"{_field(path)}: {_lone(item, found)}"
        elif isinstance(item, _LongInteger):
            return (f"{_field(path)}: a whole number of {item.digits} digits, more than can be read; "
                    "write it as text (in quotes)")
    return None


def _lone(text: str, found: re.Match | None = None) -> str:
    found = found or _SURROGATE.search(text)
    return (f"holds a lone surrogate \\u{ord(found.group()):04x} (at character {found.start() + 1}), half of a "
            "UTF-16 pair and not text; write the character itself, or both \\u escapes of its pair")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _field(path: str) -> str:
    """`field 'a.b'` for an error message: shortened, any character that cannot be printed escaped."""
    if not path:
        return "the row"
    return f"field '{shorten(path.encode('utf-8', 'backslashreplace').decode('utf-8'))}'"


def is_text(text: str) -> bool:
    """Whether a str is valid Unicode, i.e. holds no lone surrogate (which Python's json lets through)."""
    return _SURROGATE.search(text) is None


class RowError(ValueError):
    """Why one row is unusable (the reader adds the file and line)."""


def parse_row(text: str) -> object:
    """One row's JSON text (a JSONL line) as a value; RowError if it is not JSON or not text."""
    try:
        row = loads(text)
    except json.JSONDecodeError as err:
        raise RowError(f"invalid JSON: {err.msg} at column {err.colno}") from None
    except ValueError as err:
        raise RowError(f"invalid JSON: {err}") from None
    if found := problem(row):
        raise RowError(found)
    return row
