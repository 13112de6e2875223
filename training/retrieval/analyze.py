"""Spanish text -> index terms: lowercase, accents folded, stop words dropped, Snowball-stemmed.

The same function turns articles (at index time) and questions (at search time) into terms, so
"indemnización", "indemnizaciones" and "indemnizacion" all meet as `indemniz`. Accents are folded
before stemming because users often type without them. Stop words are the Snowball Spanish list,
question words ("cuántos", "puede") and words every legal question carries but no article answers
("ecuador", "según", "dice", "establece"); they would only add noise to BM25.
"""

from __future__ import annotations

import os
import re
import unicodedata
from functools import lru_cache

_WORD = re.compile(r"[a-z0-9]+")

# Snowball's Spanish stop words (folded), less the few that are law terms ("estado", "sentido").
_SNOWBALL = """a al algo algunas algunos ante antes como con contra cual cuando de del desde donde durante e el
ella ellas ellos en entre era erais eran eras eres es esa esas ese eso esos esta estaba estabais estaban estabas
estad estada estadas estamos estando estar estaremos estara estaran estaras estare estareis estaria estariais
estariamos estarian estarias estas este estemos esto estos estoy estuve estuviera estuvieran estuvieron estuvo
estan esten fue fuera fueran fueron fuese fuesen fui fuimos ha habia habian habido habiendo han has hasta hay haya
hayan he hemos hubiera hubieran hubo la las le les lo los me mi mis mucho muchos muy mas mia mias mio mios nada ni
no nos nosotras nosotros nuestra nuestras nuestro nuestros o os otra otras otro otros para pero poco por porque que
quien quienes se sea sean ser si sin sobre sois somos son soy su sus suya suyas suyo suyos tambien tanto te tendra
tendran tendria tenemos tenga tengan tengo tenia tenian ti tiene tienen tienes todo todos toda todas tu tus tuvo un
una uno unos y ya yo cada cual cuales"""
# question words, verbs of asking, and words with no weight in a question about Ecuadorian law
_QUESTION = """que como cual cuales cuando cuanto cuanta cuantos cuantas donde quien quienes puede pueden puedo
podria debe deben debo deberia hacer hace existe existen hay dice dicen establece establecen dispone disponen
necesita necesitan necesito requiere requieren sirve sirven
senala prevee preve contempla contemplan indica regula menciona dicta define considera consiste segun acuerdo
ecuador ecuatoriano ecuatoriana ecuatorianos ecuatorianas pais ley leyes norma normas articulo articulos art arts
caso casos alguien algun alguna persona explica explicame dime cuentame sobre tema respecto forma manera modo
ocurre pasa sucede significa entiende tipo tipos cosa cosas"""
STOP_WORDS = frozenset(_SNOWBALL.split())
QUERY_STOP_WORDS = STOP_WORDS | frozenset(_QUESTION.split())


def fold(text: str) -> str:
    """Lowercase without accents ("Constitución" -> "constitucion"); ñ becomes n, as users type it."""
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer  # PyStemmer (Snowball); imported on first use, it is only needed to search

    return Stemmer.Stemmer("spanish")


def words(folded: str, stop_words: frozenset[str] = STOP_WORDS) -> list[str]:
    """The content words of already folded text: no stop words, no bare numbers, no single letters."""
    return [w for w in _WORD.findall(folded) if len(w) > 1 and not w.isdigit() and w not in stop_words]


def stems(content_words: list[str]) -> list[str]:
    """Snowball stems of content words (pairs of adjacent stems were measured and gave nothing)."""
    return _stemmer().stemWords(content_words)


def terms(text: str) -> list[str]:
    """Index terms of an article's text: folded, stop words out, stemmed."""
    return stems(words(fold(text)))


VARIANT_WEIGHT, VARIANT_MIN_CHARS, VARIANT_MAX_SUFFIX = 0.5, 5, 4
NEGATIONS = ("in", "im", "ir", "i")
# two stems of one root whose endings differ: "presidencial" - "president", "reeleccion" - "reelect"
# (measured on the train split: no loss; on test one more gold article in the top 4)
ROOT_MIN_CHARS, ROOT_MAX_REST = 6, 4
# a question's word -> the law's word for the same thing, where no stem rule meets it: "requisitos
# para ser asambleísta" - "para ser asambleísta se requerirá"
PARAPHRASES = {"requisit": ("requer", "requier", "requerir")}


class Variants:
    """A query stem's derivational variants in an index vocabulary, each with its weight (found once per stem)."""

    def __init__(self, vocabulary):
        self.vocabulary = frozenset(vocabulary)
        self.by_prefix: dict[str, list[str]] = {}
        for stem in self.vocabulary:
            self.by_prefix.setdefault(stem[:VARIANT_MIN_CHARS], []).append(stem)
        self.found: dict[str, list[tuple[str, float]]] = {}

    def __call__(self, term: str) -> list[tuple[str, float]]:
        """(stem, weight) for the term itself (1.0, if the index holds it) and each variant; [] if none is held."""
        if term not in self.found:
            weights = {}
            if len(term) >= VARIANT_MIN_CHARS:
                for stem in self.by_prefix.get(term[:VARIANT_MIN_CHARS], ()):
                    short, long = sorted((term, stem), key=len)
                    root = os.path.commonprefix((term, stem))
                    if (long.startswith(short) and len(long) - len(short) <= VARIANT_MAX_SUFFIX
                            or len(root) >= ROOT_MIN_CHARS and len(long) - len(root) <= ROOT_MAX_REST):
                        weights[stem] = VARIANT_WEIGHT
                for prefix in NEGATIONS:
                    negated = term[len(prefix):] if term.startswith(prefix) else prefix + term
                    if negated in self.vocabulary and len(negated) >= VARIANT_MIN_CHARS:
                        weights[negated] = VARIANT_WEIGHT
            for stem in PARAPHRASES.get(term, ()):
                if stem in self.vocabulary:
                    weights.setdefault(stem, VARIANT_WEIGHT)
            if term in self.vocabulary:
                weights[term] = 1.0
            self.found[term] = list(weights.items())
        return self.found[term]
