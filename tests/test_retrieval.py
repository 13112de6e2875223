"""Retrieval of law articles (training/retrieval): cited articles, topic search, the legal trigger,
input refusals, the on-disk cache (built once, verified, rebuilt when corrupt) and the CLI's JSON."""

from __future__ import annotations

import json
import time

import pytest

from training.__main__ import main
from training.datasets.corpus.read import CORPUS_DIR, corpus_sha256, read_manifest
from training.retrieval import cache, retrieve
from training.retrieval.cache import CacheWarning, cache_folder, load_index

CRE = "Constitución de la República del Ecuador"
COIP = "Código Orgánico Integral Penal"


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A fresh cache folder (never the user's home) and an empty per-process cache."""
    monkeypatch.setenv("SPANISH_FT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "_LOADED", {})
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """One index shared by the search tests (built once into a module-wide temporary cache)."""
    folder = tmp_path_factory.mktemp("cache")
    load_index(CORPUS_DIR, folder)
    return folder


def keys(hits):
    return [(h.norma, h.articulo) for h in hits]


@pytest.mark.parametrize(("question", "expected"), [
    ("¿Qué dice el artículo 71 de la Constitución?", (CRE, "71")),
    ("art. 39 del COIP", (COIP, "39")),
    ("¿Qué establece el Art. 28.1 del COIP?", (COIP, "28.1")),
])
def test_a_cited_article_comes_first(warm, question, expected):
    hits = retrieve(question, cache_dir=warm)
    assert keys(hits)[0] == expected and hits[0].match == "cita"


@pytest.mark.parametrize(("question", "expected"), [  # from the TRAIN split
    ("¿Qué niveles de educación son obligatorios en el Ecuador?", (CRE, "28")),
    ("¿Cuáles son los requisitos de la legítima defensa en el Ecuador?", (COIP, "33")),
    ("¿Qué es el despido ineficaz?", ("Código del Trabajo", "195.1")),
    ("¿Qué son los bienes inmuebles?", ("Código Civil", "586")),
    # a derivational variant: "embargar" meets "inembargable"
    ("¿Se puede embargar el salario en el Ecuador?", (CRE, "328")),
    # one paragraph of a long article
    ("¿Responden los padres por los daños que causan sus hijos menores?", ("Código Civil", "2220")),
    # a definition question gets the article that defines the term ("Posesión es la tenencia...")
    ("¿Qué es la posesión según el Código Civil?", ("Código Civil", "715")),
    ("¿En qué consiste el domicilio según el Código Civil?", ("Código Civil", "45")),
    ("¿Qué es el comodato?", ("Código Civil", "2077")),  # no lexicon word: legal because an article defines it
])
def test_a_topic_question_finds_its_article_in_the_top_4(warm, question, expected):
    assert expected in keys(retrieve(question, k=4, cache_dir=warm))


@pytest.mark.parametrize(("question", "expected"), [
    ("¿Qué regula el Código del Trabajo?", ("Código del Trabajo", "1")),
    ("¿Cuál es el objeto de la LOGJCC?", ("Ley Orgánica de Garantías Jurisdiccionales y Control Constitucional", "1")),
    ("¿Cuál es la finalidad del COIP?", (COIP, "1")),
])
def test_a_question_about_what_a_norm_is_for_gets_its_first_article(warm, question, expected):
    hits = retrieve(question, k=4, cache_dir=warm)
    assert keys(hits)[0] == expected and hits[0].match == "ambito"


def test_a_question_with_a_topic_is_not_taken_for_one_about_the_norm(warm):
    hits = retrieve("¿Qué dice el COIP sobre el femicidio?", k=4, cache_dir=warm)
    assert [h.match for h in hits] == ["bm25"] * 4 and all("emicidio" in h.titulo for h in hits[:2])
    assert (COIP, "1") not in keys(hits)


def test_a_named_norm_restricts_the_search(warm):
    hits = retrieve("¿Qué dice el Código Civil sobre el contrato?", k=10, cache_dir=warm)
    assert hits and {h.norma for h in hits} == {"Código Civil"}


@pytest.mark.parametrize("question", ["Escribe un poema sobre el mar", "¿Cuál es la capital de Ecuador?",
                                      "Calcula el promedio de estas notas: 7, 9, 8 y 10.",
                                      "¿Qué es el efecto invernadero?",  # a definition no article gives
                                      "¿Cuántos minutos son 3,5 horas?"])
def test_a_question_that_is_not_legal_gets_no_articles(warm, question):
    assert retrieve(question, cache_dir=warm) == []


@pytest.mark.parametrize(("question", "k", "message"), [
    ("", 4, "empty"), ("   \n", 4, "empty"), ("x" * 100_000, 4, "2000"),
    ("¿Qué es el hábeas corpus?", 0, "k must"), ("¿Qué es el hábeas corpus?", 51, "k must"),
])
def test_bad_input_is_refused_quickly(warm, question, k, message):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        retrieve(question, k=k, cache_dir=warm)
    assert time.perf_counter() - start < 0.05


def test_the_cache_is_built_once_and_reused(cache_dir, monkeypatch):
    first = retrieve("¿Qué es el despido ineficaz?")
    folder = cache_folder(corpus_sha256(read_manifest(CORPUS_DIR)))
    assert (folder / "manifest.json").is_file()
    monkeypatch.setattr(cache, "_LOADED", {})  # a new process: loads from disk, must not rebuild

    def no_build(*args):
        raise AssertionError("rebuilt a valid cache")

    monkeypatch.setattr(cache, "build_index", no_build)
    assert retrieve("¿Qué es el despido ineficaz?") == first


def test_a_corrupt_cache_is_named_rebuilt_and_gives_the_same_results(cache_dir, monkeypatch):
    question = "¿Cuáles son los requisitos de la legítima defensa en el Ecuador?"
    first = retrieve(question)
    folder = cache_folder(corpus_sha256(read_manifest(CORPUS_DIR)))
    (folder / "articles.json").write_text("[]", encoding="utf-8")
    monkeypatch.setattr(cache, "_LOADED", {})
    with pytest.warns(CacheWarning, match=str(folder)):
        assert retrieve(question) == first
    monkeypatch.setattr(cache, "_LOADED", {})
    assert cache.check_cache(folder, folder.name) is None  # rebuilt whole


def test_a_missing_or_partial_cache_is_built(cache_dir, monkeypatch):
    folder = cache_folder(corpus_sha256(read_manifest(CORPUS_DIR)))
    folder.mkdir(parents=True)  # a partial folder, without its manifest
    with pytest.warns(CacheWarning):
        assert retrieve("art. 39 del COIP")[0].articulo == "39"
    assert cache.check_cache(folder, folder.name) is None


def test_cli_json_shape(warm, monkeypatch, capsys):
    monkeypatch.setenv("SPANISH_FT_CACHE", str(warm))
    assert main(["retrieve", "¿Qué dice el artículo 71 de la Constitución?", "--json", "--k", "3"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert 1 <= len(hits) <= 3 and hits[0]["norma"] == CRE and hits[0]["articulo"] == "71"
    assert all(set(hit) == {"norma", "articulo", "titulo", "texto", "score"} for hit in hits)
    assert main(["retrieve", "Escribe un poema sobre el mar", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["retrieve", "Escribe un poema sobre el mar"]) == 0
    assert "No legal article" in capsys.readouterr().out
    assert main(["retrieve", "   "]) == 1
    assert "error:" in capsys.readouterr().err
