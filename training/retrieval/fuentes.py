"""The articles retrieved for a question as the model reads them: one prompt for training and the chat.

"Fuentes" puts them in the user's turn, before the question (in the webui: the turn's internal
text; the chat shows the question alone). The instruction template is unchanged, so the prompt
of a grounded chat turn is the template's rendering of this turn, in training and in the webui:

    Fuentes (leyes del Ecuador; cita solo estos artículos):
    [1] Código del Trabajo, artículo 47 (De la jornada máxima). La jornada máxima de trabajo será...
    [2] Constitución de la República del Ecuador, artículo 326. El derecho al trabajo se sustenta...

    Pregunta: ¿Cuántas horas dura la jornada máxima de trabajo?

An article longer than ARTICLE_CHARS is cut to its first paragraph and the paragraphs that share
the most terms with the question, in their order, "[…]" where text is left out: the Constitution's
long lists would otherwise crowd out the other articles.

Training rows (`grounded_row`) follow RAFT (Zhang et al., 2024): the gold article among the
retrieved ones (put in by hand, at a seeded place, when retrieval misses it), and, for a seeded
share of rows, the gold article left out and the answer replaced by one that says the articles
given do not settle the question and cites none. `citation_check` tells which citations of an
answer name an article that was in the prompt.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from training.datasets.citations import Citation, canonical_article, find_citations
from training.datasets.corpus.read import CORPUS_DIR
from training.retrieval.analyze import terms
from training.retrieval.cache import load_index
from training.retrieval.search import Hit, retrieve

ARTICLE_CHARS = 800
CUT = "[…]"
HEADER = "Fuentes (leyes del Ecuador; cita solo estos artículos):"
QUESTION = "Pregunta: "
# answers of the rows whose gold article was left out: they cite nothing (seeded choice per row)
NOT_IN_SOURCES = (
    "Los artículos de las fuentes no tratan esta pregunta, así que no puedo responderla con base en ellos. "
    "Consulta el texto vigente de la norma que corresponda o a un abogado.",
    "Ninguno de los artículos proporcionados responde a esta pregunta; prefiero no citar un artículo que no "
    "tengo a la vista. Revisa la norma aplicable en su versión vigente.",
    "Las fuentes recibidas no resuelven esta consulta. Para responderla con seguridad hace falta el artículo "
    "pertinente, que no está entre ellas.",
)


def excerpt(texto: str, question: str, limit: int = ARTICLE_CHARS) -> str:
    """The article's text, or for a long one its first paragraph and the question's best paragraphs."""
    texto = texto.strip()
    if len(texto) <= limit:
        return texto
    paragraphs = [p.strip() for p in texto.split("\n") if p.strip()]
    wanted = set(terms(question))
    overlap = sorted(range(1, len(paragraphs)), key=lambda i: (-len(wanted & set(terms(paragraphs[i]))), i))
    kept, used = {0}, len(paragraphs[0])
    for i in overlap:
        if used + len(paragraphs[i]) + 1 > limit:
            continue
        kept.add(i)
        used += len(paragraphs[i]) + 1
    if used > limit:  # a first paragraph longer than the limit: cut it at a word
        return paragraphs[0][: paragraphs[0].rfind(" ", 0, limit)].rstrip(" ,;:") + " " + CUT
    parts, previous = [], -1
    for i in sorted(kept):
        if i != previous + 1:
            parts.append(CUT)
        parts.append(paragraphs[i])
        previous = i
    if previous != len(paragraphs) - 1:
        parts.append(CUT)
    return "\n".join(parts)


def source_line(number: int, hit: Hit, question: str) -> str:
    title = f" ({hit.titulo})" if hit.titulo else ""
    return f"[{number}] {hit.norma}, artículo {hit.articulo}{title}. {excerpt(hit.texto, question)}"


def grounded_turn(question: str, hits: list[Hit]) -> str:
    """The user's turn with its sources; the question alone when there are none (not a legal question)."""
    if not hits:
        return question
    lines = [HEADER, *(source_line(i, hit, question) for i, hit in enumerate(hits, start=1))]
    return "\n".join(lines) + "\n\n" + QUESTION + question


@dataclass(frozen=True)
class GroundedRow:
    user: str  # the user's turn, sources included
    answer: str
    kind: str  # "gold": gold article among the sources; "missing": left out, answer says so; "none": no sources


def article_hit(norma: str, articulo: str, corpus_dir=CORPUS_DIR) -> Hit | None:
    """The corpus article `articulo` of `norma` as a source (None when the corpus does not hold it)."""
    index = load_index(corpus_dir)
    row = index.by_key.get((norma, canonical_article(articulo)))
    if row is None:
        return None
    article = index.articles[row]
    return Hit(article["norma"], article["articulo"], article["titulo"], article["texto"], article["fecha"],
               article["edicion"], 0.0, "fuente")


def _draw(seed: int, key: str) -> float:
    """A number in [0, 1) fixed by the seed and the row: the same row gets the same draw every run."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def grounded_row(question: str, answer: str, fuente: dict | None, row_key: str, k: int, missing_share: float,
                 seed: int, corpus_dir=CORPUS_DIR) -> GroundedRow:
    """A leyes-ec row rendered with sources, RAFT-style (module docstring). `fuente`: the row's gold article."""
    hits = retrieve(question, k + 1, corpus_dir=corpus_dir)
    gold = article_hit(fuente["norma"], str(fuente["articulo"]), corpus_dir) if fuente else None
    if not hits or gold is None:  # not legal to the trigger, or a norm with no text here: as the chat sees it
        return GroundedRow(grounded_turn(question, hits[:k]), answer, "none")
    same = [h for h in hits if (h.norma, canonical_article(h.articulo)) == (gold.norma,
                                                                            canonical_article(gold.articulo))]
    others = [h for h in hits if h not in same]
    if _draw(seed, "missing:" + row_key) < missing_share:
        pick = int(_draw(seed, "answer:" + row_key) * len(NOT_IN_SOURCES))
        return GroundedRow(grounded_turn(question, others[:k]), NOT_IN_SOURCES[pick], "missing")
    if same:  # retrieval found it: its own order, as in the chat
        return GroundedRow(grounded_turn(question, hits[:k]), answer, "gold")
    place = int(_draw(seed, "place:" + row_key) * k)
    sources = others[: k - 1]
    sources.insert(min(place, len(sources)), gold)
    return GroundedRow(grounded_turn(question, sources), answer, "gold")


@dataclass(frozen=True)
class CitationCheck:
    verified: list[Citation]  # cited, and in the prompt
    unverified: list[Citation]  # cited, not in the prompt ("cita no verificada")


def citation_check(answer: str, hits: list[Hit]) -> CitationCheck:
    """Which of the answer's citations name an article the prompt gave (a citation naming no norm
    counts when one source has that article number)."""
    given = {(h.norma, canonical_article(h.articulo)) for h in hits}
    numbers = {number for _, number in given}
    verified, unverified = [], []
    for citation in dict.fromkeys(find_citations(answer)):
        ok = (citation.norma, citation.articulo) in given if citation.norma else citation.articulo in numbers
        (verified if ok else unverified).append(citation)
    return CitationCheck(verified, unverified)
