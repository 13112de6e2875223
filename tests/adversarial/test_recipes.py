"""Hostile recipes and templates: YAML anchors and aliases are refused (an alias bomb fails in under
2 s and 200 MB instead of running past 1 GB), a recipe that is not a mapping says what it is, and
error messages quote values shortened. Each refusal names the file (and the line or key), exits 1
with a message rather than a traceback, and leaves the recipe's folder byte-for-byte as it was."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from harness import ROOT, TEMPLATE, assert_refused, cli_env, fingerprint, refused, write_recipe, write_rows

from training.config import load_config

LEVELS = "abcdefghi"
# 9 levels of 9 aliases each: 9**9 (387 million) strings once expanded, in under 400 bytes of YAML
BOMB_LINES = [f'{LEVELS[0]}: &{LEVELS[0]} ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'] + [
    f"{name}: &{name} [{','.join(['*' + below] * 9)}]" for below, name in zip(LEVELS, LEVELS[1:], strict=False)]
# the same as one flow value, for an override: name=[&a [...], &b [*a, ...], ...]
BOMB_FLOW = "[" + ", ".join(line.split(": ", 1)[1] for line in BOMB_LINES) + "]"

# the wrapper's only child is the measured command, so RUSAGE_CHILDREN is that command's peak
MEASURE = """
import json, resource, subprocess, sys, time
started = time.monotonic()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps({"seconds": time.monotonic() - started, "code": done.returncode, "stderr": done.stderr,
                  "peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""
LOAD = "import sys; from training.config import load_config; load_config(sys.argv[1], sys.argv[2:])"


def measured(*command: str) -> dict:
    """Run `command` in a fresh process; its wall time, exit code, stderr and peak RSS in MB."""
    done = subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True, text=True, cwd=ROOT,
                          env=cli_env(), timeout=300)
    return json.loads(done.stdout)


@pytest.fixture
def recipes(tiny_model_dirs, tmp_path) -> dict:
    """A folder holding a valid tiny recipe, beside the data and output it names."""
    folder = tmp_path / "recetas"
    folder.mkdir()
    rows = write_rows(tmp_path / "rows.jsonl", 2)
    good = write_recipe(folder / "tiny.yaml", tiny_model_dirs["llama2"], rows, tmp_path / "adapter")
    return {"folder": folder, "good": good, "text": good.read_text(encoding="utf-8")}


def test_an_alias_bomb_in_a_recipe_is_refused_by_its_line(recipes, capsys):
    bomb = recipes["folder"] / "bomb.yaml"
    bomb.write_text(recipes["text"] + "\n".join(BOMB_LINES) + "\nname: *i\n", encoding="utf-8")
    refused(["train", bomb], capsys, recipes["folder"], bomb, "line ", "anchors and aliases (&name, *name) are not")


def test_an_alias_bomb_costs_under_2_s_and_200_mb(recipes):
    """Time and peak memory of a fresh process loading the recipe (in a file, then in an override)."""
    bomb = recipes["folder"] / "bomb.yaml"
    bomb.write_text(recipes["text"] + "\n".join(BOMB_LINES) + "\nname: *i\n", encoding="utf-8")
    for overrides in ([], [f"name={BOMB_FLOW}"]):
        recipe = bomb if not overrides else recipes["good"]
        result = measured(sys.executable, "-c", LOAD, str(recipe), *overrides)
        assert result["code"] == 1 and "anchors and aliases" in result["stderr"], result["stderr"][-3000:]
        assert result["seconds"] < 2, result
        assert result["peak_mb"] < 200, result


def test_the_cli_refuses_a_bomb_in_under_2_s_and_200_mb(recipes):
    """`python -m training train` checks the recipe before it imports torch (__main__'s early check)."""
    bomb = recipes["folder"] / "bomb.yaml"
    bomb.write_text(recipes["text"] + "\n".join(BOMB_LINES) + "\nname: *i\n", encoding="utf-8")
    before = fingerprint(recipes["folder"])
    for argv in (["train", str(bomb)], ["train", str(recipes["good"]), f"name={BOMB_FLOW}"]):
        result = measured(sys.executable, "-m", "training", *argv)
        assert_refused(result["code"], result["stderr"], Path(argv[1]))
        assert "anchors and aliases" in result["stderr"]
        assert result["seconds"] < 2, result
        assert result["peak_mb"] < 200, result
    assert fingerprint(recipes["folder"]) == before


def test_a_bomb_in_an_override_value_is_refused_naming_the_override(recipes, capsys):
    refused(["train", recipes["good"], f"name={BOMB_FLOW}"], capsys, recipes["folder"], recipes["good"],
            "override 'name=[&a", "anchors and aliases")


def test_a_plain_alias_in_an_override_is_refused(recipes, capsys):
    refused(["train", recipes["good"], "name=*a"], capsys, recipes["folder"], recipes["good"],
            "override 'name=*a'", "anchors and aliases")


@pytest.mark.parametrize(("text", "found"), [("- a\n- b\n", "a YAML list"), ("just words\n", "a YAML str"),
                                             ("42\n", "a YAML int"), ("\n# nothing\n", "empty")])
def test_a_recipe_that_is_not_a_mapping_says_what_it_is(recipes, capsys, text, found):
    recipe = recipes["folder"] / "odd.yaml"
    recipe.write_text(text, encoding="utf-8")
    refused(["train", recipe], capsys, recipes["folder"], recipe, f"the recipe is {found}; it must be a YAML mapping")


def huge_recipe(recipes: dict, **keys) -> Path:
    path = recipes["folder"] / "huge.yaml"
    path.write_text(recipes["text"] + "".join(f"{key}: {json.dumps(value)}\n" for key, value in keys.items()),
                    encoding="utf-8")
    return path


TEN_MB = "x" * 10_000_000


@pytest.mark.parametrize("where", ["file", "override"])
def test_a_10_mb_value_is_shortened_in_the_message(recipes, capsys, where):
    recipe = huge_recipe(recipes, lora={"rank": TEN_MB}) if where == "file" else recipes["good"]
    argv = ["train", recipe] + ([f"lora.rank={TEN_MB}"] if where == "override" else [])
    err = refused(argv, capsys, recipes["folder"], recipe, "lora.rank: 'xxx", "characters cut]...xxx",
                  "is not of type 'integer'")
    assert len(err) < 2000


def test_a_10_mb_unknown_key_is_shortened_in_the_message(recipes, capsys):
    recipe = recipes["folder"] / "huge.yaml"
    recipe.write_text(recipes["text"] + f"? {TEN_MB}\n: 1\n", encoding="utf-8")  # an explicit key: no length limit
    err = refused(["train", recipe], capsys, recipes["folder"], recipe, "- xxx", "characters cut",
                  ": unknown key; allowed here: base_model")
    assert len(err) < 2000


def test_an_integer_of_5000_digits_is_named_not_a_traceback(recipes, capsys):
    err = refused(["train", recipes["good"], "lora.rank=" + "9" * 5000], capsys, recipes["folder"],
                  recipes["good"], "override 'lora.rank=999", "the value is not valid YAML")
    assert len(err) < 2000


def test_deep_nesting_is_refused_by_its_line(recipes, capsys):
    recipe = recipes["folder"] / "deep.yaml"
    recipe.write_text(recipes["text"] + "name: " + "[" * 60 + "]" * 60 + "\n", encoding="utf-8")
    refused(["train", recipe], capsys, recipes["folder"], recipe, "nested deeper than 50 levels")


def test_a_recipe_with_a_bom_loads(recipes):
    recipe = recipes["folder"] / "bom.yaml"
    recipe.write_bytes(b"\xef\xbb\xbf" + recipes["good"].read_bytes())
    assert load_config(recipe).name == "tiny"


ANCHORED_TEMPLATE = 'x: &t "{{ messages }}"\ninstruction_template: *t\n'


@pytest.mark.parametrize("name", ["render", "train"])
def test_a_template_with_anchors_is_refused_by_its_line(recipes, capsys, name):
    template = recipes["folder"] / "anchored.yaml"
    template.write_text(ANCHORED_TEMPLATE, encoding="utf-8")
    conversation = recipes["folder"] / "chat.json"
    conversation.write_text(json.dumps([{"role": "user", "content": "hola"}]), encoding="utf-8")
    argv = (["render", template, conversation] if name == "render"
            else ["train", recipes["good"], f"template={template}", "training.report_to=none"])
    refused(argv, capsys, recipes["folder"], template, "invalid YAML: line 1: YAML anchors and aliases")


def test_shipped_templates_have_no_anchors():
    from training.templates import load_template

    for path in sorted((ROOT / "instruction-templates").glob("*.yaml")):
        assert load_template(path).source
    assert (ROOT / TEMPLATE).is_file()
