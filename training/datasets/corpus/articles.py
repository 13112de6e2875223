"""The law's lines -> its articles: number, title, text, reform history, repealed or not.

What is not the law is left out here, by the shape of the line that starts it:
- "CONCORDANCIAS:" and "JURISPRUDENCIA:" blocks (cross-references the publisher adds after an
  article) run to the next article heading;
- "Nota:" blocks (the publisher's notes) run to the end of their paragraph; an article may go on
  after one (a numbered list resumes);
- structural headings (Libro, Título, Capítulo, Sección, Parágrafo and the heading's name on the
  next lines) and final provisions ("DISPOSICIONES TRANSITORIAS", "DISPOSICIÓN GENERAL PRIMERA.-")
  end the article before them; nothing up to the next article heading is kept;
- reform notes inside the text ("(Agregado por el Art. 4 de la Ley s/n, R.O. 116-S, 9-XI-2017)")
  are moved out of the text into the article's history (`reformas`).
Article numbers only grow: a heading whose number is lower than the last one's belongs to another
text quoted after the law (the Constitution's Régimen de Transición, laws a code reforms) and is
skipped with its text. A number printed twice (an article substituted by a referendum, old text
first) keeps its last text, unless the last printing shows only the changed parts ("[...]").
"Art. (...)" (innumerado) is numbered after the article it follows: "42-innumerado-1".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from training.datasets.citations import fold

ARTICLE = re.compile(r"^Art(?:[íi]culo|\.)\s*(?P<number>\d+(?:\.\d+)*|\(\s*\.\.\.\s*\)|\.\.\.)"
                     r"\s*\.?\s*-\s*(?P<rest>.*)$")
_ORDINAL = (r"(?:[IVXLC]+\b|\d+\w*\.?|[uú]nic[oa]|preliminar|final|primer[oa]?|segund[oa]|tercer[oa]?|cuart[oa]|"
            r"quint[oa]|sext[oa]|s[eé]ptim[oa]|octav[oa]|noven[oa]|d[eé]cim\w*|und[eé]cim[oa]|duod[eé]cim[oa]|"
            r"vig[eé]sim\w*|trig[eé]sim\w*|innumerad[oa]|\.\.\.|\(\.\.\.\))")
HEADING = re.compile(rf"^(?:-\s*)?(?:libro|t[íi]tulo|cap[íi]tulo|secci[óo]n|par[áa]grafo|subsecci[óo]n)\s+{_ORDINAL}"
                     r"(?:[\s.:-].{0,100})?$|^(?-i:[IVXLC]+\.?(?:\s+[A-ZÁÉÍÓÚÑ][A-ZÁÉÍÓÚÑ ,;]+)?)$", re.IGNORECASE)
FINAL_PROVISIONS = re.compile(r"^(?:DISPOSICI[ÓO]N(?:ES)?|R[ÉE]GIMEN DE TRANSICI[ÓO]N)\b")
SKIP_TO_NEXT_ARTICLE = re.compile(r"^(?:CONCORDANCIAS|JURISPRUDENCIA|NOTA GENERAL)\s*:", re.IGNORECASE)
# A court's ruling reproduced in a note quotes articles, with their headings, up to its certification;
# no heading inside it is the law's own.
RULING = re.compile(r"^Texto de (?:la )?interpretaci[óo]n\b", re.IGNORECASE)
RULING_END = re.compile(r"^CONCORDANCIAS\s*:|.*\bEs fiel copia\b", re.IGNORECASE)
# "Art. 148.- "La Presidenta ..." inside a court's ruling that a note reproduces: a quotation, not a heading
QUOTED = re.compile(r"^(?:[\"“«']|de la constituci[óo]n|del c[óo]digo|de la ley)", re.IGNORECASE)
NOTE = re.compile(r"^(?:\d+\.\s*)?Notas?\s*:", re.IGNORECASE)  # "6.Nota: Numeral derogado ..."
# where the publisher prints a table as a pointer to the Registro Oficial instead of its text
SEE_GAZETTE = re.compile(r"Para leer Texto,? ver Registro Oficial[^.]*?p[áa]gina \d+\s*\.", re.IGNORECASE)
_REFORM_WORDS = (r"(?:Agregad|Sustituid|Reformad|Derogad|Suprimid|Incorporad|Renumerad|Interpretad|Modificad|"
                 r"Expedid|Incluid|Inciso|Incisos|Numeral|Numerales|Literal|Literales|P[áa]rrafo|Art[íi]culo|Frase|"
                 r"Palabra|Texto|Declarad|Ref\.|Nota)")
REFORM_NOTE = re.compile(rf"\(\s*{_REFORM_WORDS}[^()]*(?:\([^()]*\)[^()]*)*\)")
TITLE = re.compile(r"^(?P<title>[^.():;]{2,160}?)\s*\.\s*-\s*(?P<rest>.*)$")
REPEALED = re.compile(r"^\(?\s*derogad[oa]s?\b", re.IGNORECASE)
# the law's own outline, top down; an article records the headings it stands under (`estructura`)
LEVELS = ("libro", "titulo", "capitulo", "seccion", "subseccion", "paragrafo", "numeral")
HEADING_NAME_CHARS = 100  # a heading's name runs over the next short lines that end no sentence


@dataclass
class Article:
    articulo: str
    titulo: str = ""
    texto: str = ""
    reformas: list[str] = field(default_factory=list)  # the publisher's record of reforms and notes
    derogado: bool = False
    lines: list[str] = field(default_factory=list)  # as printed, while splitting
    notes: list[str] = field(default_factory=list)
    estructura: list[str] = field(default_factory=list)  # "Capítulo séptimo Derechos de la naturaleza", ...


def base_number(articulo: str) -> tuple[int, ...]:
    """'28.1' -> (28, 1); '42-innumerado-2' -> (42, 0, 2): the order articles are printed in."""
    head, _, innumerado = articulo.partition("-innumerado-")
    return (*map(int, head.split(".")), *((0, int(innumerado)) if innumerado else ()))


def split_articles(lines: list[str]) -> list[Article]:
    """The articles in the law's lines, in order, each with its text cleaned (see the module doc)."""
    articles: dict[str, list[Article]] = {}  # every printing of each number, in order
    current: Article | None = None
    last: tuple[int, ...] = (0,)
    mode = "before"  # before the first article | article | note | ruling | skip
    outline = Outline()
    for line in lines:
        outline.read(line, mode)
        if mode == "ruling":
            mode = "skip" if RULING_END.match(line) else mode
            continue
        if RULING.match(line):
            mode = "ruling"
            continue
        heading = ARTICLE.match(line)
        if heading and not QUOTED.match(heading["rest"]):
            number = _article_number(heading["number"], last, articles)
            if number is not None and base_number(number)[0] >= last[0]:
                current = Article(number, estructura=outline.path())
                articles.setdefault(number, []).append(current)
                last, mode = base_number(number), "note" if NOTE.match(heading["rest"]) else "article"
                (current.notes if mode == "note" else current.lines).append(heading["rest"])
                continue
            mode = "skip"  # another text's article, quoted after the law
            continue
        if mode == "before":
            continue
        if HEADING.match(line) or FINAL_PROVISIONS.match(line) or SKIP_TO_NEXT_ARTICLE.match(line):
            mode = "skip"
        elif mode == "article" and NOTE.match(line):
            mode = "note"
        if mode == "article":
            current.lines.append(line)
        elif mode == "note":
            current.notes.append(line)
            if re.search(r"\.\s*$", line):
                mode = "article"  # the note's paragraph ends here; the article may go on
    return [_latest([_finish(printing) for printing in printings]) for printings in articles.values()]


