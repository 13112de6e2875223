"""What a question says besides its topic: the norms it names, the articles it cites, legal words.

Norm names and citations are found with training.datasets.citations (the same aliases the data
validator and the evaluation use), then cut out of the question, so "según el Código del Trabajo"
restricts the search to that code instead of adding "trabajo" to every query. The lexicon is
general legal vocabulary (stemmed like the index); with the terms the corpus itself defines or puts
in its titles and the BM25 score, search uses it to tell a legal question from a general one
("Escribe un poema sobre el mar").
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from training.datasets.citations import ARTICLES, Citation, find_citations, norm_mentions
from training.retrieval.analyze import QUERY_STOP_WORDS, STOP_WORDS, fold, stems, words

_LEXICON_WORDS = """ley leyes articulo articulos legal ilegal legalmente juridico juridica derecho derechos constitucion
constitucional inconstitucional codigo norma reglamento delito delitos pena penas penal prision carcel crimen infraccion
contravencion multa sancion juez jueza jueces tribunal corte fiscal fiscalia abogado demanda demandar denuncia
denunciar juicio proceso procesal audiencia sentencia recurso apelacion casacion querella litigio
contrato contratar despido despedir desahucio indemnizacion trabajador trabajadores empleador patrono empleado
salario sueldo remuneracion jornada vacaciones utilidades jubilacion decimo afiliacion sindicato huelga
herencia heredero herederos testamento sucesion matrimonio divorcio conyuge alimentos custodia tutela curador
propiedad posesion usucapion prescripcion hipoteca arrendamiento arrendatario compraventa obligacion obligaciones
acreedor deudor nulidad embargo dominio servidumbre donacion legitima filiacion paternidad adopcion
garantia garantias habeas amparo ciudadano ciudadania nacionalidad voto sufragio asamblea estado
victima detencion flagrancia robo hurto homicidio asesinato femicidio violacion violencia estafa secuestro
extorsion soborno cohecho peculado trafico lavado narcotrafico responsabilidad penalmente culpable inocencia
discriminacion prohibido prohibe prohibida permitido obligatorio plazo termino accion acciones proteccion
justicia judicial jurisdiccion jurisdiccional jurisdiccionales competencia competente potestad autoridad autoridades
publico publica publicos servidor servidores funcion administracion regimen tributario impuesto impuestos tributo
presidente presidencial republica asambleista eleccion elecciones candidato candidatos electoral mandato revocatoria
reeleccion consulta popular iniciativa expropiar expropiacion condena condenado sancionar sanciona disciplinaria
privada privado libertad lesiones medidas cautelares arbitraje consentimiento dolo bienes inmueble inmuebles muebles
danos perjuicios responde responden prescriben prescribe licencia maternidad paternidad descanso laborales laboral
despedido guarderia menores edad mayor adultos incapacidad interdiccion mandatario enajenacion ilicito ilicita
principio principios soberania idioma idiomas simbolos patria educacion salud vivienda agua naturaleza ambiental
ambientales indigenas comunas pueblos nacionalidades prioritaria discapacidad refugio asilo migrantes"""


@dataclass(frozen=True)
class Query:
    norms: frozenset[str]  # canonical names of the norms the question names
    citations: tuple[Citation, ...]  # articles it cites, each with its norm (None if none named)
    terms: list[str]  # stems of its content words, norm names and citations cut out
    legal_terms: frozenset[str]  # those in the legal lexicon, and "ley", "norma", "artículo" (not search terms)


@cache
def legal_lexicon() -> frozenset[str]:
    """Stems of general legal vocabulary ("despido", "herencia", "delito")."""
    return frozenset(stems(_LEXICON_WORDS.split()))


def parse(question: str) -> Query:
    """Norms named, articles cited and content words of a question."""
    folded = fold(question)
    mentions = norm_mentions(folded)
    # cut norm names and "artículo 39"-style citations out; the rest is the topic
    spans = [(start, end) for start, end, _ in mentions] + [m.span() for m in ARTICLES.finditer(folded)]
    topic = folded
    for start, end in sorted(spans, reverse=True):
        topic = topic[:start] + " " + topic[end:]
    content = words(topic, STOP_WORDS)
    stemmed = stems(content)
    terms = [stem for word, stem in zip(content, stemmed, strict=True) if word not in QUERY_STOP_WORDS]
    legal = frozenset(stem for stem in stemmed if stem in legal_lexicon())
    return Query(frozenset(m[2] for m in mentions), tuple(find_citations(question)), terms, legal)


def cited_articles(query: Query, corpus_norms: list[str]) -> list[tuple[str, str]]:
    """(norma, article) pairs the question cites in the corpus; an article cited without a norm
    belongs to the one corpus norm the question names, if it names exactly one."""
    named = [n for n in query.norms if n in corpus_norms]
    pairs = []
    for citation in query.citations:
        norma = citation.norma or (named[0] if len(named) == 1 else None)
        if norma in corpus_norms and (norma, citation.articulo) not in pairs:
            pairs.append((norma, citation.articulo))
    return pairs

