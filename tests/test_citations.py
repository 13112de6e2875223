"""training.datasets.citations: which article of which norm a Spanish answer cites."""

import pytest

from training.datasets.citations import NORMS, Citation, canonical_article, cites, find_citations, norm_canonical

CRE = "Constitución de la República del Ecuador"
COIP = "Código Orgánico Integral Penal"
TRABAJO = "Código del Trabajo"


@pytest.mark.parametrize("text", [
    "Según el artículo 71 de la Constitución de la República del Ecuador, la naturaleza tiene derechos.",
    "Según el art. 71 de la Constitución, la naturaleza tiene derechos.",
    "El Art. 71 de la CRE reconoce los derechos de la naturaleza.",
    "Conforme al ARTÍCULO 71 de la Carta Magna, la naturaleza tiene derechos.",
    "Segun el articulo 71 de la Constitucion, sin tildes.",
    "La Constitución, en su artículo 71, reconoce los derechos de la naturaleza.",
    "Los artículos 71 y 72 de la Constitución tratan de la naturaleza.",
    "Los arts. 70, 71 y 72 de la Constitución tratan de la naturaleza.",
    "El artículo 71, inciso segundo, de la Constitución permite exigir esos derechos.",
    "(art. 71, Constitución)",
])
def test_cites_accepts_many_ways_of_citing(text):
    assert cites(text, {"norma": CRE, "articulo": "71"})


@pytest.mark.parametrize("text, why", [
    ("Según el artículo 72 de la Constitución, la naturaleza tiene derecho a la restauración.", "wrong article"),
    ("Según el artículo 710 de la Constitución.", "number that only starts with 71"),
    ("Según el artículo 71 del COIP.", "wrong norm"),
    ("Según el artículo 71, la naturaleza tiene derechos.", "no norm named"),
    ("La Constitución protege a la naturaleza.", "no article"),
    ("El artículo 71 protege a la naturaleza. La Constitución tiene 444 artículos.", "norm in another sentence"),
    ("La Constitución protege el agua en su artículo 12; el artículo 71 del Código Civil es otra cosa.",
     "nearest norm wins"),
])
def test_cites_rejects(text, why):
    assert not cites(text, {"norma": CRE, "articulo": "71"}), why


def test_norm_named_before_applies_to_later_articles_in_the_same_sentence():
    text = "El COIP tipifica el homicidio en el art. 144 y el asesinato en el art. 140."
    assert find_citations(text) == [Citation(COIP, "144"), Citation(COIP, "140")]


def test_each_article_takes_the_norm_named_next_to_it():
    text = "El artículo 47 del Código del Trabajo y el artículo 326 de la Constitución tratan del trabajo."
    assert find_citations(text) == [Citation(TRABAJO, "47"), Citation(CRE, "326")]


def test_numbers_with_dots_and_letters():
    assert cites("Según el artículo 195.1 del Código del Trabajo, el despido es ineficaz.",
                 {"norma": TRABAJO, "articulo": "195.1"})
    assert cites("El art. 11-A del Código de Trabajo dice algo.", {"norma": TRABAJO, "articulo": "11-a"})
    assert not cites("Según el artículo 195 del Código del Trabajo.", {"norma": TRABAJO, "articulo": "195.1"})


def test_other_numbers_are_not_articles():
    text = "El artículo 76, numeral 7, literal l, de la Constitución exige motivación; hay 3 jueces."
    assert find_citations(text) == [Citation(CRE, "76")]


def test_abbreviations_resolve_to_the_canonical_name():
    assert cites("El COIP, en su artículo 144, sanciona el homicidio.", {"norma": "COIP", "articulo": "144"})
    assert cites("Según el artículo 144 del Código Penal, ...", {"norma": COIP, "articulo": "144"})
    assert cites("Según el artículo 11 de la LOGJCC, ...",
                 {"norma": "Ley Orgánica de Garantías Jurisdiccionales y Control Constitucional", "articulo": "11"})


def test_longest_name_wins_over_a_shorter_alias_inside_it():
    # "Código Orgánico de la Niñez y Adolescencia" contains neither "COIP" nor "Código Civil",
    # and "Constitución de la República del Ecuador" must not also count as a second norm
    assert find_citations("artículo 4 del Código Orgánico de la Niñez y Adolescencia") == [
        Citation("Código de la Niñez y Adolescencia", "4")]
    assert find_citations("artículo 1 de la Constitución de la República del Ecuador") == [Citation(CRE, "1")]


def test_norm_canonical_accepts_names_and_aliases_in_any_case_or_accents():
    for canonical, aliases in NORMS.items():
        assert norm_canonical(canonical) == canonical
        for alias in aliases:
            assert norm_canonical(alias.upper()) == canonical
    assert norm_canonical("codigo organico integral penal") == COIP


def test_norm_canonical_rejects_unknown_norms_listing_the_allowed_ones():
    with pytest.raises(ValueError) as err:
        norm_canonical("Código de Comercio")
    assert "Código de Comercio" in str(err.value)
    assert all(canonical in str(err.value) for canonical in NORMS)


def test_cites_rejects_a_fuente_with_an_unknown_norm():
    with pytest.raises(ValueError):
        cites("artículo 1 del Código de Comercio", {"norma": "Código de Comercio", "articulo": "1"})


def test_canonical_article():
    assert canonical_article(" 11 - a ") == "11-A"
    assert canonical_article("71") == "71"
