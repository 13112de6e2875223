"""Find which article of which Ecuadorian norm a Spanish text cites.

Used by the `leyes-ec` data validator (every answer must cite its source) and by the
evaluation ("share of generated answers citing the right norm and article"):

    >>> cites("Según el art. 71 de la Constitución, la naturaleza ...",
    ...       {"norma": "Constitución de la República del Ecuador", "articulo": "71"})
    True

Matching ignores case and accents ("articulo" == "artículo"). An article number belongs
to the norm named right after it ("artículo 76, numeral 2, de la Constitución") or, if
none follows in the same sentence, to the norm named right before it ("el COIP, en su
artículo 144"). An article cited without any norm name belongs to no norm.
"""

from __future__ import annotations

import re
import unicodedata
from typing import NamedTuple

# canonical name -> accepted aliases and abbreviations (the canonical name itself is implied)
NORMS: dict[str, list[str]] = {
    "Constitución de la República del Ecuador": [
        "Constitución", "Constitución de la República", "Constitución del Ecuador",
        "Constitución Política", "Carta Magna", "Carta Fundamental", "CRE",
    ],
    "Código Orgánico Integral Penal": ["COIP", "Código Penal", "Código Integral Penal"],
    "Código del Trabajo": ["Código de Trabajo", "Código Laboral"],
    "Código Civil": [],
    "Código de la Niñez y Adolescencia": [
        "CNA", "Código de Niñez y Adolescencia", "Código de la Niñez",
        "Código Orgánico de la Niñez y Adolescencia",
    ],
    "Ley Orgánica de Defensa del Consumidor": ["LODC", "Ley de Defensa del Consumidor"],
    "Ley Orgánica de Garantías Jurisdiccionales y Control Constitucional": [
        "LOGJCC", "Ley de Garantías Jurisdiccionales",
    ],
}

# how far (in characters) a norm name may stand from the article number it qualifies
NEAR_CHARS = 80
# a sentence ends at . ; ! ? followed by a space, except the abbreviations "art." "arts." "no."
_SENTENCE_END = re.compile(r"(?<!\bart)(?<!\barts)(?<!\bno)(?<!\bn°)(?<!\bnº)[.;!?](\s|$)")
_NUMBER = r"\d+(?:\.\d+)?(?:\s*-\s*[a-z]\b)?"
ARTICLES = re.compile(
    rf"\b(?:articulos?|arts?\.?)\s*(?:n[o°º]\.?\s*)?({_NUMBER}(?:\s*(?:,|y|e|o)\s*{_NUMBER})*)"
)


class Citation(NamedTuple):
    norma: str | None  # canonical norm name, None when the text names no norm for it
    articulo: str


def fold(text: str) -> str:
    """Lowercase and strip accents, so "Artículo" and "articulo" match."""
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()


def canonical_article(article: str) -> str:
    """'11 - a' -> '11-A', ' 71 ' -> '71'."""
    return re.sub(r"\s*-\s*", "-", article.strip()).upper()


def _alias_table() -> list[tuple[re.Pattern, str]]:
    names = [(name, canonical) for canonical, aliases in NORMS.items() for name in (canonical, *aliases)]
    names.sort(key=lambda pair: len(pair[0]), reverse=True)  # longest first wins overlaps
    return [(re.compile(rf"(?<!\w){re.escape(fold(name))}(?!\w)"), canonical) for name, canonical in names]


_ALIASES = _alias_table()


def norm_canonical(name: str) -> str:
    """The canonical name of a norm given its name or an alias; ValueError if unknown."""
    folded = fold(name).strip()
    for pattern, canonical in _ALIASES:
        if pattern.fullmatch(folded):
            return canonical
    allowed = "; ".join(NORMS)
    raise ValueError(f"unknown norm {name!r}: expected one of: {allowed} "
                     "(or an alias listed in NORMS in training/datasets/citations.py)")


def norm_mentions(folded: str) -> list[tuple[int, int, str]]:
    taken: list[tuple[int, int, str]] = []
    for pattern, canonical in _ALIASES:
        for match in pattern.finditer(folded):
            if all(match.end() <= start or match.start() >= end for start, end, _ in taken):
                taken.append((match.start(), match.end(), canonical))
    return sorted(taken)


def _norm_for(folded: str, start: int, end: int, mentions: list[tuple[int, int, str]]) -> str | None:
    after = [m for m in mentions if m[0] >= end and m[0] - end <= NEAR_CHARS]
    if after and not _SENTENCE_END.search(folded[end:after[0][0]]):
        return after[0][2]
    before = [m for m in mentions if m[1] <= start and start - m[1] <= NEAR_CHARS]
    if before and not _SENTENCE_END.search(folded[before[-1][1]:start]):
        return before[-1][2]
    return None


def find_citations(text: str) -> list[Citation]:
    """Every (norm, article) pair the text cites, in order of appearance."""
    folded = fold(text)
    mentions = norm_mentions(folded)
    citations = []
    for match in ARTICLES.finditer(folded):
        norma = _norm_for(folded, match.start(), match.end(), mentions)
        for number in re.findall(_NUMBER, match.group(1)):
            citations.append(Citation(norma, canonical_article(number)))
    return citations


def cites(text: str, fuente: dict) -> bool:
    """True if the text cites article fuente['articulo'] of norm fuente['norma']."""
    wanted = Citation(norm_canonical(fuente["norma"]), canonical_article(str(fuente["articulo"])))
    return wanted in find_citations(text)
