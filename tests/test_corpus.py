"""The law corpus: built from the five PDFs in ../shared/legal-sources/, checked against them.

The PDFs are source material kept beside the repository (never copied into it); CI has them
there. Away from CI a missing folder skips the PDF tests; in CI it fails them.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import pytest

from training.__main__ import main
from training.datasets.citations import canonical_article, fold
from training.datasets.corpus.read import CORPUS_DIR, MANIFEST, load_corpus, read_manifest
from training.datasets.corpus.verify import article_text
from training.files import sha256_file

ROOT = Path(__file__).resolve().parents[1]
SOURCES = Path(os.environ.get("SPANISH_FT_LEGAL_SOURCES", ROOT.parent / "shared" / "legal-sources"))
# file -> the arguments that built the shipped corpus (README of the data card says the same)
BUILDS = {
    "constitucion-2008.pdf": ["--norma", "CRE", "--edition",
                              "R.O. 449, 20-X-2008; Lexis compilation, last modification 2024-05-30"],
    "codigo-organico-integral-penal.pdf": ["--norma", "COIP", "--edition",
                                           "R.O.-S 180, 10-II-2014; Lexis compilation, last modification 2025-06-26"],
    "codigo-civil.pdf": ["--norma", "Código Civil", "--edition",
                         "Codificación 2005-010, R.O.-S 46, 24-VI-2005; Fiel Web edition 2015", "--date", "2015"],
    "codigo-del-trabajo.pdf": ["--norma", "Código del Trabajo", "--edition",
                               "Codificación 2005-017, R.O.-S 167, 16-XII-2005; Fiel Web, last reform R.O.-S 242, "
                               "2023-02-01"],
    "ley-organica-garantias-jurisdiccionales.pdf": ["--norma", "LOGJCC", "--edition",
                                                    "R.O.-S 52, 22-X-2009; Lexis compilation, last modification "
                                                    "2020-02-03"],
}
PUBLISHER_MATTER = re.compile(
    r"(?im)concordancias|jurisprudencia\s*:|\bnotas?\s*:|lexis|fiel\s?web|ediciones legales|descargado gratuitamente"
    r"|www\.|https?:|p[áa]g(?:ina|\.)\s*\d+\s+de\s+\d+|texto de (?:la )?interpretaci[óo]n|es fiel copia"
    r"|para leer texto|^(?:libro|t[íi]tulo|cap[íi]tulo|secci[óo]n|par[áa]grafo)\s+\S+\s*$")


@pytest.fixture(scope="module")
def sources() -> Path:
    if not all((SOURCES / name).is_file() for name in BUILDS):
        if os.environ.get("CI"):
            pytest.fail(f"the legal sources are missing from {SOURCES} (CI has ../shared/legal-sources)")
        pytest.skip(f"no legal sources at {SOURCES}")
    return SOURCES


@pytest.fixture(scope="module")
def corpus() -> list[dict]:
    return load_corpus()[0]


def test_the_constitution_has_its_444_articles_in_order_none_empty(corpus):
    constitution = [row for row in corpus if row["norma"] == "Constitución de la República del Ecuador"]
    assert [row["articulo"] for row in constitution] == [str(n) for n in range(1, 445)]
    assert all(len(row["texto"]) > 20 and not row["derogado"] for row in constitution)
    assert "La capital del Ecuador es Quito." in constitution[3]["texto"]


def test_no_article_carries_publisher_matter(corpus):
    dirty = [(row["norma"], row["articulo"], match.group(0)) for row in corpus
             for match in [PUBLISHER_MATTER.search(f"{row['titulo']}\n{row['texto']}")] if match]
    assert not dirty, dirty[:10]
    assert len(corpus) == 4541


def test_every_article_cited_by_a_leyes_ec_row_of_the_five_norms_is_in_the_corpus(corpus):
    have = {(row["norma"], canonical_article(row["articulo"])) for row in corpus}
    norms = {norma for norma, _ in have}
    cited = set()
    for split in ("train", "test"):
        for line in (CORPUS_DIR.parent / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            fuente = json.loads(line)["fuente"]
            if fuente["norma"] in norms:
                cited.add((fuente["norma"], canonical_article(fuente["articulo"])))
    assert len(cited) > 300 and not cited - have


def test_numbers_suffixes_innumerados_and_repealed_articles(corpus):
    by_key = {(row["norma"], row["articulo"]): row for row in corpus}
    work = "Código del Trabajo"
    assert by_key[(work, "16.1")]["titulo"].startswith("Del contrato por obra")
    assert by_key[(work, "16-innumerado-1")]["titulo"] == "Del teletrabajo"
    assert by_key[(work, "24")]["derogado"] and by_key[(work, "24")]["texto"] == "Derogado."
    assert any("R.O." in note for note in by_key[(work, "24")]["reformas"])
    coip = "Código Orgánico Integral Penal"
    assert by_key[(coip, "1")]["titulo"] == "Finalidad"
    assert "(Agregado" not in by_key[(coip, "28.1")]["texto"]
    # the outline the article stands in, from the law's own headings
    assert by_key[("Constitución de la República del Ecuador", "71")]["estructura"] == [
        "TÍTULO II DERECHOS", "Capítulo séptimo Derechos de la naturaleza"]
    assert by_key[(coip, "1")]["estructura"] == ["LIBRO PRELIMINAR NORMAS RECTORAS", "TÍTULO I FINALIDAD"]
    # art. 79: the 2024 referendum substituted it; the corpus holds the text in force
    constitution = "Constitución de la República del Ecuador"
    assert by_key[(constitution, "79")]["texto"].startswith("La extradición se solicitará")


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", fold(text))


def _occurs_in_order(needle: list[str], hay: list[str], start: int, max_gap: int = 60) -> bool:
    """needle's words appear in hay from `start` in order, with at most `max_gap` words between two
    (page furniture, the reform notes moved out of the text)."""
    position = start
    for word in needle:
        window = hay[position:position + max_gap + 1]
        if word not in window:
            return False
        position += window.index(word) + 1
    return True


def test_thirty_random_articles_read_as_in_the_pdf(sources, corpus):
    import pypdfium2 as pdfium

    texts = {}
    for name in BUILDS:
        document = pdfium.PdfDocument(str(sources / name))
        texts[name] = _words(" ".join(page.get_textpage().get_text_bounded() for page in document))
        document.close()
    by_norm = {}
    for row in corpus:
        by_norm.setdefault(row["norma"], []).append(row)
    pdf_of = {sha256_file(sources / name): name for name in BUILDS}
    draw = random.Random(2024)
    sample = [row for rows in by_norm.values() for row in draw.sample([r for r in rows if not r["derogado"]], 6)]
    assert len(sample) == 30
    for row in sample:
        hay = texts[pdf_of[row["fuente_sha256"]]]
        number = row["articulo"].split("-innumerado-")[0] if "-innumerado-" not in row["articulo"] else None
        heading = ["art", *number.split(".")] if number else ["art"]
        starts = [i for i in range(len(hay)) if hay[i:i + len(heading)] == heading]
        needle = _words(article_text(row))
        assert any(_occurs_in_order(needle, hay, start) for start in starts), (row["norma"], row["articulo"])


def test_corpus_build_reproduces_the_shipped_files_byte_for_byte(sources, tmp_path):
    for name, arguments in BUILDS.items():
        assert main(["corpus", "build", "--pdf", str(sources / name), *arguments, "--out", str(tmp_path)]) == 0
    shipped = read_manifest(CORPUS_DIR)
    built = read_manifest(tmp_path)
    for norma, entry in shipped["normas"].items():
        assert built["normas"][norma]["sha256"] == entry["sha256"], norma
        assert (tmp_path / entry["file"]).read_bytes() == (CORPUS_DIR / entry["file"]).read_bytes()


def test_rebuilding_a_norm_needs_replace_and_follows_the_new_edition(sources, tmp_path, capsys):
    pdf, arguments = sources / "ley-organica-garantias-jurisdiccionales.pdf", BUILDS[
        "ley-organica-garantias-jurisdiccionales.pdf"]
    assert main(["corpus", "build", "--pdf", str(pdf), *arguments, "--out", str(tmp_path)]) == 0
    first = load_corpus(tmp_path)[1]
    assert main(["corpus", "build", "--pdf", str(pdf), *arguments, "--out", str(tmp_path)]) == 1
    assert "--replace" in capsys.readouterr().err
    newer = [*arguments[:3], "Edición de prueba 2026-01-15"]
    assert main(["corpus", "build", "--pdf", str(pdf), *newer, "--out", str(tmp_path), "--replace"]) == 0
    rows, second = load_corpus(tmp_path)
    assert second != first and {row["fecha"] for row in rows} == {"2026-01-15"}


def _refused(arguments: list[str], out: Path, capsys) -> str:
    before = sorted(p.name for p in out.iterdir()) if out.is_dir() else None
    assert main(["corpus", "build", *arguments, "--out", str(out)]) == 1
    assert (sorted(p.name for p in out.iterdir()) if out.is_dir() else None) == before  # nothing half-written
    return capsys.readouterr().err


def test_bad_inputs_are_refused_by_name_with_nothing_written(sources, tmp_path, capsys):
    import pypdfium2 as pdfium

    out = tmp_path / "corpus"
    logjcc = sources / "ley-organica-garantias-jurisdiccionales.pdf"
    edition = ["--edition", "R.O. 1, 2020-01-01"]
    assert "not of Código Orgánico Integral Penal" in _refused(["--pdf", str(logjcc), "--norma", "COIP", *edition],
                                                                out, capsys)
    blank = tmp_path / "scan.pdf"
    document = pdfium.PdfDocument.new()
    document.new_page(595, 842)
    document.save(str(blank))
    assert "no text layer" in _refused(["--pdf", str(blank), "--norma", "COIP", *edition], out, capsys)
    fake = tmp_path / "fake.pdf"
    fake.write_text("not a pdf")
    assert "not a readable PDF" in _refused(["--pdf", str(fake), "--norma", "COIP", *edition], out, capsys)
    assert "unknown norm" in _refused(["--pdf", str(logjcc), "--norma", "Ley de Tránsito", *edition], out, capsys)
    assert "no date" in _refused(["--pdf", str(logjcc), "--norma", "LOGJCC", "--edition", "sin fecha"], out, capsys)
    assert "no such file" in _refused(["--pdf", str(tmp_path / "missing.pdf"), "--norma", "LOGJCC", *edition],
                                      out, capsys)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    assert "did not make" in _refused(["--pdf", str(logjcc), "--norma", "LOGJCC", *edition], theirs, capsys)
    ours = tmp_path / "ours"
    assert main(["corpus", "build", "--pdf", str(logjcc), "--norma", "LOGJCC", *edition, "--out", str(ours)]) == 0
    stranger = ours / "codigo-civil.jsonl"
    stranger.write_text("their own file\n")
    civil = sources / "codigo-civil.pdf"
    assert "not listed" in _refused(["--pdf", str(civil), "--norma", "Código Civil", *edition], ours, capsys)
    assert stranger.read_text() == "their own file\n"


def test_a_corpus_file_edited_by_hand_is_named(tmp_path):
    folder = tmp_path / "corpus"
    shutil.copytree(CORPUS_DIR, folder)
    target = folder / read_manifest(folder)["normas"]["Código Civil"]["file"]
    target.write_text(target.read_text(encoding="utf-8").replace("La ley es", "La ley era", 1), encoding="utf-8")
    with pytest.raises(ValueError, match="codigo-civil.jsonl: changed since it was built"):
        load_corpus(folder)
    (folder / MANIFEST).write_text("{", encoding="utf-8")
    with pytest.raises(ValueError, match="corpus.json: unreadable"):
        load_corpus(folder)


def _leyes_copy(tmp_path: Path, edit) -> Path:
    folder = tmp_path / "leyes-ec"
    folder.mkdir()
    shutil.copy(CORPUS_DIR.parent / "verification.md", folder)
    shutil.copy(CORPUS_DIR.parent / "test.jsonl", folder)
    lines = (CORPUS_DIR.parent / "train.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    edit(rows)
    (folder / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return folder


def test_validate_data_checks_each_row_against_its_article_in_the_corpus(tmp_path):
    from training.datasets.validate import validate_dataset

    def break_rows(rows):
        first = next(i for i, r in enumerate(rows) if r["fuente"]["norma"] == "Código Civil")
        rows[first]["fuente"]["articulo"] = "9999"
        rows[first]["output"] = rows[first]["output"].replace(
            re.search(r"art[íi]culo (\d+)", rows[first]["output"]).group(1), "9999", 1)
        other = next(i for i, r in enumerate(rows) if r["id"] == "ley-0006")  # CRE 4, "La capital ... es Quito"
        rows[other]["fuente"]["articulo"] = "5"
        rows[other]["output"] = rows[other]["output"].replace("artículo 4 ", "artículo 5 ")

    report = validate_dataset(_leyes_copy(tmp_path, break_rows))
    missing, moved = sorted((e for e in report.errors if "corpus" in e), key=lambda e: "9999" not in e)
    assert len(report.errors) == 2, report.errors
    assert re.search(r"train\.jsonl:\d+: field 'fuente.articulo': artículo 9999 is not in the corpus", missing)
    assert "train.jsonl:6: field 'fuente': the verified phrase of ley-0006" in moved
    assert "artículo 5 of Constitución" in moved
    assert report.unsourced == {"Código de la Niñez y Adolescencia": 11, "Ley Orgánica de Defensa del Consumidor": 2}
