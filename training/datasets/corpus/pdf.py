"""A norm's PDF as lines of text, page by page, with the publisher's page furniture removed.

PDFium (the `pypdfium2` wheels) reads the text layer. Measured on the five shipped sources: it
reads all 869 pages in about 2.5 s and keeps each article heading on one line (`Art. 4.- El
territorio ...`), as poppler's pdftotext does; pdfminer.six splits headings across lines and
pypdf moves bold headings to the end of the line (../shared/legal-sources/SOURCES.md).
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

# Lines a publisher prints at the top or bottom of every page: the Lexis download banner, the Fiel
# Web and Lexis Finder footers, page numbers. Matched only within FURNITURE_LINES of a page's edge.
FURNITURE = [re.compile(pattern, re.IGNORECASE) for pattern in (
    r"^descargado$", r"^gratuitamente desde$", r"^www\.lexis\.com\.?$", r"^ec$", r"^com\.ec$",
    r".*\bp[áa]g(?:\.|ina)\s+\d+(?:\s+de\s+\d+)?$",  # "... - Página 12", "Pág. 3 de 195"
    r"^lexis finder\b.*", r".*fielweb\.com.*", r"^\d+$", r"^\d+\s+\d+$",
)]
FURNITURE_LINES = 5
# PDFium's marks: U+0002 stands for a printed hyphen; soft hyphens stand for hyphens in Fiel Web files
CHARACTER_FIXES = str.maketrans({"\x02": "-", "\u00ad": "-", "\u00a0": " ", "\ufffe": "-", "\t": " "})


class PdfError(ValueError):
    """A PDF that cannot give the law's text; the message names the file and why."""


def normalise_line(line: str) -> str:
    return re.sub(r" {2,}", " ", unicodedata.normalize("NFC", line.translate(CHARACTER_FIXES))).strip()


def read_pages(path: Path) -> list[list[str]]:
    """Each page's lines, normalised (NFC, one space), empty lines dropped, furniture kept."""
    import pypdfium2 as pdfium  # imported here: only `corpus build` needs it

    try:
        document = pdfium.PdfDocument(str(path))
    except (pdfium.PdfiumError, OSError) as err:
        raise PdfError(f"{path}: not a readable PDF ({err}); give the norm's PDF file") from err
    try:
        pages = []
        for index in range(len(document)):
            text = document[index].get_textpage().get_text_bounded()
            pages.append([line for raw in text.splitlines() if (line := normalise_line(raw))])
    finally:
        document.close()
    if sum(len(" ".join(page)) for page in pages) < 200 * max(1, len(pages) // 10):
        raise PdfError(f"{path}: the PDF has no text layer (a scan?); run OCR on it first, for example "
                       "`ocrmypdf -l spa IN.pdf OUT.pdf`, and build from OUT.pdf")
    return pages


def is_furniture(line: str) -> bool:
    return any(pattern.fullmatch(line) for pattern in FURNITURE)


def strip_furniture(pages: list[list[str]]) -> list[str]:
    """All pages' lines in order, without the furniture at each page's top and bottom."""
    lines: list[str] = []
    for page in pages:
        start, end = 0, len(page)
        while start < min(end, FURNITURE_LINES) and is_furniture(page[start]):
            start += 1
        while end > max(start, len(page) - FURNITURE_LINES) and is_furniture(page[end - 1]):
            end -= 1
        lines += page[start:end]
    return lines
