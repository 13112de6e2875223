"""`retrieve(question, k)`: the Ecuadorian law articles that answer a question, best first.

The one entry point for the webui extension and the trainer. In order:
1. refuse bad input (empty, longer than MAX_CHARS, k outside 1..MAX_K) with ValueError, before
   any work, so a 100 KB paste costs nothing;
2. articles the question cites ("artículo 39 del COIP") come first, exactly, if in the corpus; a
   question that names a norm and asks only what it is about ("¿Qué regula el Código del Trabajo?",
   "¿Cuál es el objeto de la LOGJCC?") gets that norm's article 1 first, where each of the five
   norms states its object, scope or (the Constitution) what the State is;
3. then BM25 over article titles, texts and section headings, mixed with the best paragraph's
   (scoring.py; each question stem meets its derivational variants), restricted to the norms the
   question names, derogated articles left out, with a small prior by norm rank for near ties; a
   question that asks what something is ("¿Qué es el comodato?") raises the articles that define
   its terms (definitions.py);
4. a question that is not legal gets no articles at all ([]): it must name a norm or an article,
   or its words must score high enough in the index, a lower bar when they are legal vocabulary
   (the lexicon in query.py, or terms the corpus defines or puts in article titles), or it asks
   for a definition that one article gives. Thresholds were tuned on the train splits (leyes-ec
   vs instrucciones-es).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.datasets.corpus.read import CORPUS_DIR
from training.retrieval.cache import load_index
from training.retrieval.definitions import asks_definition
from training.retrieval.index import Index
from training.retrieval.query import Query, cited_articles, parse
from training.retrieval.scoring import defined_share, scores

MAX_CHARS = 2000
MAX_K = 50
# score multiplier by norm: the Constitution first, then organic laws, then the codes
NORM_PRIOR = {
    "Constitución de la República del Ecuador": 1.0,
    "Código Orgánico Integral Penal": 0.9,
    "Ley Orgánica de Garantías Jurisdiccionales y Control Constitucional": 0.9,
    "Código Civil": 0.85,
    "Código del Trabajo": 0.85,
}
# When a question that names no norm or article is legal (tuned on the train splits: leyes-ec topic
# questions against instrucciones-es, and robust to a lexicon missing 40 % of its words): at least
# LEXICON_SHARE of its terms are legal words (Query.legal_terms) and its best article scores
# MIN_SCORE_LEXICON; or it has a legal word, at least CORPUS_SHARE of its terms are legal words or terms
# the corpus defines or puts in a title, every term is in two articles or more, and the best scores
# MIN_SCORE_CORPUS; or the best article holds COVERAGE of its terms and scores MIN_SCORE; or it asks for a
# definition and one article defines all its terms. Long general texts (a news article to summarise)
# score high but cover little.
LEXICON_SHARE, MIN_SCORE_LEXICON = 0.5, 3.0
CORPUS_SHARE, MIN_SCORE_CORPUS = 0.6, 4.0
COVERAGE, MIN_SCORE = 0.7, 6.0
# the stems of a question that asks what a named norm is about; nothing left at all asks the same
SCOPE_TERMS = frozenset({"objet", "final", "finalid", "ambit", "proposit", "alcanc", "regul", "aplic", "trat",
                         "contien"})
DEFINITION_BOOST = 2.0  # a definition question: score x (1 + this x how well the article's definiendum matches)


@dataclass(frozen=True)
class Hit:
    norma: str
    articulo: str
    titulo: str
    texto: str
    fecha: str
    edicion: str
    score: float  # BM25 score (with the norm prior); a cited article keeps its own, it comes first anyway
    # "cita": the question names this article; "ambito": it asks what the norm is about; "bm25": by its words
    match: str


def check_question(question: object, k: object) -> str:
    if not isinstance(question, str):
        raise ValueError(f"question must be a string, not {type(question).__name__}")
    if len(question) > MAX_CHARS:
        raise ValueError(f"question too long: {len(question)} characters, the limit is {MAX_CHARS}; "
                         "ask about one topic in a shorter question")
    if not question.strip():
        raise ValueError("question is empty: write the legal question to look up (pregunta vacía)")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise ValueError(f"k must be an integer from 1 to {MAX_K}, not {k!r}")
    return question


def retrieve(question: str, k: int = 4, corpus_dir: str | Path = CORPUS_DIR,
             cache_dir: str | Path | None = None, only_legal: bool = True) -> list[Hit]:
    """Up to k articles for a legal question, cited articles first; [] for a question that is not legal
    (`only_legal=False`: the best-ranked articles anyway, as distractors for training rows)."""
    check_question(question, k)
    index = load_index(corpus_dir, cache_dir)
    query = parse(question)
    corpus_norms = index.norms
    cited = [index.by_key[pair] for pair in cited_articles(query, corpus_norms) if pair in index.by_key]
    named = [n for n in query.norms if n in corpus_norms]
    scope = []
    if named and not query.citations and set(query.terms) <= SCOPE_TERMS:
        scope = [index.by_key[(n, "1")] for n in sorted(named) if (n, "1") in index.by_key]
    if query.norms and not named and not cited:
        return []  # it asks about a norm the corpus does not hold: articles of another norm would mislead
    raw = scores(index, query.terms)
    definition = bool(query.terms) and asks_definition(question)
    if definition:
        raw = raw * (1.0 + DEFINITION_BOOST * defined_share(index, query.terms))
    prior = np.array([NORM_PRIOR.get(n, 0.9) for n in index.norms], dtype=np.float32)[index.norm_of]
    ranked = raw * prior * index.active
    if named:
        ranked = ranked * np.isin(index.norm_of, [index.norms.index(n) for n in named])
    best = float(ranked.max(initial=0.0))
    if only_legal and not (query.norms or any(c.norma for c in query.citations)
                           or _is_legal(index, query, ranked, best) or definition and _is_defined(index, query.terms)):
        return []
    order = (cited + scope)[:k]
    if len(order) < k and best > 0:
        top = np.argpartition(-ranked, min(k + len(order), len(ranked) - 1))[: k + len(order)]
        order += [int(i) for i in top[np.argsort(-ranked[top], kind="stable")] if ranked[i] > 0 and i not in order]
    return [_hit(index.articles[i], float(raw[i] if i in cited or i in scope else ranked[i]),
                 "cita" if i in cited else "ambito" if i in scope else "bm25") for i in order[:k]]


def _is_defined(index: Index, terms: list[str]) -> bool:
    """Whether one article defines every term ("¿Qué es el comodato?": "Comodato o préstamo de uso es...")."""
    defining = [set(index.defined_by.get(term, ())) for term in set(terms)]
    return bool(set.intersection(*defining))


def _is_legal(index: Index, query: Query, ranked: np.ndarray, best: float) -> bool:
    distinct = set(query.terms)
    if not distinct:
        return False
    asked, legal = len(distinct | query.legal_terms), query.legal_terms
    if legal and len(legal) / asked >= LEXICON_SHARE and best >= MIN_SCORE_LEXICON:
        return True
    vocab = index.bm25.vocab_dict
    known = all(term in vocab and index.doc_freq[vocab[term]] >= 2 for term in distinct)
    corpus = legal | {term for term in distinct if term in index.defined_by}
    if legal and known and len(corpus) / asked >= CORPUS_SHARE and best >= MIN_SCORE_CORPUS:
        return True
    if best < MIN_SCORE:
        return False
    top, csc = int(ranked.argmax()), index.bm25.scores  # does the best article hold each term?
    ids = index.bm25.get_tokens_ids(list(distinct))
    held = sum(top in csc["indices"][csc["indptr"][i]:csc["indptr"][i + 1]] for i in ids)
    return held / len(distinct) >= COVERAGE


def _hit(article: dict, score: float, match: str) -> Hit:
    return Hit(article["norma"], article["articulo"], article["titulo"], article["texto"],
               article["fecha"], article["edicion"], round(score, 4), match)
