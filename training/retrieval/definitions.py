"""What an article defines, and whether a question asks for a definition.

"¿Qué es el comodato?" is answered by the article that defines the comodato ("Comodato o préstamo
de uso es un contrato en que..."), not by the dozens that only use the word. The codes without
article titles (the Código Civil, the Constitución) define a term in their opening words, in a few
fixed shapes: "X es ...", "El domicilio consiste en ...", "Son legitimarios: ...", "Se llama
persona jurídica ...", "... se denomina trabajador". A titled article (COIP, Código del Trabajo,
LOGJCC) names its subject in its title ("Culpa", "Enfermedades profesionales"). Search raises the
score of the articles whose defined term holds the question's terms, when the question asks what
something is (`asks_definition`).
"""

from __future__ import annotations

import re

from training.retrieval.analyze import STOP_WORDS, fold

_VERB = r"(?:es|son|consiste|consisten|se llama|se llaman|se denomina|se denominan|se entiende|se entienden|se define)"
# "posesion es la tenencia", "el domicilio consiste en", "contrato o convencion es un acto"; not "si el hijo
# es", "para que cese la posesion inscrita es necesario"
_SUBJECT_FIRST = re.compile(rf"^(?!(?:si|cuando|aunque|no|para|por|en|a|de|con|sin|sobre|entre|desde) )"
                            rf"((?:[a-z]+,? ){{1,7}}?){_VERB}\b")
# "son legitimarios: ...", "seran servidoras o servidores publicos todas las personas"
_VERB_FIRST = re.compile(r"^(?:son|seran) ((?:[a-z]+ ?){1,5})")
# "se llama persona juridica una persona ficticia", "... se denomina trabajador y puede ser"
_NAMED = re.compile(r"\bse (?:llama|llaman|denomina|denominan|entiende por|entienden por) ((?:[a-z]+ ?){1,5})")
_QUESTION = re.compile(r"(?:^|[¿,;.:])\s*(?:que (?:es|son)|en que consisten?|quienes? (?:es|son)|como (?:se )?definen?|"
                       r"que se entiende por|a que se (?:llama|denomina)|que significa|concepto de|definicion de)\b")
_TITLE_PREFIX = re.compile(r"^(?:concepto|definicion|nocion)e?s? (?:de |del )?")  # "Concepto de trabajador"
PATTERNS = [pattern.pattern for pattern in (_SUBJECT_FIRST, _VERB_FIRST, _NAMED, _TITLE_PREFIX)]  # they shape the index
_ARTICLES = frozenset("el la los las lo un una unos unas".split())


def asks_definition(question: str) -> bool:
    """True for "¿Qué es el comodato?", "¿En qué consiste el domicilio?", "¿Quiénes son legitimarios?"."""
    return bool(_QUESTION.search(fold(question)))


def _leading_run(phrase: str, limit: int = 4) -> str:
    """The first words of a phrase up to the first stop word ("persona juridica una persona" -> "persona
    juridica"); articles before the term are skipped, "o" keeps a synonym ("comodato o prestamo")."""
    kept = []
    for word in phrase.split():
        if not kept and word in _ARTICLES:
            continue
        if word in STOP_WORDS and word != "o" or len(kept) == limit:
            break
        kept.append(word)
    return " ".join(kept)


def definiendum(titulo: str, texto: str) -> str:
    """The term an article defines: its title, else the term its first sentence defines ("" if none)."""
    if titulo:  # "Concepto de trabajador" defines "trabajador"
        return _TITLE_PREFIX.sub("", fold(titulo)) or titulo
    first = re.split(r"[.:;\n]", fold(texto), maxsplit=1)[0][:200]
    for pattern, run in ((_SUBJECT_FIRST, False), (_VERB_FIRST, True), (_NAMED, True)):
        found = pattern.search(first)
        if found:
            phrase = found.group(1).replace(",", " ")
            return _leading_run(phrase) if run else " ".join(w for w in phrase.split() if w not in _ARTICLES)
    return ""