class Outline:
    """The headings in force at each line: a heading replaces its level and clears those below it;
    its name is the rest of its line and the short lines after it that end no sentence."""

    def __init__(self):
        self.headings: dict[str, str] = {}
        self.naming: str | None = None  # the level whose name is still being read

    def read(self, line: str, mode: str) -> None:
        if FINAL_PROVISIONS.match(line):
            self.headings, self.naming = {}, None
        elif HEADING.match(line):
            level = _level(line)
            self.headings = {key: text for key, text in self.headings.items()
                             if LEVELS.index(key) < LEVELS.index(level)}
            self.headings[level], self.naming = line.lstrip("- ").strip(), level
        elif (self.naming and mode in ("before", "skip") and not ARTICLE.match(line)
              and len(line) <= HEADING_NAME_CHARS and not re.search(r"[.,;:]\s*$", line)
              and len(self.headings[self.naming]) <= 2 * HEADING_NAME_CHARS):
            self.headings[self.naming] += f" {line.strip()}"
        else:
            self.naming = None

    def path(self) -> list[str]:
        return [self.headings[level] for level in LEVELS if level in self.headings]


def _level(line: str) -> str:
    word = fold(line.lstrip("- ").split()[0])
    return word if word in LEVELS else "numeral"


def _latest(printings: list[Article]) -> Article:
    """The article as in force: a later printing (a substitution) replaces an earlier one, unless it
    reprints only the changed parts ("[...]" for the rest): then the earlier text stays and the partial
    wording goes into the history."""
    current = printings[0]
    for later in printings[1:]:
        if "[...]" in later.texto or "[…]" in later.texto:
            current.reformas.append(f"Reforma parcial, texto publicado: {later.texto}")
        else:
            later.reformas = current.reformas + later.reformas
            current = later
    return current


