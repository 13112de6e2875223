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
    ABSENT,
    HEADER,
    NO_TEXT,
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
        else:  # the chat could not ground it: the answer says so and cites nothing, never from memory
            assert not find_citations(made.answer) and made.answer != row["output"]
            assert "[sin texto]" in made.user if made.kind == "absent" else made.user == row["instruction"]
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


def test_dataset_retrieval_grounds_the_tasks_rows_and_records_it(tmp_path, repo_root):
    """prepare_data with a Grounder: the user turn the model learns from is grounded_turn's, the
    answers of "missing" rows cite nothing, replayed rows stay as they are, the record says so."""
    from tiny import build_tokenizer

    from training.config import DataSettings, ReplaySettings, RetrievalSettings
    from training.data.prepare import prepare_data
    from training.retrieval.fuentes import Grounder

    leyes = tmp_path / "leyes.jsonl"
    leyes.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows()[:40]), encoding="utf-8")
    replayed = tmp_path / "otra.jsonl"
    replayed.write_text(json.dumps({"instruction": "Calcula 12 más 30.", "output": "42."}) + "\n", encoding="utf-8")
    settings = DataSettings(train=str(leyes), eval=None, eval_fraction=0.0, format="alpaca", split="train",
                            on_error="raise", max_tokens=4096, replay=ReplaySettings(str(replayed), 1),
                            retrieval=RetrievalSettings(k=2, missing_share=0.3))
    tokenizer = build_tokenizer("falcon")  # byte-level: decoding gives the text back
    template = load_template(repo_root / "instruction-templates" / "spanish_ft-Falcon.yaml")
    ground = Grounder(settings.retrieval, seed=3)
    data = prepare_data(settings, tokenizer, template, seed=3, ground=ground)
    record = data.record["retrieval"]
    assert record["k"] == 2 and sum(record["rows"].values()) == 40 and record["rows"]["missing"] > 0
    assert len(record["corpus_sha256"]) == 64
    texts = [tokenizer.decode(ids) for ids in data.train["input_ids"]]
    assert sum(HEADER in text for text in texts) == record["rows"]["gold"] + record["rows"]["missing"]
    assert not any(HEADER in text for text in texts if "Calcula 12" in text)  # the replayed row
    first = rows()[0]
    made = grounded_row(first["instruction"], first["output"], first["fuente"], first["id"], 2, 0.3, 3)
    assert made.user in texts[0] and made.answer in texts[0]


@pytest.mark.parametrize(("question", "absent"), [
    ("¿Qué dice el Código de la Niñez y Adolescencia sobre la pensión alimenticia?",
     ["Código de la Niñez y Adolescencia"]),
    ("¿Qué sanción impone la Ley Orgánica de Protección de Datos Personales por filtrar datos?",
     ["Ley Orgánica de Protección de Datos Personales"]),
    ("¿Qué dice la Ley Orgánica de Garantías Jurisdiccionales sobre la acción de protección?", []),  # held, shortened
    ("¿Qué dice el Código del Trabajo sobre las vacaciones?", []),
    ("¿Según la ley de la oferta y la demanda sube el precio?", []),  # not a title
])
def test_a_named_norm_without_text_here_is_said_in_the_turn(question, absent):
    from training.retrieval.fuentes import absent_norms, sources_for

    assert absent_norms(question) == absent
    hits, missing = sources_for(question, 3)
    turn = grounded_turn(question, hits, missing)
    assert all(f"[sin texto] {norma}: esta norma no está entre las fuentes." in turn for norma in absent)


def test_a_row_citing_a_norm_with_no_text_here_learns_to_say_so():
    fuente = {"norma": "Código de la Niñez y Adolescencia", "articulo": "15"}
    made = grounded_row("¿Qué derechos reconoce el Código de la Niñez y Adolescencia?", "Según el artículo 15 ...",
                        fuente, "cna", k=3, missing_share=0.0, seed=1)
    assert made.kind == "absent" and "[sin texto] Código de la Niñez" in made.user
    assert made.answer in [a.format(norma="Código de la Niñez y Adolescencia") for a in ABSENT]
    assert not find_citations(made.answer)


def test_a_legal_question_retrieval_finds_nothing_for_is_answered_without_citing():
    """The chat shows the question alone: an answer citing the gold article would teach citing from memory."""
    question = "¿Qué permiso hace falta para volar un dron?"
    assert retrieve(question, 3) == []
    made = grounded_row(question, "Según el artículo 47 del Código del Trabajo ...",
                        {"norma": "Código del Trabajo", "articulo": "47"}, "dron", k=3, missing_share=0.0, seed=1)
    assert made.kind == "none" and made.user == question and made.answer in NO_TEXT
    assert not find_citations(made.answer)


@pytest.mark.parametrize("question", [
    "Calcula 12 más 30.", "Escribe un poema corto sobre el trabajo y la familia.", JORNADA,
    "¿Según la ley de la oferta y la demanda sube el precio?", "Resume el siguiente texto:\n\n" + "palabra " * 400,
])
def test_replayed_rows_get_the_chats_sources_or_distractors(question):
    from training.retrieval.fuentes import replayed_turn, sources_for

    try:
        chat = grounded_turn(question, *sources_for(question, 3))
    except ValueError:  # too long to retrieve for: the chat gives no sources
        chat = question
    turn, kind = replayed_turn(question, 3, distractor=False)
    assert turn == chat and kind == ("plain" if chat == question else "sources")
    turn, kind = replayed_turn(question, 3, distractor=True)
    if chat != question or kind == "plain":  # sources of its own, or nothing ranks at all
        assert turn == chat
    else:
        hits = retrieve(question, 3, only_legal=False)
        assert kind == "distractor" and turn == grounded_turn(question, hits) and len(hits) == 3


