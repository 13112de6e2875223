"""The pieces of retrieval that work on words: what an article defines, definition questions, and the
derivational variants a question's stem meets in the index (training/retrieval/definitions.py, analyze.py)."""

from __future__ import annotations

import pytest

from training.retrieval import definitions, index
from training.retrieval.analyze import Variants
from training.retrieval.definitions import asks_definition, definiendum


@pytest.mark.parametrize(("titulo", "texto", "expected"), [
    ("", "Posesión es la tenencia de una cosa determinada con ánimo de señor o dueño.", "posesion"),
    ("", "El domicilio consiste en la residencia, acompañada, real o presuntivamente, del ánimo.", "domicilio"),
    ("", "Comodato o préstamo de uso es un contrato en que una parte entrega a la otra.", "comodato o prestamo de uso"),
    ("", "Son legitimarios:\n1o.- Los hijos; y,\n2o.- Los padres.", "legitimarios"),
    ("", "Se llama persona jurídica una persona ficticia, capaz de ejercer derechos.", "persona juridica"),
    ("", "La persona que se obliga a la prestación del servicio se denomina trabajador y puede ser empleado.",
     "trabajador"),
    ("Culpa", "Actúa con culpa la persona que infringe el deber objetivo de cuidado.", "culpa"),  # the title
    ("Concepto de trabajador", "La persona que se obliga a la prestación del servicio...", "trabajador"),
    ("", "Si el hijo es común de ambos cónyuges, la sociedad conyugal goza del usufructo.", ""),  # a condition
    ("", "Para que cese la posesión inscrita es necesario que la inscripción se cancele.", ""),
    ("", "La costumbre no constituye derecho sino en los casos en que la ley se remite a ella.", ""),
])
def test_definiendum_is_the_term_an_article_defines(titulo, texto, expected):
    assert definiendum(titulo, texto) == expected


@pytest.mark.parametrize(("question", "expected"), [
    ("¿Qué es el comodato?", True), ("¿En qué consiste el domicilio?", True), ("¿Quiénes son legitimarios?", True),
    ("Según el Código Civil, ¿qué son los bienes muebles?", True), ("¿Cómo define la ley el contrato?", True),
    ("¿Qué pena tiene el que es sorprendido robando?", False), ("¿Cuánto dura la jornada de trabajo?", False),
])
def test_asks_definition(question, expected):
    assert asks_definition(question) is expected


def test_variants_are_suffixes_and_negations_of_a_stem_and_weigh_less():
    variants = Variants(["embarg", "inembarg", "embargar", "prohib", "prohibir", "prohibicion", "pen", "penal"])
    assert dict(variants("embarg")) == {"embarg": 1.0, "inembarg": 0.5, "embargar": 0.5}
    assert dict(variants("inembarg")) == {"inembarg": 1.0, "embarg": 0.5}
    assert dict(variants("prohib")) == {"prohib": 1.0, "prohibir": 0.5}  # "prohibicion": a suffix too long
    assert dict(variants("pen")) == {"pen": 1.0}  # too short to guess at: "pena" is not "penal"
    assert variants("gratis") == []  # not in the index, no variant either


def test_variants_meet_stems_of_one_root_and_the_law_word_for_a_question_word():
    variants = Variants(["president", "presidencial", "presidi", "reelect", "reeleccion", "requer", "requier"])
    assert dict(variants("presidencial")) == {"presidencial": 1.0, "president": 0.5}  # "presidi": root too short
    assert dict(variants("reeleccion")) == {"reeleccion": 1.0, "reelect": 0.5}
    # "requisitos para ser asambleísta" - "para ser asambleísta se requerirá"
    assert dict(variants("requisit")) == {"requer": 0.5, "requier": 0.5}


def test_a_change_to_the_definition_patterns_makes_the_cached_index_stale(monkeypatch):
    before = index.settings_digest()
    monkeypatch.setattr(definitions, "PATTERNS", [*definitions.PATTERNS, r"^se reputa (\w+)"])
    index.settings_digest.cache_clear()
    try:
        assert index.settings_digest() != before
    finally:
        monkeypatch.undo()
        index.settings_digest.cache_clear()
