"""Fuzzing the readers of a user's JSON and YAML documents and the template renderer (issue 26).

report.json (`compare`, the pipeline's reuse), training records, adapter_config.json, instruction
templates (the YAML, then Jinja programs rendered in the bounded sandbox), CONVERSATION.json, and
recipes with overrides. Each input is either accepted, and then its consumers run on it without
error, or refused with our ValueError naming the file; any other exception fails the test.
Inputs start from a valid document and are mutated (a value replaced by any JSON value, a key
dropped), or are bytes and text of any kind.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import assume, given
from hypothesis import strategies as st

from training.families import FAMILIES

SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=10**300, max_value=10**310)
           | st.floats() | st.text(max_size=12) | st.sampled_from(["\ud800", "x\udcff", "", "base", "llama2", "cat"]))
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
RAW = st.binary(max_size=300) | st.text(max_size=300).map(lambda text: text.encode("utf-8", "surrogatepass"))


def paths_of(value, prefix=()):
    """Every path into a JSON document: dict keys and list indices."""
    yield prefix
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        yield from paths_of(item, (*prefix, key))


@st.composite
def mutated(draw, base: dict, rounds: int = 3):
    """`base` with up to `rounds` values replaced by any JSON value, or keys and items removed."""
    document = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, rounds))):
        path = draw(st.sampled_from(list(paths_of(document))))
        if not path:
            continue
        parent = document
        for part in path[:-1]:
            parent = parent[part]
        if draw(st.booleans()):
            parent[path[-1]] = draw(JSON_VALUES)
        else:
            del parent[path[-1]]
    return document


def accepted(read, path: Path):
    """read(), or None when it refuses with our error naming `path`; any other exception fails."""
    try:
        return read()
    except ValueError as err:
        assert str(path) in str(err), str(err)
        return None


def write_json(path: Path, document) -> Path:
    path.write_text(json.dumps(document, ensure_ascii=True), encoding="utf-8")
    return path


# ---- report.json ------------------------------------------------------------------------------------

def report(family: str) -> dict:
    variants = ["base", f"{family}-instrucciones", f"{family}-fusionado"]
    task = {"path": "test.jsonl", "data_sha256": "a" * 64, "rows": 2, "answered_rows": [0, 1],
            "questions": ["¿Capital?", "¿Art. 71?"], "references": ["Quito.", "La naturaleza."],
            "scores": {v: {"answer_loss": 2.0, "perplexity": 7.0, "chrf": 20.0, "citation_accuracy": 0.5}
                       for v in variants},
            "answers": {v: ["Quito", "71"] for v in variants}}
    return {"base_model": f"hub/{family}", "template": Path(FAMILIES[family].template_file).stem,
            "template_sha256": family, "variants": variants, "tasks": {"leyes-ec": task}, "max_new_tokens": 96,
            "presets": {v: FAMILIES[family].preset for v in variants[1:]},
            "hardware": {"device": "cpu", "cpu": "x", "cpu_cores": 2, "torch_threads": 1},
            "pipeline": {"family": family, "adapters": {"instrucciones": variants[1]}}}


@given(document=mutated(report("llama2")))
def test_a_report_is_read_and_compared_or_refused_by_name(tmp_path, document):
    from training.evaluate.compare import build_comparison, load_run, mismatches, render_comparison
    from training.evaluate.report import render_markdown

    path = write_json(tmp_path / "report.json", document)
    run = accepted(lambda: load_run(path), path)
    if run is not None:
        render_markdown(run.results)
        other = load_run(write_json(tmp_path / "mistral.json", report("mistral")))
        mismatches([run, other])
        render_comparison(build_comparison([other, run], [], samples=3))


@given(raw=RAW)
def test_a_report_of_any_bytes_is_refused_by_name(tmp_path, raw):
    from training.evaluate.report import read_report

    path = tmp_path / "report.json"
    path.write_bytes(raw)
    accepted(lambda: read_report(path), path)


# ---- training records -------------------------------------------------------------------------------

RECORD = {"format": 1, "kind": "trained", "name": "a", "family": "llama2", "task": "leyes-ec", "preset": "p",
          "base_model": {"name_or_path": "hub/x", "revision": None},
          "template": {"name": "t", "file": "instruction-templates/t.yaml", "sha256": "0" * 64},
          "base_shape": {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 400},
          "dataset": {"train": "rows.jsonl", "sha256": "1" * 64, "replay": {"train": "b.jsonl", "rows": 3}},
          "config": {"dataset": {"format": "alpaca", "replay": {"rows": 3}}, "lora": {"rank": 8},
                     "quantization": {"bits": 4}, "training": {"seed": 1}},
          "metrics": {"train_loss": 1.0}, "stacked_on": {"name": "s", "weights_sha256": "2" * 64},
          "sources": [{"path": "a", "name": "a", "sha256": "3" * 64, "weight": 1.0}], "method": "svd", "rank": 8,
          "error": {"relative_frobenius": 0.1, "per_module": {}}, "libraries": {"torch": "2"}}


@given(document=mutated(RECORD) | JSON_VALUES)
def test_a_training_record_is_read_and_used_or_refused_by_name(tmp_path, document):
    from training.adapters.card import render_model_card
    from training.adapters.record import RECORD_NAME, read_record

    path = write_json(tmp_path / RECORD_NAME, document)
    record = accepted(lambda: read_record(tmp_path), path)
    if record is not None:
        render_model_card(record)
        _ = (record.family, record.base_model, record.base_revision, record.template_name, record.template_file,
             record.stacked_on, record.relative_error, [s.get("path") for s in record.sources])
        for section in ("dataset", "lora", "quantization", "training"):
            dict(record.config.get(section) or {})
        replay = (record.config.get("dataset") or {}).get("replay")
        assert replay is None or isinstance(replay, dict)


# ---- adapter_config.json ----------------------------------------------------------------------------

ADAPTER_CONFIG = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 8, "lora_alpha": 16, "lora_dropout": 0.05,
                  "target_modules": ["q_proj", "v_proj"], "bias": "none", "rank_pattern": {}, "alpha_pattern": {},
                  "base_model_name_or_path": "hub/x", "inference_mode": True, "init_lora_weights": True,
                  "layers_to_transform": None, "modules_to_save": None, "use_dora": False, "loftq_config": {}}


@given(document=mutated(ADAPTER_CONFIG) | JSON_VALUES)
def test_an_adapter_config_is_accepted_and_built_or_refused_by_name(tmp_path, document):
    from training.adapters.adapter_config import peft_config
    from training.adapters.folder import CONFIG_NAME, read_adapter_config

    path = write_json(tmp_path / CONFIG_NAME, document)
    config = accepted(lambda: read_adapter_config(tmp_path), tmp_path)
    if config is not None:
        accepted(lambda: peft_config(config, f"{CONFIG_NAME} in {tmp_path}"), tmp_path)
    assert path.is_file()


# ---- instruction templates: the YAML, then Jinja ----------------------------------------------------

HELLO = [{"role": "system", "content": "Sé breve."}, {"role": "user", "content": "¿Capital?"},
         {"role": "assistant", "content": "Quito."}]


def render_or_refuse(path: Path, generation_prompt: bool = True):
    from training.templates import load_template

    template = accepted(lambda: load_template(path), path)
    if template is not None:
        text = accepted(lambda: template.render(HELLO, add_generation_prompt=generation_prompt), path)
        assert text is None or isinstance(text, str)


@given(raw=RAW | st.builds(lambda doc: yaml.safe_dump(doc).encode(), mutated({"instruction_template": "{{ x }}"})))
def test_a_template_file_of_any_content_loads_or_is_refused_by_name(tmp_path, raw):
    path = tmp_path / "plantilla.yaml"
    path.write_bytes(raw)
    render_or_refuse(path)


NUMBERS = st.sampled_from(["0", "1", "3", "-2", "10**6", "10**12", "100000", "99999999999", "2.5", "(10**5)"])
ATOMS = NUMBERS | st.sampled_from(["'ab'", "messages[1]['content']", "[1, 'x']", "ns.s", "range(4)", "{'a': 'xy'}",
                                   "messages", "none", "loop_item", "'%5d|{:>9}|\\t'"])
OPERATORS = st.sampled_from(["*", "**", "+", "%", "~", "-", "//"])
FILTERS = st.sampled_from(["center({n})", "indent({n})", "join({a})", "replace('a', {a})", "format({n})",
                           "batch({n}, 'x')", "slice({n}, 0)", "tojson(indent={n})", "wordwrap(5, true, {a})",
                           "list", "sum(start=[])", "string", "length", "upper", "urlize", "truncate({n})",
                           "map('string')|join({a})", "unique|list", "pprint", "reverse|list", "first"])
METHODS = st.sampled_from(["ljust({n})", "zfill({n})", "join({a})", "replace('a', {a})", "expandtabs({n})",
                           "format({a}, {n})", "to_bytes({n}, 'big')", "split()", "center({n}, '*')"])


@st.composite
def expressions(draw, depth: int = 3):
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        return draw(ATOMS)
    left, right = draw(expressions(depth - 1)), draw(expressions(depth - 1))
    kind = draw(st.sampled_from(["binary", "binary", "filter", "filter", "method", "method", "lipsum"]))
    if kind == "binary":
        return f"({left} {draw(OPERATORS)} {right})"
    if kind == "lipsum":
        return f"lipsum({draw(NUMBERS)}, false, 1, {draw(NUMBERS)})"
    pattern = draw(FILTERS if kind == "filter" else METHODS)
    call = pattern.format(n=draw(NUMBERS), a=right)
    return f"({left})|{call}" if kind == "filter" else f"({left}).{call}"


@st.composite
def statements(draw, depth: int = 2):
    expression = draw(expressions())
    if depth == 0:
        kind = draw(st.sampled_from(["print", "set"]))
    else:
        kind = draw(st.sampled_from(["print", "set", "loop", "macro", "block"]))
    if kind == "print":
        return "{{ " + expression + " }}"
    if kind == "set":
        return "{% set ns.s = " + expression + " %}"
    body = "".join(draw(st.lists(statements(depth - 1), min_size=1, max_size=3)))
    if kind == "loop":
        return "{% for loop_item in " + expression + " %}" + body + "{% endfor %}"
    if kind == "block":
        return "{% set captured %}" + body + "{% endset %}{{ captured|length }}"
    return "{% macro m(n) %}" + body + "{% if n %}{{ m(n - 1) }}{{ m(n - 1) }}{% endif %}{% endmacro %}{{ m(" \
        + draw(NUMBERS) + ") }}"


@given(program=st.lists(statements(), min_size=1, max_size=4).map("".join))
def test_a_jinja_program_renders_within_bounds_or_is_refused_by_name(tmp_path, monkeypatch, program):
    from training import sandbox

    monkeypatch.setattr(sandbox, "MAX_SECONDS", 0.3)
    path = tmp_path / "plantilla.yaml"
    source = "{% set ns = namespace(s='ab') %}" + program
    path.write_text(yaml.safe_dump({"instruction_template": source}), encoding="utf-8")
    render_or_refuse(path)


@given(document=mutated({"c": HELLO})
       .map(lambda doc: doc.get("c", doc)) | JSON_VALUES)
def test_a_conversation_file_is_read_or_refused_by_name(tmp_path, document):
    from training.templates import load_conversation

    path = write_json(tmp_path / "conversacion.json", document)
    messages = accepted(lambda: load_conversation(path), path)
    assert messages is None or all(isinstance(m["content"], str) for m in messages)


# ---- recipes and overrides --------------------------------------------------------------------------

RECIPE = {"name": "tiny", "family": "llama2", "base_model": "hub/x", "output_dir": "out",
          "dataset": {"train": "rows.jsonl", "max_tokens": 128, "replay": None},
          "lora": {"rank": 4, "alpha": 8, "target_modules": ["q_proj"]},
          "quantization": {"bits": 4}, "training": {"epochs": 1, "seed": 3, "eval_steps": 10, "save_steps": 10}}


def schema_keys() -> list[str]:
    from training.config import load_schema

    def walk(schema, prefix):
        for key, sub in schema.get("properties", {}).items():
            yield prefix + key
            yield from walk(sub, f"{prefix}{key}.")
    return list(walk(load_schema(), ""))


OVERRIDE_VALUES = st.sampled_from(["8", "8.0", ".nan", ".inf", "-1", "99999999999999999999", "[a, b]", "{}", "null",
                                   "true", "'x'", "[", "&a x", "*a", "{train: r.jsonl, rows: 2}", "", "\"\\ud800\""])
OVERRIDES = st.lists(st.builds(lambda key, value: f"{key}={value}",
                               st.sampled_from(schema_keys()) | st.text(max_size=10),
                               OVERRIDE_VALUES | st.text(max_size=10)) | st.text(max_size=12), max_size=4)


@given(document=mutated(RECIPE, rounds=2) | JSON_VALUES, overrides=OVERRIDES)
def test_a_recipe_with_overrides_loads_or_is_refused_by_name(tmp_path, document, overrides):
    from training.config import load_config

    path = tmp_path / "receta.yaml"
    try:
        path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    except UnicodeEncodeError:
        assume(False)  # a surrogate cannot be written as YAML text: not an input a user can make
    config = accepted(lambda: load_config(path, overrides), path)
    if config is not None:
        assert isinstance(config.lora.rank, int) and not isinstance(config.lora.rank, bool)
        json.dumps(config.as_dict(), ensure_ascii=False).encode("utf-8")


@given(raw=RAW)
def test_a_recipe_of_any_bytes_is_refused_by_name(tmp_path, raw):
    from training.config import load_config

    path = tmp_path / "receta.yaml"
    path.write_bytes(raw)
    accepted(lambda: load_config(path), path)


@pytest.fixture(autouse=True)
def _quiet_peft_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
