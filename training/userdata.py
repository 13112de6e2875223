"""JSON and YAML from a user's disk, read through one door: parsed safely, then checked against a schema.

A report, a training record, an instruction template or a recipe may come from another tool, an
older version or a careless hand. Its reader passes it here with its JSON Schema (Draft 2020-12)
before looking inside, so a file with the right keys but other shapes is refused with every
mistake listed by key path, not an AttributeError three calls later:

    results = read_json(path, REPORT_SCHEMA, "evaluation report")

- parsing: UTF-8 (a BOM allowed), JSON, or YAML through training/safeyaml.py (anchors and aliases
  refused), a size cap, the line of a syntax error;
- types: "integer" is a whole number (not 2.0, not true), "number" a finite one unless the reader
  allows NaN and infinities (`finite=False`: an evaluation's loss may be NaN), and text is valid
  Unicode (a lone surrogate such as "\\ud800" is named by its key path);
- errors: `UserFileError` (a ValueError) names the file, then one line per mistake with its key
  path; `schema_errors` gives the lines alone (a recipe adds its overrides' own).
"""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator, validators

from training.safeyaml import load_yaml, shorten
from training.strict_json import is_text

MAX_FILE_BYTES = 256 << 20  # a report with every answer of a long evaluation is tens of MB
MAX_LISTED_ERRORS = 20  # mistakes listed in one message; the rest are counted


class UserFileError(ValueError):
    """A user's JSON or YAML file that cannot be used; `errors` lists each mistake with its key path."""

    def __init__(self, path, what: str | None, errors: list[str]):
        self.path, self.errors = Path(path), errors
        if len(errors) == 1:  # `what` None: the file could not even be parsed, the error says so
            super().__init__(f"{path}: {errors[0]}" if what is None else f"{path}: not a usable {what}: {errors[0]}")
            return
        listing = [f"  - {error}" for error in errors[:MAX_LISTED_ERRORS]]
        if len(errors) > MAX_LISTED_ERRORS:
            listing.append(f"  - ... and {len(errors) - MAX_LISTED_ERRORS} more")
        super().__init__(f"{path}: {len(errors)} problems in this {what}:\n" + "\n".join(listing))


def read_json(path, schema: dict, what: str, finite: bool = True, max_bytes: int = MAX_FILE_BYTES):
    """The JSON document in `path`, checked against `schema`; raises UserFileError naming the file."""
    text = read_text(path, what, max_bytes)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserFileError(path, None, [f"not a valid UTF-8 JSON file: line {err.lineno}, column {err.colno}: "
                                         f"{err.msg}"]) from None
    except RecursionError:
        raise UserFileError(path, None, ["not a valid UTF-8 JSON file: nested too deeply to be read"]) from None
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise UserFileError(path, None, [f"not a valid UTF-8 JSON file: {shorten(str(err))}"]) from None
    return check_document(data, schema, path, what, finite)


def read_yaml(path, schema: dict, what: str, max_bytes: int = MAX_FILE_BYTES):
    """The YAML document in `path` (anchors and aliases refused), checked against `schema`."""
    return check_document(parse_yaml(path, what, max_bytes), schema, path, what)


def parse_yaml(path, what: str, max_bytes: int = MAX_FILE_BYTES):
    """The YAML document in `path`, parsed but not checked (a recipe is checked after its overrides)."""
    try:
        return load_yaml(read_text(path, what, max_bytes))
    except yaml.YAMLError as err:
        raise UserFileError(path, None, [f"invalid YAML: {shorten(str(err), 1000)}"]) from None


def read_text(path, what: str, max_bytes: int = MAX_FILE_BYTES) -> str:
    """The UTF-8 text of `path` (a BOM dropped), refused beyond `max_bytes`."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise UserFileError(path, None, [f"{size} bytes, more than the {max_bytes} a {what} may have"])
        raw = path.read_bytes()
    except OSError as err:
        raise UserFileError(path, None, [f"the {what} cannot be read ({err.strerror or err})"]) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise UserFileError(path, None, [f"line {line}: not UTF-8 text (byte {err.start}); save the {what} as "
                                         "UTF-8"]) from None


def check_document(data, schema: dict, path, what: str, finite: bool = True):
    """`data` when it is valid text and matches `schema`, else UserFileError listing every mistake."""
    errors = text_errors(data) + schema_errors(data, schema, finite)
    if errors:
        raise UserFileError(path, what, errors)
    return data


def key_path(parts) -> str:
    """'tasks.leyes-ec.answers.base[3]' for the parts of a JSON path."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def text_errors(data) -> list[str]:
    """Strings (and keys) that are not valid Unicode, such as a lone surrogate escape; walked without recursion."""
    errors, stack = [], [((), data)]
    while stack:
        parts, value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and not is_text(key):
                    errors.append(f"{key_path(parts) or '(top level)'}: the key {shorten(repr(key))} is not valid "
                                  "Unicode (a lone surrogate)")
                stack.append(((*parts, key), item))
        elif isinstance(value, list):
            stack.extend(((*parts, i), item) for i, item in enumerate(value))
        elif isinstance(value, str) and not is_text(value):
            errors.append(f"{key_path(parts) or '(top level)'}: not valid Unicode text (a lone surrogate such as "
                          "\\ud800); write the character itself")
    return sorted(errors)


def schema_errors(data, schema: dict, finite: bool = True) -> list[str]:
    """Every schema violation, one line each, prefixed with its key path ('(top level)' for the whole)."""
    messages = []
    for error in _validator(json.dumps(schema, sort_keys=True), finite).iter_errors(data):
        path = key_path(error.absolute_path)
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = ", ".join(sorted(known)) or "none"
            for key in sorted(set(error.instance) - set(known), key=str):
                messages.append(f"{shorten(_join(path, str(key)))}: unknown key; allowed here: {allowed}")
        elif error.validator == "required":
            messages += [f"{_join(path, key)}: required key is missing" for key in error.validator_value
                         if key not in error.instance]
        else:
            messages.append(f"{shorten(path) or '(top level)'}: {_short_message(error)}")
    return sorted(messages)


def _short_message(error) -> str:
    """jsonschema's message with the offending value (its repr opens the message) shortened."""
    quoted = repr(error.instance)
    if error.message.startswith(quoted):
        return shorten(quoted) + error.message[len(quoted):]
    return shorten(error.message, 1000)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is_integer(_, value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(_, value) -> bool:
    return _is_integer(_, value) or isinstance(value, float) and math.isfinite(value)


def _is_number(_, value) -> bool:
    return _is_integer(_, value) or isinstance(value, float)


@cache
def _validator(schema_json: str, finite: bool):
    """A Draft 2020-12 validator whose integers are whole numbers and, unless `finite` is off, numbers finite."""
    types = Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"integer": _is_integer, "number": _is_finite_number if finite else _is_number})
    return validators.extend(Draft202012Validator, type_checker=types)(json.loads(schema_json))
