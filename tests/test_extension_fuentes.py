"""Fuentes in the extension, without a webui: when it applies, the user's turn it builds (the training
rendering, byte for byte), the block under the answer with «cita no verificada», the chat hooks' state,
and the adapters' records that carry k (trained -> fused -> merged)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "extensions" / "spanish_ft"))

from spanish_ft_ext import fuentes  # noqa: E402
from spanish_ft_ext.adapters import AdapterInfo  # noqa: E402

from training.adapters.record import TrainingRecord, fused_record, merged_record  # noqa: E402
from training.retrieval.fuentes import HEADER, grounded_turn  # noqa: E402
from training.retrieval.search import MAX_CHARS, retrieve  # noqa: E402

JORNADA = "¿Cuántas horas dura la jornada máxima de trabajo en Ecuador?"
INSTRUCT = {"mode": "instruct"}


def info(task: str | None, k: int | None = None, record: bool = True) -> AdapterInfo:
    return AdapterInfo(name=f"x-{task}", path=Path("x"), rank=8, has_record=record, task=task, fuentes_k=k)


@pytest.mark.parametrize(("adapter", "expected"), [
    (info("leyes-ec", 3), 3), (info("leyes-ec"), fuentes.DEFAULT_K), (info("fusionado", 2), 2),
    (info("instrucciones"), None), (info("leyes-ec", record=False), None), (None, None),
])
def test_fuentes_applies_to_law_adapters_of_ours(adapter, expected):
    assert fuentes.turn_settings(True, INSTRUCT, adapter) == expected


def test_fuentes_is_off_with_the_switch_or_outside_instruct_mode():
    adapter = info("fusionado", 3)
    assert fuentes.turn_settings(False, INSTRUCT, adapter) is None
    assert fuentes.turn_settings(True, {"mode": "chat"}, adapter) is None
    assert fuentes.turn_settings(True, {"mode": "chat-instruct"}, adapter) is None


def test_the_users_turn_is_the_training_rendering():
    turn = fuentes.ground(JORNADA, 3)
    assert turn.user == grounded_turn(JORNADA, retrieve(JORNADA, 3)) and turn.user.startswith(HEADER)
    assert [h.articulo for h in turn.hits][:1] == ["47"]


def test_a_question_that_is_not_legal_or_too_long_goes_through_unchanged():
    assert fuentes.ground("Escribe un poema sobre el mar.", 3).user == "Escribe un poema sobre el mar."
    long = "¿" + "a" * MAX_CHARS + "?"
    turn = fuentes.ground(long, 3)
    assert turn.user == long and turn.hits == () and "demasiado" not in turn.note and "Fuentes" in turn.note


def test_the_block_lists_the_sources_and_marks_unverified_citations():
    hits = retrieve(JORNADA, 3)
    good = fuentes.sources_html("Según el artículo 47 del Código del Trabajo, ocho horas diarias.", hits)
    assert "Código del Trabajo, artículo 47</b>" in good and "<details>" in good and "(texto al 2023-02-01)" in good
    assert fuentes.UNVERIFIED not in good
    bad = fuentes.sources_html("Según el artículo 148 del Código Orgánico Integral Penal, ocho horas.", hits)
    assert f"<b>{fuentes.UNVERIFIED}</b>: artículo 148 de Código Orgánico Integral Penal" in bad
    assert fuentes.sources_html("Hola.", []) == ""


def test_the_block_escapes_the_law_text():
    hit = retrieve(JORNADA, 1)[0]
    odd = type(hit)(hit.norma, hit.articulo, "<b>título</b>", "a < b & c", hit.fecha, hit.edicion, 1.0, "bm25")
    block = fuentes.sources_html("", [odd])
    assert "&lt;b&gt;título&lt;/b&gt;" in block and "a &lt; b &amp; c" in block


@pytest.fixture
def chat(monkeypatch):
    """spanish_ft_ext.chat over a stand-in `modules.shared` (the webui's), with a chosen active adapter.

    Every extension module imported here is bound to the stand-in: all are dropped afterwards and
    the ones loaded before are put back, so later tests import them afresh."""
    before = {name: module for name, module in sys.modules.items()
              if name.startswith(("spanish_ft_ext.", "modules")) or name == "modules"}
    shared = types.SimpleNamespace(args=types.SimpleNamespace(lora_dir="loras", multi_user=False), model=None,
                                   lora_names=[], model_name="None", gradio={}, input_elements=[])
    modules = types.ModuleType("modules")
    modules.shared = shared
    for name in before:
        del sys.modules[name]
    sys.modules["modules"], sys.modules["modules.shared"] = modules, shared
    try:
        from spanish_ft_ext import chat

        monkeypatch.setattr(chat, "single_bundle_adapter", lambda: info("fusionado", 3))
        yield chat
    finally:
        added = [n for n in sys.modules if n.startswith(("spanish_ft_ext.", "modules")) or n == "modules"]
        for name in added:
            del sys.modules[name]
        sys.modules.update(before)
        package = sys.modules.get("spanish_ft_ext")
        for name in added:  # `from . import webui` reads the package's attribute before sys.modules
            if package is not None and name.startswith("spanish_ft_ext."):
                short = name.rpartition(".")[2]
                if name in before:
                    setattr(package, short, before[name])
                elif hasattr(package, short):
                    delattr(package, short)


def test_the_chat_hooks_ground_the_turn_and_show_its_sources(chat):
    params = {"fuentes": True}
    text, visible = chat.chat_input(params, JORNADA, JORNADA, INSTRUCT)
    assert visible == JORNADA and text == grounded_turn(JORNADA, retrieve(JORNADA, 3))
    shown = chat.output("Según el artículo 47 del Código del Trabajo, ocho horas.", True)
    assert "Código del Trabajo, artículo 47</b>" in shown and fuentes.UNVERIFIED not in shown
    params["fuentes"] = False  # the tab's switch
    assert chat.chat_input(params, JORNADA, JORNADA, INSTRUCT) == (JORNADA, JORNADA)
    assert chat.output("Respuesta.", True) == "Respuesta."


def test_without_the_search_packages_the_chat_goes_on_and_says_why(chat, monkeypatch):
    monkeypatch.setattr(chat, "missing_packages", lambda: "Fuentes no está disponible: falta el paquete «bm25s».")
    assert chat.chat_input({"fuentes": True}, JORNADA, JORNADA, INSTRUCT) == (JORNADA, JORNADA)
    assert "falta el paquete «bm25s»" in chat.output("Respuesta.", True)


def test_k_travels_from_the_trained_record_to_the_fused_and_merged_ones():
    trained = TrainingRecord({"task": "leyes-ec", "dataset": {"retrieval": {"k": 3}}})
    plain = TrainingRecord({"task": "instrucciones", "dataset": {}})
    entry = {"path": "a", "name": "a", "sha256": "0" * 64}
    fused = fused_record("f", [(plain, entry), (trained, entry)], [1.0, 1.0], "cat", 16, {}, 0.0, None, (None, None))
    assert trained.fuentes_k == 3 and plain.fuentes_k is None and fused.fuentes_k == 3
    assert merged_record("m", fused, "base", entry, "float16", False).fuentes_k == 3
    assert fused_record("g", [(plain, entry)], [1.0], "cat", 8, {}, 0.0, None, (None, None)).fuentes_k is None
    assert TrainingRecord({"fuentes": {"k": True}}).fuentes_k is None
