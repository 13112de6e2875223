"""The derivation rule: an "article-named" leyes-ec row from a verified one, adding no fact.

Users of a law assistant often ask about an article by its number ("¿Qué dice el artículo 71
de la Constitución?"). The hand-written leyes-ec rows never do: they ask about a topic and the
answer recalls the article. `derive` makes a row of the first kind: the question names the
row's own `fuente`, the answer is the verified answer of that row with a leading "Sí." / "No."
removed (it must then start by citing that very article), and the new row records where it
comes from (`derivado_de`). The validator checks each derived row against this rule; the
`derive-questions` command (training/datasets/derive.py) adds them to a dataset.
"""

from __future__ import annotations

import re
import zlib

QUESTIONS = [
    "¿Qué dice el artículo {n} {de_norma}?",
    "¿Qué establece el artículo {n} {de_norma}?",
    "¿De qué trata el artículo {n} {de_norma}?",
    "Explícame en pocas palabras el artículo {n} {de_norma}.",
    "¿Qué dispone el artículo {n} {de_norma}?",
    "¿Qué señala el artículo {n} {de_norma}?",
]

# canonical norm -> ways a user names it after "el artículo N ..."
NORM_IN_QUESTION = {
    "Constitución de la República del Ecuador": [
        "de la Constitución", "de la Constitución del Ecuador", "de la Constitución de la República"],
    "Código Orgánico Integral Penal": ["del COIP", "del Código Orgánico Integral Penal"],
    "Código del Trabajo": ["del Código del Trabajo"],
    "Código Civil": ["del Código Civil", "del Código Civil ecuatoriano"],
    "Código de la Niñez y Adolescencia": ["del Código de la Niñez y Adolescencia"],
    "Ley Orgánica de Defensa del Consumidor": ["de la Ley Orgánica de Defensa del Consumidor"],
    "Ley Orgánica de Garantías Jurisdiccionales y Control Constitucional": [
        "de la Ley Orgánica de Garantías Jurisdiccionales y Control Constitucional", "de la LOGJCC"],
}

_YES_NO = re.compile(r"^(Sí|No)\.\s+")


def _pick(options: list[str], row_id: str, salt: str) -> str:
    """A deterministic choice per row (stable across runs and Python versions)."""
    return options[zlib.crc32(f"{salt}:{row_id}".encode()) % len(options)]


def derive(row: dict) -> dict | None:
    """The article-named variant of a verified row, or None when its answer is not self-contained."""
    fuente = row.get("fuente") or {}
    norma, article = fuente.get("norma"), str(fuente.get("articulo", ""))
    if norma not in NORM_IN_QUESTION or not re.fullmatch(r"\d+", article) or row.get("input"):
        return None
    answer = _YES_NO.sub("", row["output"].strip())
    # the answer must open by citing this very article, so it answers "what does article N say?"
    if not re.match(rf"(Según el|El) artículo {article}\b", answer):
        return None
    de_norma = _pick(NORM_IN_QUESTION[norma], row["id"], "n")
    question = _pick(QUESTIONS, row["id"], "q").format(n=article, de_norma=de_norma)
    return {"instruction": question, "input": "", "output": answer, "fuente": dict(fuente), "derivado_de": row["id"]}