def _settings(tmp_path, unanswerable, distractor_share, replay_rows):
    from training.config import DataSettings, ReplaySettings, RetrievalSettings

    leyes = tmp_path / "leyes.jsonl"
    leyes.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows()[:10]), encoding="utf-8")
    replayed = tmp_path / "otra.jsonl"
    replayed.write_text("".join(json.dumps({"instruction": q, "output": a}, ensure_ascii=False) + "\n"
                                for q, a in replay_rows), encoding="utf-8")
    return DataSettings(train=str(leyes), eval=None, eval_fraction=0.0, format="alpaca", split="train",
                        on_error="raise", max_tokens=4096, replay=ReplaySettings(str(replayed), len(replay_rows)),
                        retrieval=RetrievalSettings(k=2, missing_share=0.2, unanswerable=str(unanswerable),
                                                    distractor_share=distractor_share))


def test_unanswerable_questions_and_distractors_are_added_and_recorded(tmp_path, repo_root):
    from tiny import build_tokenizer

    from training.data.prepare import prepare_data
    from training.retrieval.fuentes import Grounder

    unanswerable = tmp_path / "sin.jsonl"
    unanswerable.write_text("".join(json.dumps({"id": f"u{i}", "instruction": q}, ensure_ascii=False) + "\n" for i, q in
                                    enumerate(["¿Qué establece la Ley de Minería sobre las concesiones mineras?",
                                               "¿Qué permiso hace falta para volar un dron?"])), encoding="utf-8")
    poem = ("Escribe un poema corto sobre el trabajo y la familia.", "El trabajo de cada día, la familia que espera.")
    settings = _settings(tmp_path, unanswerable, 1.0, [poem, ("¿Cuánto es 7 por 8?", "56.")])
    tokenizer = build_tokenizer("falcon")
    template = load_template(repo_root / "instruction-templates" / "spanish_ft-Falcon.yaml")
    ground = Grounder(settings.retrieval, seed=3)
    data = prepare_data(settings, tokenizer, template, seed=3, ground=ground)
    record = data.record["retrieval"]
    assert record["unanswerable"]["rows"] == {"missing": 0, "absent": 1, "none": 1}
    assert record["replayed"] == {"distractor_share": 1.0, "rows": {"plain": 1, "sources": 0, "distractor": 1}}
    assert data.record["rows_kept"] == 10 + 2 + 2
    texts = [tokenizer.decode(ids) for ids in data.train["input_ids"]]
    mining = next(t for t in texts if "Ley de Minería" in t)
    assert "[sin texto] Ley de Minería" in mining and ("No tengo el texto de Ley de Minería" in mining
        or "No tengo a la vista el texto de Ley de Minería" in mining)
    assert not find_citations(mining.split("Pregunta: ")[1])
    drone = next(t for t in texts if "dron" in t)
    assert HEADER not in drone and any(answer in drone for answer in NO_TEXT)
    poem_text = next(t for t in texts if "poema" in t)
    assert HEADER in poem_text and poem[1] in poem_text  # articles that do not concern it; answer unchanged
    assert HEADER not in next(t for t in texts if "7 por 8" in t)  # nothing ranks: as it was


def test_a_bad_unanswerable_file_is_named_with_its_line(tmp_path, repo_root):
    from tiny import build_tokenizer

    from training.data.prepare import prepare_data
    from training.data.read import DataError
    from training.retrieval.fuentes import Grounder

    unanswerable = tmp_path / "sin.jsonl"
    unanswerable.write_text('{"instruction": "¿Qué dice la Ley de Minería?"}\n{"instruction": ""}\n', encoding="utf-8")
    settings = _settings(tmp_path, unanswerable, 0.0, [("Calcula 12 más 30.", "42.")])
    tokenizer = build_tokenizer("falcon")
    template = load_template(repo_root / "instruction-templates" / "spanish_ft-Falcon.yaml")
    with pytest.raises(DataError, match=r"sin\.jsonl: 1 bad row\(s\):\n  line 2: needs a non-empty .instruction."):
        prepare_data(settings, tokenizer, template, seed=3, ground=Grounder(settings.retrieval, seed=3))


def test_the_shipped_unanswerable_questions_are_unsettled_and_apart_from_the_held_out_ones():
    from training.retrieval.fuentes import sources_for, unsettled_row

    def read(path):
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    shipped = read(ROOT / "training" / "datasets" / "leyes-ec" / "sin-fuente-train.jsonl")
    held = read(ROOT / "bench" / "heldout" / "leyes-sin-fuente.jsonl")
    assert len(shipped) == 50 and len({row["id"] for row in shipped}) == 50
    held_words = ("Niñez", "Consumidor", "Compañías", "Educación Superior", "Datos Personales", "LOSEP",
                  "tránsito", "licencia de conducir", "impuesto a la renta", "cédula", "bancos")
    assert not {row["instruction"] for row in shipped} & {row["instruction"] for row in held}
    for row in shipped:
        assert not [word for word in held_words if word.lower() in row["instruction"].lower()], row["id"]
        made = unsettled_row(row["instruction"], *sources_for(row["instruction"], 3), row["id"], seed=1)
        assert not find_citations(made.answer) and made.kind in ("missing", "absent", "none")
