"""Fuentes in the chat: what script.py's chat_input_modifier and output_modifier call.

The user's turn gets the law articles for its question (fuentes.py decides when and renders them as
training did); the chat keeps showing the question as typed. The articles of the turn being answered
are kept here until its answer is shown, where they are listed and its citations checked. One turn
at a time: the webui answers one chat message at a time (with --multi-user, turns of different
users could cross; Fuentes then lists the articles of the latest question).
"""

from __future__ import annotations

import html

from . import webui
from .fuentes import ground, missing_packages, sources_html, turn_settings
from .startup import single_bundle_adapter

_turn: dict = {}  # {"hits": (...), "note": str} of the turn being answered; empty when Fuentes did not apply
_said: set = set()  # console messages already said once


def _say_once(message: str) -> None:
    if message not in _said:
        _said.add(message)
        webui.logger.warning(f"spanish_ft: {message}")


def chat_input(params: dict, text: str, visible_text: str, state: dict) -> tuple[str, str]:
    """The user's turn for the prompt (with its articles when Fuentes applies) and the text shown."""
    _turn.clear()
    k = turn_settings(bool(params.get("fuentes", True)), state, single_bundle_adapter())
    if k is None:
        return text, visible_text
    problem = missing_packages()
    if problem:
        _say_once(problem)
        _turn.update(hits=(), note=problem)
        return text, visible_text
    turn = ground(text, k)
    _turn.update(hits=turn.hits, note=turn.note)
    return turn.user, visible_text


def output(string: str, is_chat: bool) -> str:
    """The answer as shown, with the articles it was given and its unverified citations under it."""
    if not is_chat or not _turn:
        return string
    note = _turn.get("note")
    return string + sources_html(string, _turn.get("hits", ())) + (f"\n\n<small>{html.escape(note)}</small>"
                                                                    if note else "")
