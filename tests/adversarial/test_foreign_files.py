"""Foreign JSON and YAML, and templates that ask for too much (issue 26, classes 4 and 5).

Class 4: every JSON or YAML read from a user's disk passes training/userdata.py's door with its
schema first: another tool's report.json with the right keys but other shapes, a training record
whose fields have other types, a recipe with 8.0 for an integer or .nan for a number, a template
or conversation of the wrong shape. Each is refused naming the file and the key path, all at once.
Class 5: a template whose Jinja expands to a huge text, loops or recurses is refused naming the
template, in bounded memory and time (training/sandbox.py), by `render` and by `train`.
Each case asserts the exit code, the culprit named, no traceback and the user's folder unchanged.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import pytest
import yaml
from harness import FAST, assert_refused, fingerprint, make_adapter, refused, run_cli, user_folder, write_recipe

from training.evaluate.report import earlier_report
from training.families import FAMILIES

MEMORY_LIMIT = 2 << 30  # address space of a refused `render`: a bomb would need terabytes
HELLO = [{"role": "user", "content": "¿Cuál es la capital de Ecuador?"}]


def report(family: str = "llama2") -> dict:
    """A report.json as `python -m training evaluate` writes it (two variants, one task)."""
    variants = ["base", f"{family}-fusionado"]
    task = {"path": "test.jsonl", "data_sha256": "a" * 64, "rows": 2, "answered_rows": [0, 1],
            "questions": ["¿Capital?", "¿Art. 71?"], "references": ["Quito.", "La naturaleza."],
            "scores": {v: {"answer_loss": 2.0, "chrf": 20.0} for v in variants},
            "answers": {v: ["Quito", "71"] for v in variants}}
    return {"base_model": "hub/x", "template": Path(FAMILIES[family].template_file).stem, "template_sha256": "t",
            "variants": variants, "tasks": {"leyes-ec": task}, "pipeline": {"family": family}}


def write_report(folder: Path, data: dict | str) -> Path:
    folder.mkdir(parents=True)
    path = folder / "report.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture
def thesis(tmp_path) -> Path:
    return user_folder(tmp_path / "tesis")


# ---- class 4: foreign JSON and YAML -------------------------------------------------------------

def foreign_shapes() -> dict:
    """Right keys, other shapes: another tool's report."""
    data = report()
    data["tasks"]["leyes-ec"]["scores"] = {"base": "2.0", "llama2-fusionado": [1]}
    data["tasks"]["leyes-ec"]["questions"] = "¿Capital?"
    data["pipeline"] = {"family": ["llama2"]}
    return data


def missing_variant() -> dict:
    data = report()
    del data["tasks"]["leyes-ec"]["scores"]["llama2-fusionado"]
    data["tasks"]["leyes-ec"]["answers"]["base"] = ["Quito"]
    return data


@pytest.mark.parametrize(("data", "said"), [
    (foreign_shapes(), ["tasks.leyes-ec.scores.base: '2.0' is not of type 'object'",
                        "tasks.leyes-ec.questions: '¿Capital?' is not of type 'array'",
                        "pipeline.family: ['llama2'] is not of type 'string', 'null'"]),
    (missing_variant(), ["tasks.leyes-ec.scores: no scores for the variant 'llama2-fusionado'",
                         "tasks.leyes-ec.answers: 1 answers of 'base' for 2 questions"]),
    ({**report(), "variants": {"base": 1}}, ["variants: {'base': 1} is not of type 'array'"]),
    ('{"variants": ["base"], "tasks": {}, "template": "x", "base_model": "\\ud800"}',
     ["base_model: not valid Unicode text (a lone surrogate"]),
    ('{"variants": ["base"], "tasks": {}, "template": "x", "base_model": "y"', ["not a valid UTF-8 JSON file: line 1"]),
], ids=["other shapes", "a variant missing", "variants a mapping", "lone surrogate", "cut short"])
def test_compare_refuses_a_foreign_report_naming_every_key(tmp_path, capsys, thesis, data, said):
    good = write_report(thesis / "mistral" / "report", report("mistral"))
    bad = write_report(thesis / "otro" / "report", data)
    refused(["compare", good.parent.parent, bad.parent.parent, "--report", thesis / "comparacion"], capsys, thesis,
            bad, *said)


