"""The `corpus` command: build one norm's articles from its PDF into a law corpus folder.

    python -m training corpus build --pdf codigo-del-trabajo.pdf --norma "Código del Trabajo" \\
        --edition "Codificación 2005-017, R.O.-S 167, 16-XII-2005; última reforma R.O.-S 242, 2023-02-01"

Writes `<norm-slug>.jsonl` (one row per article: norma, articulo, titulo, texto, derogado,
estructura, reformas, edicion, fecha, fuente_sha256) and updates the folder's manifest `corpus.json`, both
through a temporary file and a rename, under the folder's lock. The same PDF and options give a
byte-identical file. A norm already in the corpus is replaced only with --replace (a newer edition);
everything keyed on the corpus (the retrieval index, the validator) follows its sha256.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

from training.datasets.citations import NORMS, fold, norm_canonical
from training.datasets.corpus.articles import ARTICLE, Article, split_articles
from training.datasets.corpus.pdf import PdfError, read_pages, strip_furniture
from training.datasets.corpus.read import CORPUS_DIR, MANIFEST, ROW_FIELDS, CorpusError, norm_slug, read_manifest
from training.files import check_output, hold_lock, sha256_file, temp_sibling, write_json_atomic

MIN_ARTICLES = 5
ISO_DATE = re.compile(r"\b(\d{4}-\d{2}-\d{2})\b")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="turn one norm's PDF into JSONL rows, one per article",
                           description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    build.add_argument("--pdf", required=True, type=Path, help="the norm's PDF (with a text layer)")
    build.add_argument("--norma", required=True,
                       help="the norm: its canonical name or an alias known to training/datasets/citations.py "
                            "(CRE, COIP, 'Código del Trabajo', LOGJCC, ...)")
    build.add_argument("--edition", required=True,
                       help="the edition the PDF reproduces (official publication and compilation date), "
                            "stored in every row as 'edicion'")
    build.add_argument("--date", help="the edition's date, YYYY-MM-DD or YYYY (default: the last YYYY-MM-DD date "
                                      "in --edition)")
    build.add_argument("--out", type=Path, default=CORPUS_DIR,
                       help="the corpus folder (default: the shipped one, training/datasets/leyes-ec/corpus)")
    build.add_argument("--replace", action="store_true", help="replace the norm if the corpus already holds it")


def run(args: argparse.Namespace) -> int:
    norma = norm_canonical(args.norma)
    fecha = edition_date(args.edition, args.date)
    out = check_output(args.out, replace=True, marker=MANIFEST, what="corpus folder", inputs=[args.pdf])
    target = out / f"{norm_slug(norma)}.jsonl"
    manifest = read_manifest(out) if (out / MANIFEST).is_file() else {"made_by": "spanish_ft", "normas": {}}
    check_target(target, norma, manifest, args.replace)
    if not args.pdf.is_file():
        raise PdfError(f"{args.pdf}: no such file; give the norm's PDF with --pdf")
    articles = read_articles(args.pdf, norma)
    rows = [to_row(article, norma, args.edition.strip(), fecha, sha256_file(args.pdf)) for article in articles]
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    out.mkdir(parents=True, exist_ok=True)
    with hold_lock(out):
        tmp = temp_sibling(target)
        try:
            tmp.write_text(text, encoding="utf-8")
            entry = {"file": target.name, "sha256": sha256_file(tmp), "articulos": len(rows),
                     "derogados": sum(row["derogado"] for row in rows), "edicion": args.edition.strip(),
                     "fecha": fecha, "fuente_sha256": rows[0]["fuente_sha256"], "fuente": args.pdf.name}
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        manifest["normas"][norma] = entry
        manifest["normas"] = {name: manifest["normas"][name] for name in sorted(manifest["normas"], key=_norm_order)}
        write_json_atomic(out / MANIFEST, manifest)
    print(f"{target}: {len(rows)} articles of {norma} ({entry['derogados']} repealed), edition of {fecha}")
    return 0


def edition_date(edition: str, date: str | None) -> str:
    if not edition.strip():
        raise ValueError("--edition is empty: name the official publication and the compilation's date")
    if date is not None:
        if not re.fullmatch(r"\d{4}(?:-\d{2}-\d{2})?", date.strip()):
            raise ValueError(f"--date {date!r}: expected YYYY-MM-DD, e.g. 2024-05-30, or a year alone when the "
                             "edition gives no day")
        return date.strip()
    found = ISO_DATE.findall(edition)
    if not found:
        raise ValueError(f"--edition {edition!r} has no date YYYY-MM-DD: add the compilation's date to it or give "
                         "--date YYYY-MM-DD")
    return found[-1]


def check_target(target: Path, norma: str, manifest: dict, replace: bool) -> None:
    """Refuse to overwrite a file that is not this corpus's, or this norm's rows without --replace."""
    listed = manifest["normas"].get(norma, {}).get("file") == target.name
    if target.is_symlink() or (target.exists() and not listed):
        raise CorpusError(f"{target} exists and is not listed in {target.parent / MANIFEST}; it was left as it is: "
                          "move it away or choose another --out")
    if listed and not replace:
        raise CorpusError(f"{target.parent} already holds {norma} ({target.name}); pass --replace to rebuild it "
                          "from this PDF (a newer edition, say)")


def read_articles(pdf: Path, norma: str) -> list[Article]:
    lines = strip_furniture(read_pages(pdf))
    first = next((i for i, line in enumerate(lines) if (m := ARTICLE.match(line)) and m["number"] == "1"), None)
    if first is None:
        raise PdfError(f"{pdf}: no article heading 'Art. 1.-' found; is this the PDF of a norm?")
    check_title(pdf, lines[:first], norma)
    articles = split_articles(lines)
    if len(articles) < MIN_ARTICLES:
        raise PdfError(f"{pdf}: only {len(articles)} article heading(s) found; is this the whole norm?")
    return articles


def check_title(pdf: Path, front: list[str], norma: str) -> None:
    """The first norm named before Art. 1 (the document's title) must be `norma`."""
    folded = fold(" ".join(front[:80]))
    named = []
    for canonical, aliases in NORMS.items():
        for name in (canonical, *[alias for alias in aliases if len(alias) >= 10]):
            match = re.search(rf"(?<!\w){re.escape(fold(name))}(?!\w)", folded)
            if match:
                named.append((match.start(), canonical))
    if not named:
        raise PdfError(f"{pdf}: its first pages name no norm known to spanish_ft; expected {norma}")
    title = min(named)[1]
    if title != norma:
        raise PdfError(f"{pdf}: this is the PDF of {title}, not of {norma} (--norma); give the right file or norm")


def to_row(article: Article, norma: str, edition: str, fecha: str, pdf_sha256: str) -> dict:
    values = {"norma": norma, "articulo": article.articulo, "titulo": article.titulo, "texto": article.texto,
              "derogado": article.derogado, "estructura": article.estructura, "reformas": article.reformas,
              "edicion": edition, "fecha": fecha, "fuente_sha256": pdf_sha256}
    return {key: values[key] for key in ROW_FIELDS}


def _norm_order(norma: str) -> int:
    return list(NORMS).index(norma)
