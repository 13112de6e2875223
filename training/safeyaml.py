"""YAML from users, read safely, and values quoted in error messages, shortened.

Recipes, override values and instruction templates go through `load_yaml`: safe YAML with
anchors and aliases refused and nesting bounded, so an alias bomb ("billion laughs") fails at
once instead of expanding into gigabytes. `shown` quotes a value in an error message cut to
about 200 characters, so a 10 MB value never floods the terminal.
"""

from __future__ import annotations

import yaml

SHOWN_VALUE_CHARS = 200  # a value quoted in an error message is cut to about this length
YAML_MAX_DEPTH = 50  # nesting levels; a recipe needs 3
# libyaml when installed: a 10 MB value parses in 0.1 s instead of 4 s
_YAML_LOADER = yaml.CSafeLoader if getattr(yaml, "__with_libyaml__", False) else yaml.SafeLoader


def shorten(text: str, limit: int = SHOWN_VALUE_CHARS) -> str:
    """`text` cut in the middle to about `limit` characters, saying how many were cut."""
    if len(text) <= limit:
        return text
    keep = limit // 2
    return f"{text[:keep]}...[{len(text) - 2 * keep} characters cut]...{text[-keep:]}"


def shown(value) -> str:
    """A value as an error message quotes it: its repr, shortened."""
    return shorten(repr(value))


def load_yaml(text: str):
    """Safe YAML with anchors and aliases refused and nesting bounded; raises yaml.YAMLError.

    A recipe or template has no use for `&name`/`*name`, and an alias bomb ("billion laughs")
    expands a few hundred bytes into gigabytes; refusing them keeps a value as large as its text.
    """
    depth = 0
    for event in yaml.parse(text, Loader=_YAML_LOADER):
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.YAMLError(f"line {line}: YAML anchors and aliases (&name, *name) are not allowed; "
                                 "write each value out")
        depth += isinstance(event, yaml.CollectionStartEvent) - isinstance(event, yaml.CollectionEndEvent)
        if depth > YAML_MAX_DEPTH:
            raise yaml.YAMLError(f"line {line}: nested deeper than {YAML_MAX_DEPTH} levels")
    try:
        return yaml.load(text, Loader=_YAML_LOADER)
    except ValueError as err:  # a constructor's own error, e.g. an integer of more than 4300 digits
        raise yaml.YAMLError(shorten(str(err))) from err