def test_a_pipelines_earlier_report_of_the_wrong_shape_is_evaluated_again_saying_why(tmp_path, thesis):
    saved = write_report(thesis / "run" / "report", {**report(), "tasks": [1, 2]})
    before, said = fingerprint(thesis), []
    assert earlier_report(saved, said.append) == {}
    assert str(saved) in said[0] and "tasks: [1, 2] is not of type 'object'" in said[0]
    assert earlier_report(thesis / "none.json", said.append) == {} and len(said) == 1
    assert fingerprint(thesis) == before


@pytest.fixture
def adapters(tiny_model_dirs, tmp_path) -> list[Path]:
    """Two real tiny adapters inside a user's folder."""
    folder = user_folder(tmp_path / "mis-adaptadores")
    return [make_adapter(tiny_model_dirs["llama2"], folder / name, seed) for seed, name in enumerate("ab", 1)]


@pytest.mark.parametrize(("fields", "said"), [
    ({"template": "spanish_ft-Llama-2-chat", "sources": 5},
     ["template: 'spanish_ft-Llama-2-chat' is not of type 'object', 'null'", "sources: 5 is not of type"]),
    ({"base_model": {"name_or_path": 7}, "family": "gpt2", "dataset": {"replay": []}},
     ["base_model.name_or_path: 7 is not of type", "family: 'gpt2' is not one of", "dataset.replay: [] is not of"]),
    ({"stacked_on": {"weights_sha256": ["x"]}, "config": {"lora": "rank 8"}},
     ["stacked_on.weights_sha256: ['x'] is not of type", "config.lora: 'rank 8' is not of type"]),
], ids=["template and sources", "base, family, replay", "stacked_on and config"])
def test_fuse_refuses_a_training_record_of_the_wrong_shape(adapters, capsys, fields, said):
    record = adapters[1] / "spanish_ft_record.json"
    record.write_text(json.dumps({**json.loads(record.read_text(encoding="utf-8")), **fields}), encoding="utf-8")
    out = adapters[0].parent / "fusionado"
    refused(["fuse", *adapters, "--out", out], capsys, adapters[0].parent, record, *said)
    assert not out.exists()


def test_a_recipe_with_floats_for_integers_and_nan_numbers_is_refused_at_once(tiny_model_dirs, tmp_path, capsys,
                                                                             thesis):
    rows = thesis.parent / "rows.jsonl"
    rows.write_text(json.dumps({"instruction": "a", "input": "", "output": "b"}) + "\n", encoding="utf-8")
    recipe = write_recipe(thesis / "receta.yaml", tiny_model_dirs["llama2"], rows, thesis.parent / "adapter",
                          lora={"rank": 8.0, "alpha": float("nan")}, training={"epochs": float("inf")})
    refused(["train", recipe, "training.seed=99999999999", "training.batch_size=2.0"], capsys, thesis, recipe,
            "lora.rank: 8.0 is not of type 'integer'", "lora.alpha: nan is not of type 'number'",
            "training.epochs: inf is not of type 'number'", "training.seed: 99999999999 is greater than the maximum",
            "training.batch_size: 2.0 is not of type 'integer'")
    assert not (thesis.parent / "adapter").exists()


def test_an_override_inside_a_null_mapping_is_not_dropped(tiny_model_dirs, tmp_path, capsys, thesis):
    rows = thesis.parent / "rows.jsonl"
    rows.write_text(json.dumps({"instruction": "a", "input": "", "output": "b"}) + "\n", encoding="utf-8")
    recipe = write_recipe(thesis / "receta.yaml", tiny_model_dirs["llama2"], rows, thesis.parent / "adapter",
                          dataset={"train": str(rows), "replay": None})
    refused(["train", recipe, "dataset.replay.rows=3"], capsys, thesis, recipe,
            "dataset.replay.train: required key is missing")


@pytest.mark.parametrize(("text", "said"), [
    ("instruction_template: [1, 2]\n", "instruction_template: [1, 2] is not of type 'string'"),
    ("plantilla: '{{ x }}'\n", "instruction_template: required key is missing"),
    ("- instruction_template\n", "['instruction_template'] is not of type 'object'"),
    ('instruction_template: "\\ud800"\n', "invalid Unicode character escape"),
], ids=["a list", "another key", "a list document", "lone surrogate"])
def test_render_refuses_a_template_of_the_wrong_shape(tmp_path, capsys, thesis, text, said):
    template = thesis / "plantilla.yaml"
    template.write_text(text, encoding="utf-8")
    conversation = thesis / "conversacion.json"
    conversation.write_text(json.dumps(HELLO), encoding="utf-8")
    refused(["render", template, conversation], capsys, thesis, template, said)


