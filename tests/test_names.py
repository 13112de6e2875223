"""One name per concept (issue 27), read from the code with `ast`: each command lives in a module that says
its name, each artefact command builds one settings object from its arguments (the object these tests
build too), and the one-door and one-table rules hold: the adapter's file names only in the adapter door,
family names only in families.py (and the recipes), one GIB, no class shadowing transformers' Trainer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from training.__main__ import COMMANDS, parse_args
from training.families import FAMILIES

ROOT = Path(__file__).resolve().parents[1]
TRAINING = ROOT / "training"
CODE = sorted([*TRAINING.rglob("*.py"), *(ROOT / "extensions").rglob("*.py"), ROOT / "install.py"])
DOOR = TRAINING / "adapters" / "folder.py"
FAMILY_TABLE = TRAINING / "families.py"
# rendering is what a template does: `render` may stay in templates.py (issue 27)
COMMAND_HOMES = {"render": "training.templates"}


def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def shown(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def string_literals(path: Path):
    for node in ast.walk(parsed(path)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def test_the_adapter_weights_file_name_is_written_only_in_the_adapter_door():
    found = [f"{shown(p)}:{line}" for p in CODE if p != DOOR
             for line, value in string_literals(p) if value in ("adapter_model.safetensors", "adapter_model.bin")]
    assert not found, "use training.adapters.folder (SAFE_WEIGHTS_NAME, adapter_weights_path): " + ", ".join(found)


def test_no_family_name_is_written_outside_the_family_table():
    """mistral, llama2, falcon, gemma3 and their model types are facts of training/families.py (recipes aside)."""
    names = set(FAMILIES) | {model_type for family in FAMILIES.values() for model_type in family.model_types}
    found = [f"{shown(p)}:{line} {value!r}" for p in CODE if p != FAMILY_TABLE
             for line, value in string_literals(p) if value in names]
    assert not found, "\n".join(found)


def test_gib_is_defined_once():
    found = [f"{shown(p)}:{node.lineno}" for p in CODE for node in ast.walk(parsed(p))
             if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "GIB" for t in node.targets)]
    assert len(found) == 1, found


def test_no_class_shadows_a_library_name():
    taken = {"Trainer"}  # transformers' Trainer
    found = [f"{shown(p)}:{node.lineno} {node.name}" for p in CODE for node in ast.walk(parsed(p))
             if isinstance(node, ast.ClassDef) and node.name in taken]
    assert not found, found


def test_a_class_or_helper_name_means_one_thing():
    """Two classes named Source, or two helpers named _common, in different modules are two concepts under
    one name; so are two modules of one file name in training/ among those the issue found crossed."""
    defined: dict[str, list[str]] = {}
    for path in CODE:
        for node in parsed(path).body:
            if isinstance(node, ast.ClassDef | ast.FunctionDef) and node.name in ("Source", "_common"):
                defined.setdefault(node.name, []).append(shown(path))
    assert all(len(where) == 1 for where in defined.values()), defined
    for name in ("record.py", "run.py", "compare.py"):
        assert len([p for p in CODE if p.name == name]) <= 1, name


def module_words(module: str) -> set[str]:
    return {part.replace("_", "") for part in module.split(".")[1:]}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_command_lives_in_a_module_or_package_that_says_its_name(command):
    module = COMMANDS[command][0]
    if command in COMMAND_HOMES:
        assert module == COMMAND_HOMES[command]
        return
    squashed = command.replace("-", "")
    assert any(word and word in squashed for word in module_words(module)), f"{command}: {module}"


def test_no_module_is_named_after_a_command_it_does_not_run():
    """In training/, a module named like a command runs it. (The extension runs no command; its memory.py is
    the `memory` command's estimate in a tab, the same concept; its comparison.py is not the `compare` command.)"""
    commands = {command.replace("-", "_"): module for command, (module, _) in COMMANDS.items()}
    found = [f"{shown(p)} is named after `{p.stem}` but that command runs {commands[p.stem]}"
             for p in sorted(TRAINING.rglob("*.py")) if p.stem in commands
             and ".".join(p.relative_to(ROOT).with_suffix("").parts) != commands[p.stem]]
    assert not found, found


# Each artefact command: its argv, and the settings object the tests build for it.
ARTEFACT_COMMANDS = {
    "fuse": (["fuse", "a", "b", "--out", "c", "--weights", "1", "0.5"],
             "training.adapters.fuse:FuseSettings",
             dict(adapters=[Path("a"), Path("b")], out=Path("c"), weights=[1.0, 0.5])),
    "merge": (["merge", "a", "--out", "m", "--dequantized-nf4"], "training.adapters.merge:MergeSettings",
              dict(adapter=Path("a"), out=Path("m"), dequantized_nf4=True)),
    "export-gguf": (["export-gguf", "a", "--out", "x.gguf", "--type", "q8_0", "--force"],
                    "training.adapters.gguf.checks:ExportSettings",
                    dict(adapter=Path("a"), out=Path("x.gguf"), gguf_type="q8_0", force=True)),
    "evaluate": (["evaluate", "--base", "b", "--data", "t.jsonl", "--report", "r", "--answer-rows", "2"],
                 "training.evaluate.evaluate:EvaluateSettings",
                 dict(base="b", data=["t.jsonl"], report=Path("r"), answer_rows=2)),
}


@pytest.mark.parametrize("command", sorted(ARTEFACT_COMMANDS))
def test_an_artefact_command_builds_one_settings_object_from_its_arguments(command):
    import importlib

    argv, where, fields = ARTEFACT_COMMANDS[command]
    module_name, _, class_name = where.partition(":")
    settings_class = getattr(importlib.import_module(module_name), class_name)
    assert settings_class.from_args(parse_args(argv)) == settings_class(**fields)
    run = next(node for node in parsed(ROOT / (COMMANDS[command][0].replace(".", "/") + ".py")).body
               if isinstance(node, ast.FunctionDef) and node.name == "run")
    built = [node for node in ast.walk(run) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
             and node.func.attr == "from_args"]
    assert len(built) == 1, f"{command}: run() builds its settings once, with {class_name}.from_args"


def test_the_pipeline_builds_its_settings_from_its_arguments():
    from training.evaluate.evaluate import EvaluateSettings
    from training.pipeline.pipeline import PipelineSettings, family_spec

    args = parse_args(["pipeline", "--family", "falcon", "--plan-only", "--eval-bits", "4", "lora.rank=8"])
    assert PipelineSettings.from_args(args) == PipelineSettings(
        spec=family_spec("falcon"), out=Path("pipeline-falcon"), recipe_overrides=["lora.rank=8"],
        evaluation=EvaluateSettings(bits=4), plan_only=True)


def settings_classes() -> dict[str, int]:
    """{name: number of fields} of every dataclass named *Settings in training/."""
    found = {}
    for path in TRAINING.rglob("*.py"):
        for node in parsed(path).body:
            if isinstance(node, ast.ClassDef) and node.name.endswith("Settings"):
                found[node.name] = sum(isinstance(item, ast.AnnAssign) for item in node.body)
    return found


def test_no_settings_with_more_than_three_fields_is_built_from_positional_arguments():
    many = {name for name, fields in settings_classes().items() if fields > 3}
    assert {"FuseSettings", "MergeSettings", "ExportSettings", "EvaluateSettings", "PipelineSettings"} <= many
    tests = sorted((ROOT / "tests").rglob("*.py"))
    found = [f"{shown(p)}:{node.lineno} {name}" for p in [*CODE, *tests, *(ROOT / "bench").glob("*.py")]
             for node in ast.walk(parsed(p)) if isinstance(node, ast.Call) and node.args
             for name in [getattr(node.func, "id", None) or getattr(node.func, "attr", None)] if name in many]
    assert not found, found
