"""The verification log made automatic: every leyes-ec row's `fuente` article is in the corpus, and
the phrase verification.md quotes for that row occurs in that article's text.

verification.md lists, per hand-written row, a phrase copied verbatim from the article; a derived
row (`derivado_de`) is checked with its source row's phrase. Matching ignores case, accents and
spacing, as the manual check did. Rows of norms the corpus does not hold (no full source) are
counted and reported, not failed.
"""

from __future__ import annotations

import re
from pathlib import Path

from training.datasets.citations import canonical_article, fold
from training.datasets.corpus.read import CORPUS_DIR, CorpusError, load_corpus

VERIFIED_ROW = re.compile(r"^\|\s*(?P<id>ley-\d+)\s*\|[^|]*\|[^|]*\|[^|]*\|\s*\"(?P<phrase>[^\"]+)\"\s*\|")


def read_phrases(path: Path) -> dict[str, str]:
    """Row id -> the verbatim phrase verification.md quotes for it."""
    if not path.is_file():
        return {}
    return {m["id"]: m["phrase"] for line in path.read_text(encoding="utf-8").splitlines()
            if (m := VERIFIED_ROW.match(line))}


def article_text(row: dict) -> str:
    """An article as printed: 'Title.- text' where it has a title."""
    return f"{row['titulo']}.- {row['texto']}" if row["titulo"] else row["texto"]


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", fold(text)).strip()


def check_against_corpus(read: dict[str, list[tuple[str, dict]]], directory: Path,
                         corpus_dir: Path = CORPUS_DIR) -> tuple[list[str], dict[str, int]]:
    """Errors (file:line: field: what) and, per norm the corpus lacks, the count of rows left unchecked."""
    try:
        rows, _sha = load_corpus(corpus_dir)
    except CorpusError as err:
        return [f"{directory}: the law corpus cannot be read: {err}"], {}
    articles = {(row["norma"], canonical_article(row["articulo"])): row for row in rows}
    norms = {row["norma"] for row in rows}
    phrases = read_phrases(directory / "verification.md")
    errors, unsourced = [], {}
    for _split, split_rows in read.items():
        by_id = {row.get("id"): row for _, row in split_rows}
        for where, row in split_rows:
            fuente = row.get("fuente")
            if not isinstance(fuente, dict) or not isinstance(fuente.get("articulo"), str):
                continue  # the row's format errors are reported by the validator
            if fuente.get("norma") not in norms:
                unsourced[str(fuente.get("norma"))] = unsourced.get(str(fuente.get("norma")), 0) + 1
                continue
            article = articles.get((fuente["norma"], canonical_article(str(fuente.get("articulo", "")))))
            if article is None:
                errors.append(f"{where}: field 'fuente.articulo': artículo {fuente.get('articulo')} is not in the "
                              f"corpus of {fuente['norma']} ({corpus_dir}); check the number against the norm")
                continue
            source_id = row.get("derivado_de") if row.get("derivado_de") in by_id else row.get("id")
            phrase = phrases.get(source_id)
            if phrase and _squash(phrase) not in _squash(article_text(article)):
                errors.append(f"{where}: field 'fuente': the verified phrase of {source_id} (\"{phrase[:60]}\") is not "
                              f"in artículo {article['articulo']} of {fuente['norma']} in the corpus; the row or "
                              "its article number is wrong, or the corpus edition changed the wording")
    return errors, unsourced
