"""Fuentes: the law articles for each question in the prompt, listed under the answer, citations checked.

The logic under script.py's chat hooks, testable without a webui:
- `turn_settings` says whether Fuentes applies to a chat turn (the switch, instruct mode, and an
  active spanish_ft adapter for Ecuadorian law: leyes-ec or a fused one) and with how many articles
  (the k its training record gives, else DEFAULT_K);
- `ground` retrieves for the question and returns the user's turn exactly as training rendered it
  (training/retrieval/fuentes.py: one rendering for both), plus the articles;
- `sources_html` lists them under the answer (norm, article, title or first line, edition date,
  full text expandable) and marks each citation of an article that was not in the prompt with
  «cita no verificada».
Retrieval needs `bm25s` and `PyStemmer` in the webui's Python (extensions/spanish_ft/requirements.txt);
without them Fuentes says so once and the chat goes on without sources. Nothing leaves the machine;
the index is loaded once per process (training/retrieval/cache.py).
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from .adapters import AdapterInfo

DEFAULT_K = 3  # as the shipped recipes train (dataset.retrieval.k)
LAW_TASKS = ("leyes-ec", "fusionado")
INSTRUCT_MODE = "instruct"
REQUIREMENTS = "extensions/spanish_ft/requirements.txt"
UNVERIFIED = "cita no verificada"


@dataclass(frozen=True)
class Turn:
    user: str  # the user's turn for the prompt (sources included)
    hits: tuple  # training.retrieval.search.Hit, best first
    note: str = ""  # why there are no sources, when there is something to say


def adapter_k(info: AdapterInfo | None) -> int | None:
    """Articles per question for this adapter (None: Fuentes does not apply to it)."""
    if info is None or not info.has_record or info.task not in LAW_TASKS:
        return None
    return info.fuentes_k or DEFAULT_K


def turn_settings(enabled: bool, state: dict, info: AdapterInfo | None) -> int | None:
    """k when Fuentes applies to this chat turn, else None."""
    if not enabled or state.get("mode") != INSTRUCT_MODE:
        return None
    return adapter_k(info)


def missing_packages() -> str | None:
    """A Spanish message when the retrieval packages are not installed, else None."""
    try:
        import bm25s  # noqa: F401
        import Stemmer  # noqa: F401
    except ImportError as err:
        return (f"Fuentes no está disponible: falta el paquete «{err.name}». Instálalo en el Python de la webui con "
                f"`python -m pip install -r {REQUIREMENTS}` (no cambia las versiones de la webui).")
    return None


def ground(question: str, k: int) -> Turn:
    """The user's turn with the articles retrieved for `question` (the question alone when none applies)."""
    from training.retrieval.fuentes import grounded_turn, sources_for

    try:
        hits, absent = sources_for(question, k)
    except ValueError as err:  # empty or too long a question: no sources, the chat goes on
        return Turn(question, (), f"Fuentes: sin artículos para este mensaje ({err}).")
    note = f"Fuentes: el texto de {', '.join(absent)} no está disponible aquí." if absent else ""
    return Turn(grounded_turn(question, hits, absent), tuple(hits), note)


def _first_line(hit) -> str:
    return hit.titulo or hit.texto.strip().split("\n")[0][:120]


def _citation_text(citation) -> str:
    return f"artículo {citation.articulo}" + (f" de {citation.norma}" if citation.norma else "")


def sources_html(answer: str, hits) -> str:
    """The block shown under the answer: the articles given to the model, then unverified citations."""
    from training.retrieval.fuentes import citation_check

    check = citation_check(html.unescape(answer), list(hits))
    parts = []
    for citation in check.unverified:
        parts.append(f'<p class="spanish-ft-unverified">⚠️ <b>{UNVERIFIED}</b>: {html.escape(_citation_text(citation))} '
                     "no estaba entre las fuentes de esta respuesta.</p>")
    if hits:
        items = "".join(
            f"<li><details><summary><b>{html.escape(hit.norma)}, artículo {html.escape(hit.articulo)}</b>: "
            f"{html.escape(_first_line(hit))} <small>(texto al {html.escape(hit.fecha)})</small></summary>"
            f"<p>{html.escape(hit.texto).replace(chr(10), '<br>')}</p></details></li>"
            for hit in hits
        )
        parts.append(f'<div class="spanish-ft-fuentes"><b>Fuentes</b> (no es asesoría legal; los textos pueden '
                     f"no estar al día):<ol>{items}</ol></div>")
    return "\n\n" + "\n".join(parts) if parts else ""
