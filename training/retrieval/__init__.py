"""Lexical retrieval of Ecuadorian law articles for a Spanish question (bm25s + Snowball Spanish).

    >>> from training.retrieval import retrieve
    >>> [(h.norma, h.articulo) for h in retrieve("¿Qué dice el artículo 71 de la Constitución?", k=1)]
    [('Constitución de la República del Ecuador', '71')]

Modules: analyze (text -> terms), definitions (what an article defines, definition questions),
index (the bm25s indexes of articles and paragraphs), scoring (BM25 with derivational variants),
cache (built once, cached on disk per corpus sha256, loaded once per process), query (norms,
citations, legal words of a question), search (`retrieve`, the one public function), retrieve
(the `python -m training retrieve` command).
"""

from training.retrieval.search import MAX_CHARS, MAX_K, Hit, retrieve

__all__ = ["Hit", "MAX_CHARS", "MAX_K", "retrieve"]