def _article_number(printed: str, last: tuple[int, ...], articles: dict[str, Article]) -> str | None:
    if not printed.strip("(). "):  # innumerado: after the last numbered article
        head = ".".join(map(str, last[:1] if len(last) <= 2 or last[-2] != 0 else last[:-2]))
        count = sum(1 for key in articles if key.startswith(f"{head}-innumerado-"))  # printings share one key
        return f"{head}-innumerado-{count + 1}" if head != "0" else None
    return printed


def _finish(article: Article) -> Article:
    text = join_paragraphs(article.lines)
    article.reformas = [note.strip("() ") for note in REFORM_NOTE.findall(text) + SEE_GAZETTE.findall(text)]
    article.reformas += [note for note in join_paragraphs(article.notes).split("\n") if note]
    text = SEE_GAZETTE.sub("", REFORM_NOTE.sub("", text))
    text = re.sub(r"(?m)^\s*\.\s*-\s*", "", re.sub(r"\.\s*-\s*\.\s*-", ".-", text))  # ".- (note).- " left ".- .-"
    text = re.sub(r"[ ]{2,}", " ", text).strip()
    first, _, others = text.partition("\n")
    title = TITLE.match(first)
    if title and not REPEALED.match(title["title"]) and _looks_like_title(title["title"]):
        article.titulo, first = title["title"].strip(), title["rest"].strip()
        text = "\n".join(part for part in (first, others) if part)
    if not text.strip(" .-") or REPEALED.match(text):
        article.derogado, text = True, "Derogado."
    article.texto = text.strip()
    article.lines, article.notes = [], []
    return article


def _looks_like_title(candidate: str) -> bool:
    """A title is a short name ('Finalidad', 'Contrato tipo y excepciones'), not a sentence."""
    words = candidate.split()
    return len(words) <= 16 and not re.search(r"[;:,]\s*$", candidate) and candidate[:1].isupper()


def join_paragraphs(lines: list[str]) -> str:
    """Join lines wrapped by the page into paragraphs: a line ending a sentence (. : ;) followed by
    one that opens a paragraph (a capital, a numbered or lettered item, a dash) starts a new one."""
    paragraphs: list[str] = []
    for line in lines:
        opens = re.match(r"^(?:[A-ZÁÉÍÓÚÑ¿¡\"“]|\d+[.)°ºa-z]*\s|\d+[a-zº°]*\.\s*-|[a-zñ]{1,2}\)|-\s)", line)
        if paragraphs and not (opens and re.search(r"[.:;]\s*$", paragraphs[-1])):
            joiner = "" if paragraphs[-1].endswith("-") and line[:1].islower() else " "
            paragraphs[-1] = paragraphs[-1].rstrip() + joiner + line
        else:
            paragraphs.append(line)
    return "\n".join(paragraphs)
