"""The article index: a bm25s index over every article plus the article rows it points to.

Each article is indexed as its title's terms TITLE_REPEAT times, then its text's terms: titles
("Despido intempestivo", "Femicidio") name what an article is about, so a question's words found
in a title count more than the same words somewhere in a long text. Publisher notes (`reformas`)
are not law text and are left out. Derogated articles stay in the index (a question naming one
gets it, with its "Derogado." text) but `active` is 0 for them, so topic search skips them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from training.datasets.citations import canonical_article
from training.retrieval.analyze import STOP_WORDS, terms

FORMAT = 2  # layout of the cached index (training/retrieval/cache.py)
TITLE_REPEAT = 3
LEAD_WORDS, LEAD_REPEAT = 4, 3  # untitled articles (Constitución, Código Civil): opening words count more
K1, B = 0.9, 0.3
# fields of an article kept in the index (and in its cache): what a caller shows or cites
ARTICLE_FIELDS = ("norma", "articulo", "titulo", "texto", "fecha", "edicion", "derogado")


@cache  # constants: computed once, not on every question
def settings_digest() -> str:
    """Digest of everything that shapes the index besides the corpus: a cache built otherwise is stale."""
    settings = {"title_repeat": TITLE_REPEAT, "lead": [LEAD_WORDS, LEAD_REPEAT], "k1": K1, "b": B,
                "stop_words": sorted(STOP_WORDS), "format": FORMAT}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Index:
    bm25: object  # bm25s.BM25 over each article's heading (weighted) and text
    articles: list[dict]
    corpus_sha256: str
    by_key: dict[tuple[str, str], int] = field(init=False)  # (norma, canonical article) -> row
    norms: list[str] = field(init=False)  # norm names, in corpus order
    norm_of: np.ndarray = field(init=False)  # row -> position in `norms`
    active: np.ndarray = field(init=False)  # row -> 1.0, or 0.0 for a derogated article

    def __post_init__(self):
        self.norms = list(dict.fromkeys(a["norma"] for a in self.articles))
        self.by_key = {(a["norma"], canonical_article(a["articulo"])): i for i, a in enumerate(self.articles)}
        self.norm_of = np.array([self.norms.index(a["norma"]) for a in self.articles], dtype=np.int32)
        self.active = np.array([0.0 if a["derogado"] else 1.0 for a in self.articles], dtype=np.float32)


def article_terms(row: dict) -> list[str]:
    """The heading's terms, repeated, then the text's: the heading is the title or, for an untitled
    article, its opening words, which name what it is about ("Comodato o préstamo de uso es...")."""
    text = terms(row["texto"])
    heading = terms(row["titulo"]) if row["titulo"] else text[:LEAD_WORDS]
    return heading * (TITLE_REPEAT if row["titulo"] else LEAD_REPEAT) + text


def build_index(rows: list[dict], corpus_sha256: str) -> Index:
    """Index the corpus rows (from training.datasets.corpus.read.load_corpus)."""
    import bm25s

    bm25 = bm25s.BM25(k1=K1, b=B)
    bm25.index([article_terms(row) or [""] for row in rows], show_progress=False)
    articles = [{key: row[key] for key in ARTICLE_FIELDS} for row in rows]
    return Index(bm25, articles, corpus_sha256)


def scores(bm25, query_terms: list[str]) -> np.ndarray:
    """BM25 score of every article for the query terms (bm25s does the scoring; unknown terms score 0)."""
    ids = bm25.get_tokens_ids(query_terms)
    if not ids:
        return np.zeros(bm25.scores["num_docs"], dtype=np.float32)
    return bm25.get_scores(ids)
