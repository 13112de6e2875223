"""Side-by-side comparison: one question, answered by the base model and by each adapter of a family.

`run_comparison` is the orchestration only: it switches adapters and generates through the
callables it is given, times each answer, and always restores the user's adapters at the
end (try/finally), even when a variant fails. The webui plugs in its own adapter loading
and generation (webui.py); the tests plug in PEFT and a tiny model. No webui needed:

    variants = comparison_variants("llama2", infos)
    results = run_comparison("¿Qué es la Constitución?", variants, set_adapters, generate, restore)
    print(comparison_markdown("¿Qué es la Constitución?", results, {"preset": "spanish_ft-Llama-2-chat"}))
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from .adapters import AdapterInfo

TASK_ORDER = ("instrucciones", "leyes-ec", "fusionado")
BASE_LABEL = "modelo base (sin adaptadores)"


@dataclass(frozen=True)
class Variant:
    label: str
    adapters: tuple[str, ...]  # () = the base model, adapters disabled


@dataclass(frozen=True)
class VariantResult:
    variant: Variant
    answer: str
    seconds: float  # generation time only (adapter loading excluded)
    load_seconds: float  # time to switch to this variant's adapters
    error: str = ""  # what went wrong for this variant, in the order it happened


def comparison_variants(family: str, adapter_infos: dict[str, AdapterInfo]) -> list[Variant]:
    """The base model, then the family's bundle adapters: instrucciones, leyes-ec, fusionado, others."""
    ours = [i for i in adapter_infos.values() if i.has_record and i.family == family]
    rank = {task: position for position, task in enumerate(TASK_ORDER)}
    ours.sort(key=lambda info: (rank.get(info.task, len(TASK_ORDER)), info.name))
    return [Variant(BASE_LABEL, ()), *(Variant(info.name, (info.name,)) for info in ours)]


def run_comparison(question: str, variants: list[Variant], set_adapters: Callable[[tuple[str, ...]], None],
                   generate: Callable[[str], str], restore: Callable[[], None]) -> list[VariantResult]:
    """Each variant's answer to `question`; restore() runs at the end whatever happened."""
    if not question.strip():
        raise ValueError("escribe una pregunta para comparar")
    results = []
    try:
        for variant in variants:
            started = time.perf_counter()
            try:
                set_adapters(variant.adapters)
            except Exception as err:  # one variant's broken adapter must not hide the others' answers
                results.append(VariantResult(variant, "", 0.0, time.perf_counter() - started,
                                             f"no se pudo cargar: {type(err).__name__}: {err}"))
                continue
            loaded = time.perf_counter()
            try:
                answer, error = generate(question), ""
            except Exception as err:
                answer, error = "", f"falló la generación: {type(err).__name__}: {err}"
            results.append(VariantResult(variant, answer, time.perf_counter() - loaded, loaded - started, error))
    finally:
        restore()
    return results


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>") or "—"


def comparison_markdown(question: str, results: list[VariantResult], settings: dict) -> str:
    """The comparison as a Markdown document (question, generation settings, answers, timings)."""
    lines = ["# Comparación spanish_ft", "", f"**Pregunta:** {question}", ""]
    lines += [f"- {key}: `{value}`" for key, value in settings.items()]
    lines += ["", "| variante | adaptadores | respuesta | generación (s) | carga (s) |",
              "| --- | --- | --- | --- | --- |"]
    for result in results:
        answer = result.answer if not result.error else f"**Error:** {result.error}"
        lines.append(f"| {_cell(result.variant.label)} | {_cell(', '.join(result.variant.adapters))} | {_cell(answer)} "
                     f"| {result.seconds:.2f} | {result.load_seconds:.2f} |")
    return "\n".join(lines) + "\n"
