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
given do not settle the question and cites none. Whatever the chat could not ground is answered
the same way, never from memory: a question about a norm whose text the corpus does not hold (the
turn says so: "[sin texto] <norm>"; the answer names it), and a legal question retrieval finds
nothing for (the turn is the question alone; the answer says the text is not at hand). Two more
kinds of rows come from the recipe (`Grounder`): legal questions the corpus cannot answer
(`dataset.retrieval.unanswerable`), and replayed rows of the general task with the sources the chat
would give them, answer unchanged, a share of them with the articles ranked best even when the
question is not legal (`distractor_share`): the model learns to ignore sources that do not concern
the question. `citation_check` tells which citations of an answer name an article that was in the prompt.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass

from training.datasets.citations import Citation, canonical_article, find_citations, fold, norm_mentions
from training.datasets.corpus.read import CORPUS_DIR, corpus_sha256, read_manifest
from training.retrieval.analyze import terms
from training.retrieval.cache import load_index
from training.retrieval.search import Hit, retrieve

ARTICLE_CHARS = 800
CUT = "[…]"
HEADER = "Fuentes (leyes del Ecuador; cita solo estos artículos):"
QUESTION = "Pregunta: "
# The answers of rows whose sources do not settle the question (seeded choice per row). They all open
# with "No": spread over several openings, the mass of a small model's first answer token went to the
# "Según el artículo" of the many answered rows (measured on the held-out unanswerable questions).
# rows whose gold article was left out, or whose sources do not hold it
NOT_IN_SOURCES = (
    "No puedo responder esta pregunta con base en las fuentes: los artículos recibidos no la tratan. "
    "Consulta el texto vigente de la norma que corresponda o a un abogado.",
    "No encuentro la respuesta en los artículos proporcionados; prefiero no citar un artículo que no tengo a la "
    "vista. Revisa la norma aplicable en su versión vigente.",
    "No está entre las fuentes el artículo que resolvería esta consulta, así que no puedo responderla con "
    "seguridad. Revisa la norma pertinente en su versión vigente.",
)
# a legal question retrieval finds nothing for: the turn is the question alone
NO_TEXT = (
    "No tengo a la vista el texto de la norma que regula esto, así que no puedo citar un artículo sin riesgo de "
    "equivocarme. Consulta la norma vigente que corresponda o a un abogado.",
    "No encuentro entre mis fuentes la norma que trata esta pregunta; prefiero no citar un artículo que no tengo a "
    "la vista. Revisa la normativa vigente aplicable.",
    "No tengo el texto legal que responde esta consulta, así que no puedo darte un artículo con seguridad. Te "
    "conviene revisar la norma aplicable en su versión vigente.",
)
# a question about a norm the corpus does not hold ("[sin texto] <norma>" in the turn)
ABSENT = (
    "No tengo el texto de {norma} entre las fuentes, así que no puedo decir qué establece sin inventar un "
    "artículo. Consulta su texto vigente o a un abogado.",
    "No tengo a la vista el texto de {norma}; prefiero no citar artículos suyos que no puedo leer. "
    "Revisa esa norma en su versión vigente.",
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


# a norm named by its title: "la Ley Orgánica de Protección de Datos Personales por ..." (up to a word
# that starts what is asked of it, or punctuation)
# (capitalised, as titles are written: "la ley de la oferta y la demanda" is not one)
NAMED_NORM = re.compile(r"\b((?:Ley|Código|Reglamento)(?:\s+(?:Orgánica|Orgánico|General|Reformatoria))?"
                        r"\s+(?:de|del|para|sobre)\s+[^?¿,.;:!()]+?)(?=\s+(?:sobre|por|para|en|según|con|a|al|"
                        r"que|cuando|si)\b|[?¿,.;:!()]|$)")


def absent_norms(question: str, corpus_dir=CORPUS_DIR) -> list[str]:
    """The norms the question names whose text the corpus does not hold ("según el Código de la Niñez",
    "la Ley Orgánica de Protección de Datos Personales"): by the names citations.NORMS knows, or by title."""
    held = set(load_index(corpus_dir).norms)
    named = dict.fromkeys(norma for _, _, norma in norm_mentions(fold(question)))
    for match in NAMED_NORM.finditer(question):
        title = match.group(1).strip()
        folded = fold(title)
        known = [norma for _, _, norma in norm_mentions(folded)] or [
            norma for norma in held if fold(norma).startswith(folded)]  # a held norm's title, shortened
        if not known:
            named.setdefault(title[0].upper() + title[1:], None)
    return [norma for norma in named if norma not in held]


def sources_for(question: str, k: int, corpus_dir=CORPUS_DIR) -> tuple[list[Hit], list[str]]:
    """(articles for the question, norms it names that the corpus lacks): what a grounded turn shows."""
    return retrieve(question, k, corpus_dir=corpus_dir), absent_norms(question, corpus_dir)


def grounded_turn(question: str, hits: list[Hit], absent: list[str] | tuple = ()) -> str:
    """The user's turn with its sources, and a line per named norm whose text is not among them;
    the question alone when there is neither (not a legal question)."""
    if not hits and not absent:
        return question
    lines = [HEADER, *(source_line(i, hit, question) for i, hit in enumerate(hits, start=1)),
             *(f"[sin texto] {norma}: esta norma no está entre las fuentes." for norma in absent)]
    return "\n".join(lines) + "\n\n" + QUESTION + question


@dataclass(frozen=True)
class GroundedRow:
    user: str  # the user's turn, sources included
    answer: str
    # "gold": gold article among the sources; "missing": left out (or the row has none in the corpus), the
    # answer says the sources do not settle it; "absent": a norm the question names has no text here, the
    # answer says so; "none": retrieval found nothing, the answer says the text is not at hand
    kind: str


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


def _pick(options: tuple[str, ...], seed: int, row_key: str) -> str:
    return options[int(_draw(seed, "answer:" + row_key) * len(options))]


def unsettled_row(question: str, hits: list[Hit], absent: list[str], row_key: str, seed: int) -> GroundedRow:
    """A turn whose sources do not answer the question, with the answer that says so and cites nothing:
    naming the first absent norm, else saying the articles given do not treat it, else (no sources
    at all) that the norm's text is not at hand."""
    user = grounded_turn(question, hits, absent)
    if absent:
        return GroundedRow(user, _pick(ABSENT, seed, row_key).format(norma=absent[0]), "absent")
    if hits:
        return GroundedRow(user, _pick(NOT_IN_SOURCES, seed, row_key), "missing")
    return GroundedRow(user, _pick(NO_TEXT, seed, row_key), "none")


def grounded_row(question: str, answer: str, fuente: dict | None, row_key: str, k: int, missing_share: float,
                 seed: int, corpus_dir=CORPUS_DIR) -> GroundedRow:
    """A leyes-ec row rendered with sources, RAFT-style (module docstring). `fuente`: the row's gold article."""
    hits, absent = sources_for(question, k + 1, corpus_dir)
    gold = article_hit(fuente["norma"], str(fuente["articulo"]), corpus_dir) if fuente else None
    if not hits or gold is None:  # the chat would not show the gold article (or says its norm has no text here)
        return unsettled_row(question, hits[:k], absent, row_key, seed)

    def is_gold(hit: Hit) -> bool:
        return (hit.norma, canonical_article(hit.articulo)) == (gold.norma, canonical_article(gold.articulo))

    others = [h for h in hits if not is_gold(h)]
    if _draw(seed, "missing:" + row_key) < missing_share:
        return GroundedRow(grounded_turn(question, others[:k], absent), _pick(NOT_IN_SOURCES, seed, row_key),
                           "missing")
    if any(is_gold(h) for h in hits[:k]):  # retrieval found it: its own order, as in the chat
        return GroundedRow(grounded_turn(question, hits[:k], absent), answer, "gold")
    place = int(_draw(seed, "place:" + row_key) * k)
    sources = others[: k - 1]
    sources.insert(min(place, len(sources)), gold)
    return GroundedRow(grounded_turn(question, sources, absent), answer, "gold")


def replayed_turn(question: str, k: int, distractor: bool, corpus_dir=CORPUS_DIR) -> tuple[str, str]:
    """(user turn, kind) of a replayed row of the general task, whose answer stays as it is: the sources
    the chat would give it ("sources" when there are any, "plain" when none), or with `distractor` the
    articles ranked best for its words even when the question is not legal ("distractor")."""
    try:
        hits, absent = sources_for(question, k, corpus_dir)
        if not hits and not absent and distractor:
            hits = retrieve(question, k, corpus_dir=corpus_dir, only_legal=False)
            return (grounded_turn(question, hits), "distractor") if hits else (question, "plain")
    except ValueError:  # longer than retrieval takes (a text to summarise): the chat gives it no sources
        return question, "plain"
    return grounded_turn(question, hits, absent), "sources" if hits or absent else "plain"


class Grounder:
    """`dataset.retrieval` as encode_row's `ground`: each row's last user turn gets its sources, RAFT-style.

    The row's gold article is its `fuente` ({norma, articulo}); a row without one, or whose article the
    chat would not show, is answered "the sources do not settle it" (`unsettled_row`). `replayed` grounds
    the replayed rows of the general task, answer unchanged; `unanswerable_rows` gives the recipe's
    unanswerable questions. Counts what it made, for the training record.
    """

    KINDS = ("gold", "missing", "absent", "none")
    REPLAY_KINDS = ("plain", "sources", "distractor")

    def __init__(self, settings, seed: int):
        self.k, self.missing_share, self.seed = settings.k, settings.missing_share, seed
        self.distractor_share, self.unanswerable = settings.distractor_share, settings.unanswerable
        self.corpus_dir = settings.corpus or CORPUS_DIR
        self.kinds: Counter = Counter()
        self.replay_kinds: Counter = Counter()
        self.unanswerable_kinds: Counter = Counter()
        self.last_replay_kind = "plain"

    @staticmethod
    def _turns(conversation: list[dict]) -> tuple[int, int] | None:
        """(last user turn, its answer), or None when the last user turn has no answer to learn."""
        users = [i for i, message in enumerate(conversation) if message["role"] == "user"]
        answers = [i for i, message in enumerate(conversation) if message["role"] == "assistant" and i > users[-1]]
        return (users[-1], answers[0]) if answers else None

    @staticmethod
    def _key(row: dict, question: str) -> str:
        return row["id"] if isinstance(row.get("id"), str) else hashlib.sha256(question.encode()).hexdigest()

    def __call__(self, row: dict, conversation: list[dict]) -> list[dict]:
        turns = self._turns(conversation)
        if turns is None:  # the row is left as it is
            return conversation
        ask, answer = turns
        question = conversation[ask]["content"]
        fuente = row.get("fuente")
        if not (isinstance(fuente, dict) and isinstance(fuente.get("norma"), str)
                and isinstance(fuente.get("articulo"), (str, int))):
            fuente = None
        made = grounded_row(question, conversation[answer]["content"], fuente, self._key(row, question), self.k,
                            self.missing_share, self.seed, self.corpus_dir)
        self.kinds[made.kind] += 1
        conversation = [dict(message) for message in conversation]
        conversation[ask]["content"], conversation[answer]["content"] = made.user, made.answer
        return conversation

    def replayed(self, row: dict, conversation: list[dict]) -> list[dict]:
        """A replayed row with the sources the chat would give it (a seeded `distractor_share` of them
        with the best-ranked articles anyway), its answer unchanged; `last_replay_kind` says which."""
        turns = self._turns(conversation)
        self.last_replay_kind = "plain"
        if turns is None:
            return conversation
        ask = turns[0]
        question = conversation[ask]["content"]
        distractor = _draw(self.seed, "distractor:" + self._key(row, question)) < self.distractor_share
        user, self.last_replay_kind = replayed_turn(question, self.k, distractor, self.corpus_dir)
        conversation = [dict(message) for message in conversation]
        conversation[ask]["content"] = user
        return conversation

    def unanswerable_row(self, question: str, row_key: str) -> list[dict]:
        """One of the recipe's unanswerable questions as a conversation: the turn the chat gives it, and
        the answer that says its sources do not settle it (ValueError: a question retrieval refuses)."""
        grounded = unsettled_row(question, *sources_for(question, self.k, self.corpus_dir), row_key, self.seed)
        self.unanswerable_kinds[grounded.kind] += 1
        return [{"role": "user", "content": grounded.user}, {"role": "assistant", "content": grounded.answer}]

    def summary(self) -> str:
        text = (f"k={self.k}: {self.kinds['gold']} rows with the gold article, {self.kinds['missing']} without it, "
                f"{self.kinds['absent']} citing a norm with no text here, {self.kinds['none']} with no sources")
        if self.unanswerable_kinds:
            text += f"; {sum(self.unanswerable_kinds.values())} unanswerable questions"
        if self.replay_kinds:
            text += (f"; replayed rows: {self.replay_kinds['sources']} with the chat's sources, "
                     f"{self.replay_kinds['distractor']} with distractors, {self.replay_kinds['plain']} as they were")
        return text

    def record(self) -> dict:
        record = {"k": self.k, "missing_share": self.missing_share,
                  "corpus_sha256": corpus_sha256(read_manifest(self.corpus_dir)),
                  "rows": {kind: self.kinds[kind] for kind in self.KINDS}}
        if self.unanswerable_kinds:
            record["unanswerable"] = {"file": self.unanswerable,
                                      "rows": {kind: self.unanswerable_kinds[kind] for kind in self.KINDS[1:]}}
        if self.replay_kinds:
            record["replayed"] = {"distractor_share": self.distractor_share,
                                  "rows": {kind: self.replay_kinds[kind] for kind in self.REPLAY_KINDS}}
        return record


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
