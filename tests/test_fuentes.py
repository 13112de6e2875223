"""Fuentes: the retrieved articles in the user's turn, the RAFT rendering of training rows and the
citation check (training/retrieval/fuentes.py), on the shipped law corpus."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from training.datasets.citations import canonical_article, find_citations
from training.retrieval.fuentes import (
    ARTICLE_CHARS,
    CUT,
    HEADER,
    NOT_IN_SOURCES,
    QUESTION,
    article_hit,
    citation_check,
    excerpt,
    grounded_row,
    grounded_turn,
)
from training.retrieval.search import retrieve
from training.templates import load_template

ROOT = Path(__file__).resolve().parents[1]
SOURCE = re.compile(r"\[\d+\] ")  # a source's line, not a "[…]" cut
JORNADA = "¿Cuántas horas dura la jornada máxima de trabajo en Ecuador?"


def key(hit) -> tuple[str, str]:
    return hit.norma, canonical_article(hit.articulo)


def test_a_question_with_no_sources_is_left_as_it_is():
    assert grounded_turn("¿Cuántos minutos son 3,5 horas?", []) == "¿Cuántos minutos son 3,5 horas?"


def test_the_turn_lists_the_articles_then_the_question():
    hits = retrieve(JORNADA, 3)
    turn = grounded_turn(JORNADA, hits)
    lines = turn.split("\n")
    assert lines[0] == HEADER and turn.endswith("\n\n" + QUESTION + JORNADA)
    assert lines[1].startswith("[1] Código del Trabajo, artículo 47 (De la jornada máxima). La jornada máxima")
    assert [line[:4] for line in lines if SOURCE.match(line)] == ["[1] ", "[2] ", "[3] "]


def test_the_template_puts_the_sources_in_the_users_turn():
    template = load_template(ROOT / "instruction-templates" / "spanish_ft-Gemma.yaml")
    turn = grounded_turn(JORNADA, retrieve(JORNADA, 2))
    prompt = template.render([{"role": "user", "content": turn}], add_generation_prompt=True)
    assert "<start_of_turn>user\n" in prompt and turn + "<end_of_turn>\n<start_of_turn>model\n" in prompt


def test_a_long_article_keeps_its_opening_and_the_paragraph_asked_about():
    article = article_hit("Constitución de la República del Ecuador", "66")  # 29 numbered rights
    assert len(article.texto) > 3 * ARTICLE_CHARS
    cut = excerpt(article.texto, "¿Está prohibida la pena de muerte?")
    assert len(cut) <= ARTICLE_CHARS + 2 * len(CUT) + 40
    assert cut.startswith(article.texto.strip().split("\n")[0]) and "pena de muerte" in cut and CUT in cut
    assert excerpt("Texto corto.", "x") == "Texto corto."


def test_an_article_outside_the_corpus_is_none():
    assert article_hit("Código Civil", "99999") is None
    assert article_hit("Código de la Niñez y Adolescencia", "1") is None


def rows() -> list[dict]:
    with open(ROOT / "training/datasets/leyes-ec/train.jsonl", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines][:120]


def test_raft_rows_hold_the_gold_article_or_say_it_is_missing():
    kinds = Counter()
    for row in rows():
        fuente = row["fuente"]
        made = grounded_row(row["instruction"], row["output"], fuente, row["id"], k=3, missing_share=0.25, seed=7)
        assert made == grounded_row(row["instruction"], row["output"], fuente, row["id"], 3, 0.25, 7)  # seeded
        kinds[made.kind] += 1
        listed = sum(bool(SOURCE.match(line)) for line in made.user.split("\n"))
        gold = (fuente["norma"], canonical_article(str(fuente["articulo"])))
        named = re.compile(rf"\[\d\] {re.escape(gold[0])}, artículo {re.escape(str(fuente['articulo']))}[. ]", re.M)
        if made.kind == "gold":
            assert made.answer == row["output"] and named.search(made.user) and 1 <= listed <= 3
        elif made.kind == "missing":
            assert made.answer in NOT_IN_SOURCES and not find_citations(made.answer)
            assert not named.search(made.user) and listed <= 3
        else:
            assert made.answer == row["output"]
    assert kinds["gold"] > kinds["missing"] > 0.1 * sum(kinds.values())


def test_the_gold_article_is_put_in_when_retrieval_misses_it():
    question = "¿Qué dice la ley sobre esto?"  # names no topic: retrieval cannot find the gold article
    fuente = {"norma": "Código Civil", "articulo": "2077"}
    made = grounded_row(question + " Préstamo de uso, comodato.", "Según el artículo 2077 del Código Civil...",
                        fuente, "x", k=2, missing_share=0.0, seed=1)
    assert made.kind == "gold" and "Código Civil, artículo 2077" in made.user


@pytest.mark.parametrize(("answer", "verified", "unverified"), [
    ("Según el artículo 47 del Código del Trabajo, ocho horas.", ["47"], []),
    ("El art. 5 del COIP lo dice.", [], ["5"]),
    ("El artículo 47 lo dice.", ["47"], []),  # no norm named: one source has that number
    ("No tengo un artículo que lo resuelva.", [], []),
])
def test_citations_are_checked_against_the_sources(answer, verified, unverified):
    check = citation_check(answer, retrieve(JORNADA, 3))
    assert [c.articulo for c in check.verified] == verified
    assert [c.articulo for c in check.unverified] == unverified
