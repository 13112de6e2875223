"""The comparison's orchestration with a tiny model and real PEFT adapters (no webui).

set_adapters switches PEFT adapters on one PeftModel (or disables them for the base);
generate answers greedily with the bundle's generation helper; each variant's answer must
equal what a freshly loaded model with only that adapter answers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "extensions" / "spanish_ft"))
sys.path.insert(0, str(Path(__file__).resolve().parent / "webui"))

from spanish_ft_ext.adapters import scan_adapters  # noqa: E402
from spanish_ft_ext.comparison import (  # noqa: E402
    BASE_LABEL,
    Variant,
    comparison_markdown,
    comparison_variants,
    run_comparison,
)
from tiny_adapters import make_adapter  # noqa: E402

from training.evaluate.generate import generate_answers  # noqa: E402
from training.templates import load_template  # noqa: E402

QUESTION = "¿Cuál es la capital de Ecuador?"
TEMPLATE = load_template(ROOT / "instruction-templates" / "spanish_ft-Llama-2-chat.yaml")


@pytest.fixture(scope="module")
def setup(tiny_model_dirs, tmp_path_factory):
    loras = tmp_path_factory.mktemp("loras")
    base = tiny_model_dirs["llama2"]
    for seed, task in enumerate(("leyes-ec", "instrucciones"), start=1):
        make_adapter(base, loras / f"llama2-{task}", task=task, seed=seed, scale=1.0)
    make_adapter(base, loras / "otro-sin-registro", seed=5, record=False)
    return base, loras


def answer(model, tokenizer) -> str:
    conversation = [{"role": "user", "content": QUESTION}]
    return generate_answers(model, tokenizer, TEMPLATE, [conversation], max_new_tokens=12)[0].text


def fresh_answer(base: Path, adapter: Path | None) -> str:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    return answer(model, AutoTokenizer.from_pretrained(base))


class PeftSwitcher:
    """One PeftModel holding every adapter; set_adapters makes one active or disables them all."""

    def __init__(self, base: Path, loras: Path, names: list[str]):
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(base)
        base_model = AutoModelForCausalLM.from_pretrained(base)
        self.model = PeftModel.from_pretrained(base_model, loras / names[0], adapter_name=names[0])
        for name in names[1:]:
            self.model.load_adapter(loras / name, adapter_name=name)
        self.calls: list[tuple[str, ...]] = []

    def set_adapters(self, names: tuple[str, ...]) -> None:
        self.calls.append(names)
        if not names:
            self.model.base_model.disable_adapter_layers()
            return
        self.model.base_model.enable_adapter_layers()
        self.model.set_adapter(names[0])

    def generate(self, question: str) -> str:
        assert question == QUESTION
        return answer(self.model, self.tokenizer)


def test_variants_are_base_then_family_adapters_in_task_order(setup):
    infos, _ = scan_adapters(setup[1])
    variants = comparison_variants("llama2", infos)
    assert [v.adapters for v in variants] == [(), ("llama2-instrucciones",), ("llama2-leyes-ec",)]
    assert variants[0].label == BASE_LABEL
    assert comparison_variants("falcon", infos) == [Variant(BASE_LABEL, ())]


def test_each_answer_equals_a_fresh_model_with_only_that_adapter_and_state_is_restored(setup):
    base, loras = setup
    variants = comparison_variants("llama2", scan_adapters(loras)[0])
    switcher = PeftSwitcher(base, loras, ["llama2-instrucciones", "llama2-leyes-ec"])
    switcher.set_adapters(("llama2-leyes-ec",))  # the user's state before comparing
    results = run_comparison(QUESTION, variants, switcher.set_adapters, switcher.generate,
                             lambda: switcher.set_adapters(("llama2-leyes-ec",)))
    assert switcher.calls[-1] == ("llama2-leyes-ec",) and switcher.model.active_adapter == "llama2-leyes-ec"
    expected = [fresh_answer(base, None), fresh_answer(base, loras / "llama2-instrucciones"),
                fresh_answer(base, loras / "llama2-leyes-ec")]
    assert [r.answer for r in results] == expected
    assert len(set(expected)) == 3, "the tiny adapters should change the answer"
    assert all(r.error == "" and r.seconds > 0 for r in results)


def test_a_failing_variant_is_reported_and_the_others_still_answer_and_state_is_restored(setup):
    base, loras = setup
    switcher = PeftSwitcher(base, loras, ["llama2-instrucciones"])
    restored = []

    def set_adapters(names):
        if names == ("roto",):
            raise FileNotFoundError("roto/adapter_config.json")
        switcher.set_adapters(names)

    def generate(question):
        if switcher.calls[-1] == ():
            raise RuntimeError("sin memoria")
        return switcher.generate(question)

    variants = [Variant(BASE_LABEL, ()), Variant("roto", ("roto",)), Variant("i", ("llama2-instrucciones",))]
    results = run_comparison(QUESTION, variants, set_adapters, generate, lambda: restored.append(True))
    assert "falló la generación: RuntimeError: sin memoria" in results[0].error
    assert "no se pudo cargar: FileNotFoundError" in results[1].error
    assert results[2].answer == fresh_answer(base, loras / "llama2-instrucciones")
    assert restored == [True]


def test_restore_runs_even_when_the_comparison_is_interrupted():
    restored = []

    def generate(question):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_comparison("hola", [Variant("b", ())], lambda names: None, generate, lambda: restored.append(True))
    assert restored == [True]
    with pytest.raises(ValueError, match="pregunta"):
        run_comparison("  ", [Variant("b", ())], lambda names: None, lambda q: "", lambda: None)


def test_markdown_export_has_question_settings_every_variant_and_escapes_table_cells():
    from spanish_ft_ext.comparison import VariantResult

    results = [VariantResult(Variant(BASE_LABEL, ()), "a | b\nc", 1.234, 0.0),
               VariantResult(Variant("x", ("x",)), "", 0.5, 0.25, "falló la generación: E: e")]
    text = comparison_markdown("¿Qué?", results, {"preset": "spanish_ft-Mistral", "semilla": 42})
    assert "**Pregunta:** ¿Qué?" in text and "- preset: `spanish_ft-Mistral`" in text and "- semilla: `42`" in text
    assert f"| {BASE_LABEL} | — | a \\| b<br>c | 1.23 | 0.00 |" in text
    assert "| x | x | **Error:** falló la generación: E: e | 0.50 | 0.25 |" in text