@pytest.mark.parametrize(("data", "said"), [
    ([{"role": "user", "content": ["hola"]}], "[0].content: ['hola'] is not of type 'string'"),
    ({"role": "user"}, "{'role': 'user'} is not of type 'array'"),
    ([{"role": "user", "content": "\ud800"}], "[0].content: not valid Unicode text"),
], ids=["content a list", "an object", "lone surrogate"])
def test_render_refuses_a_conversation_of_the_wrong_shape(capsys, thesis, data, said):
    conversation = thesis / "conversacion.json"
    conversation.write_text(json.dumps(data), encoding="utf-8")
    refused(["render", "instruction-templates/spanish_ft-Gemma.yaml", conversation], capsys, thesis, conversation,
            said)


# ---- class 5: templates that ask for too much ---------------------------------------------------

BOMBS = {
    "repetition": "{{ 'ab' * 10**12 }}",
    "doubling loop": "{% set ns = namespace(s='ab') %}{% for i in range(80) %}{% set ns.s = ns.s ~ ns.s %}"
                     "{% endfor %}{{ ns.s }}",
    "format width": "{{ '{:>{}}'.format('x', 10**13) }}",
    "printf width": "{{ '%0*d'|format(10**12, 7) }}",
    "shared list printed": "{% set l = ['x' * 500000] * 2 %}{% set m = [l, l, l, l, l, l, l, l] %}{{ [m, m, m, m] }}",
    "join amplified": "{% set s = 'ab' * 1000 %}{{ (s * 500)|join(s) }}",
    "macro buffer": "{% macro m() %}{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}{% endmacro %}{{ m() }}",
    "int power": "{{ (7 ** 100000 ** 3) % 10 }}",
    "bytes": "{{ (1).to_bytes(10**11, 'big')|length }}",
    "recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
}


def write_template(folder: Path, source: str) -> Path:
    path = folder / "plantilla.yaml"
    path.write_text(yaml.safe_dump({"instruction_template": source}), encoding="utf-8")
    return path


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


@pytest.mark.parametrize("source", BOMBS.values(), ids=BOMBS)
def test_render_refuses_a_template_that_expands_to_a_huge_text(thesis, source):
    template = write_template(thesis, source)
    conversation = thesis / "conversacion.json"
    conversation.write_text(json.dumps(HELLO), encoding="utf-8")
    before, started = fingerprint(thesis), time.monotonic()
    done = run_cli("render", template, conversation, preexec_fn=limit_memory, timeout=120)
    assert_refused(done.returncode, done.stderr, template)
    assert "rendering failed" in done.stderr and "MemoryError" not in done.stderr
    assert time.monotonic() - started < 30
    assert fingerprint(thesis) == before


@pytest.mark.parametrize("source", [
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(64) }}",
    "{% for i in range(100000) %}{% for c in 'x' * 100000 %}{% if c == 'y' %}{% break %}{% endif %}{% endfor %}"
    "{% endfor %}",
], ids=["nested loops", "exponential macro", "loop over a long string"])
def test_render_refuses_a_template_that_runs_too_long(thesis, capsys, monkeypatch, source):
    from training import sandbox

    monkeypatch.setattr(sandbox, "MAX_SECONDS", 0.5)
    template = write_template(thesis, source)
    conversation = thesis / "conversacion.json"
    conversation.write_text(json.dumps(HELLO), encoding="utf-8")
    started = time.monotonic()
    refused(["render", template, conversation], capsys, thesis, template, "rendering took longer than 0.5 s")
    assert time.monotonic() - started < 10


def test_train_refuses_a_template_bomb_naming_the_template(run_setup, tmp_path):
    template = write_template(run_setup["thesis"], "{% for m in messages %}{{ m['content'] * 10**11 }}{% endfor %}")
    before = fingerprint(run_setup["thesis"])
    done = run_cli("train", run_setup["recipe"], f"template={template}", *FAST, "training.max_steps=1",
                   preexec_fn=limit_memory, timeout=300)
    assert_refused(done.returncode, done.stderr, template)
    assert "MemoryError" not in done.stderr
    assert fingerprint(run_setup["thesis"]) == before
    assert not run_setup["out"].exists()
