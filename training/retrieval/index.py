"""The article index: two bm25s indexes, over whole articles and over their paragraphs, plus the rows.

Each article is indexed as its title's terms TITLE_REPEAT times, then its text's terms, then the
terms of the heading it stands under (the last of `estructura`, "Capítulo sexto Derechos de
libertad"): titles ("Despido intempestivo", "Femicidio") name what an article is about, so a
question's words found in a title count more than the same words somewhere in a long text, and
the heading names the topic of the untitled Constitution's articles. Each paragraph (line of the
text) is indexed the same way, with its article's title and heading (scoring.py mixes the two).
Publisher notes (`reformas`) are not law text and are left out. Derogated articles stay in the
index (a question naming one gets it, with its "Derogado." text) but `active` is 0 for them, so
topic search skips them. Each article keeps the terms of what it defines (definitions.py).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cache

import numpy as np

import training.retrieval.definitions as definitions  # by module: tests change PATTERNS
from training.datasets.citations import canonical_article
from training.retrieval.analyze import STOP_WORDS, Variants, terms

FORMAT = 3  # layout of the cached index (training/retrieval/cache.py)
TITLE_REPEAT, HEADING_REPEAT = 3, 1
LEAD_WORDS, LEAD_REPEAT = 4, 3  # untitled articles (Constitución, Código Civil): opening words count more
K1, B = 0.9, 0.3
PASSAGE_B = 0.75  # paragraphs range from a line to a page: their length counts more than an article's
# fields of an article kept in the index (and in its cache): what a caller shows or cites
ARTICLE_FIELDS = ("norma", "articulo", "titulo", "texto", "fecha", "edicion", "derogado")


@cache  # constants: computed once, not on every question
def settings_digest() -> str:
    """Digest of everything that shapes the index besides the corpus: a cache built otherwise is stale."""
    settings = {"title_repeat": TITLE_REPEAT, "heading_repeat": HEADING_REPEAT, "lead": [LEAD_WORDS, LEAD_REPEAT],
                "k1": K1, "b": B, "passage_b": PASSAGE_B, "stop_words": sorted(STOP_WORDS),
                "definitions": definitions.PATTERNS, "format": FORMAT}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Index:
    bm25: object  # bm25s.BM25 over each article's heading (weighted), text and section heading
    passages: object  # bm25s.BM25 over each paragraph of each article, with its article's title and heading
    articles: list[dict]  # ARTICLE_FIELDS plus "define": the terms of what the article defines
    corpus_sha256: str
    by_key: dict[tuple[str, str], int] = field(init=False)  # (norma, canonical article) -> row
    norms: list[str] = field(init=False)  # norm names, in corpus order
    norm_of: np.ndarray = field(init=False)  # row -> position in `norms`
    active: np.ndarray = field(init=False)  # row -> 1.0, or 0.0 for a derogated article
    passage_starts: np.ndarray = field(init=False)  # row -> its first paragraph in `passages`
    doc_freq: np.ndarray = field(init=False)  # token id -> number of articles holding it
    defined_by: dict[str, np.ndarray] = field(init=False)  # term -> rows whose definiendum holds it
    defined_terms: np.ndarray = field(init=False)  # row -> how many distinct terms its definiendum has
    variants: Variants = field(init=False)  # a query stem -> its derivational variants in the index

    def __post_init__(self):
        self.norms = list(dict.fromkeys(a["norma"] for a in self.articles))
        self.by_key = {(a["norma"], canonical_article(a["articulo"])): i for i, a in enumerate(self.articles)}
        self.norm_of = np.array([self.norms.index(a["norma"]) for a in self.articles], dtype=np.int32)
        self.active = np.array([0.0 if a["derogado"] else 1.0 for a in self.articles], dtype=np.float32)
        counts = [len(paragraphs(a["texto"])) for a in self.articles]
        self.passage_starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
        self.doc_freq = np.diff(self.bm25.scores["indptr"])
        rows: dict[str, list[int]] = {}
        for i, article in enumerate(self.articles):
            for term in set(article["define"]):
                rows.setdefault(term, []).append(i)
        self.defined_by = {term: np.array(ids) for term, ids in rows.items()}
        self.defined_terms = np.array([len(set(a["define"])) for a in self.articles], dtype=np.float32)
        self.variants = Variants(self.bm25.vocab_dict)


def paragraphs(texto: str) -> list[str]:
    """An article's paragraphs (its non-empty lines; one empty paragraph for an empty text)."""
    return [line for line in texto.split("\n") if line.strip()] or [""]


def article_terms(row: dict) -> tuple[list[str], list[list[str]]]:
    """The article's terms and each paragraph's. An article: the heading's terms, repeated, then the text's,
    then the section heading's; the heading is the title or, for an untitled article, its opening words,
    which name what it is about ("Comodato o préstamo de uso es..."). A paragraph: the title's, the section
    heading's and its own."""
    text = terms(row["texto"])
    title = terms(row["titulo"])
    heading = title if row["titulo"] else text[:LEAD_WORDS]
    section = terms(row["estructura"][-1]) * HEADING_REPEAT if row["estructura"] else []
    whole = heading * (TITLE_REPEAT if row["titulo"] else LEAD_REPEAT) + text + section
    parts = [title * TITLE_REPEAT + section + terms(paragraph) for paragraph in paragraphs(row["texto"])]
    return whole or [""], [part or [""] for part in parts]


def build_index(rows: list[dict], corpus_sha256: str) -> Index:
    """Index the corpus rows (from training.datasets.corpus.read.load_corpus)."""
    import bm25s

    whole, parts = zip(*(article_terms(row) for row in rows), strict=True)
    bm25, passages = bm25s.BM25(k1=K1, b=B), bm25s.BM25(k1=K1, b=PASSAGE_B)
    bm25.index(list(whole), show_progress=False)
    passages.index([part for article in parts for part in article], show_progress=False)
    articles = [{**{key: row[key] for key in ARTICLE_FIELDS},
                 "define": terms(definitions.definiendum(row["titulo"], row["texto"]))} for row in rows]
    return Index(bm25, passages, articles, corpus_sha256)
