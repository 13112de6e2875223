"""How well each article matches a question's terms: BM25 over whole articles and over their paragraphs.

A question's stem also meets its derivational variants in the index at VARIANT_WEIGHT: a stem that
extends it or that it extends by a short suffix ("prohib" - "prohibicion", "embarg" - "embargar"),
one of the same root with another short ending ("presidencial" - "president"), the law's word for a
question's word (analyze.PARAPHRASES: "requisit" - "requer") and its negation ("embarg" -
"inembarg", "renunci" - "irrenunci"): law text says "inembargable" where a person asks whether a
salary "puede embargarse". Each term counts once, with the best of
its own score and its variants' (weighted), so a variant never adds to its term.

An article's score mixes its own BM25 score with that of its best paragraph (PASSAGE_MIX): the
Constitution's long articles list many rights, one per paragraph ("1. El derecho a la
inviolabilidad de la vida. No habrá pena de muerte."), and the whole article's length would
otherwise bury the one paragraph a question is about.
"""

from __future__ import annotations

import numpy as np

from training.retrieval.analyze import Variants
from training.retrieval.index import Index

PASSAGE_MIX = 0.5


def bm25_scores(bm25, variants: Variants, query_terms: list[str]) -> np.ndarray:
    """BM25 score of every document of a bm25s index: per term, the best of its own and its variants' scores."""
    csc, vocab = bm25.scores, bm25.vocab_dict
    total = np.zeros(csc["num_docs"], dtype=np.float32)
    for term in query_terms:
        best = np.zeros_like(total)
        for stem, weight in variants(term):
            token = vocab.get(stem)
            if token is None:
                continue
            start, end = csc["indptr"][token], csc["indptr"][token + 1]
            docs = csc["indices"][start:end]
            best[docs] = np.maximum(best[docs], weight * csc["data"][start:end])
        total += best
    return total


def scores(index: Index, query_terms: list[str]) -> np.ndarray:
    """Score of every article for the query terms: its BM25 score mixed with its best paragraph's."""
    whole = bm25_scores(index.bm25, index.variants, query_terms)
    paragraphs = bm25_scores(index.passages, index.variants, query_terms)
    return (1.0 - PASSAGE_MIX) * whole + PASSAGE_MIX * np.maximum.reduceat(paragraphs, index.passage_starts)


def defined_share(index: Index, query_terms: list[str]) -> np.ndarray:
    """Per article, how well what it defines matches the terms (0 to 1): the idf-weighted share of the terms
    its definiendum holds, times the share of its definiendum's terms that are asked ("Comodato o préstamo de
    uso" for "comodato": 1 x 1/3; "Los principales contratos aleatorios" for "contrato": also 1 x 1/3)."""
    held = np.zeros(len(index.articles), dtype=np.float32)
    matched = np.zeros(len(index.articles), dtype=np.float32)
    total = 0.0
    for term in set(query_terms):
        token = index.bm25.vocab_dict.get(term)
        weight = np.log1p(len(index.articles) / (1.0 + index.doc_freq[token])) if token is not None else 0.0
        total += weight
        if term in index.defined_by:
            held[index.defined_by[term]] += weight
            matched[index.defined_by[term]] += 1.0
    return held / max(total, 1e-9) * matched / np.maximum(index.defined_terms, 1.0)
