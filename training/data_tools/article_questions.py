"""Derive "what does article N of norm X say?" rows for leyes-ec from its verified rows.

Users of a law assistant often ask about an article by its number ("¿Qué dice el artículo 71
de la Constitución?"). The hand-written leyes-ec rows never do: they ask about a topic and the
answer recalls the article. This script adds rows of the first kind without adding any fact:
the question names the row's own `fuente`, the answer is the verified answer of that row with
a leading "Sí." / "No." removed (it must then start by citing that very article), and the new
row records where it comes from (`derivado_de`). A derived row stays in the split of its source
row, so no held-out answer reaches the training split, and each article gets at most one derived
question across both splits (no duplicate question across splits).

    python -m training.data_tools.article_questions training/data/leyes-ec --train-every 3 --test-every 2

Re-running is idempotent: rows derived earlier are recognised by `derivado_de` and kept.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import zlib
from pathlib import Path

from training.artifacts import write_text_atomic

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
    question = _pick(QUESTIONS, row["id"], "q").format(n=article, de_norma=_pick(NORM_IN_QUESTION[norma], row["id"], "n"))
    return {"instruction": question, "input": "", "output": answer, "fuente": dict(fuente), "derivado_de": row["id"]}


def _read(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path, help="the leyes-ec folder (train.jsonl, test.jsonl)")
    parser.add_argument("--train-every", type=int, default=3, help="derive from every Nth eligible train row")
    parser.add_argument("--test-every", type=int, default=2, help="derive from every Nth eligible test row")
    args = parser.parse_args(argv)

    from training.validate_data import validate_dataset

    errors = validate_dataset(args.dataset).errors
    if errors:  # derive only from data that passes the validator (ids, JSON, citations)
        print("\n".join(errors) + f"\n{len(errors)} error(s) in {args.dataset}: fix them, then run this again; "
              "nothing was written", file=sys.stderr)
        return 1
    splits = {name: _read(args.dataset / f"{name}.jsonl") for name in ("test", "train")}
    all_rows = [row for rows in splits.values() for row in rows]
    done = {row["derivado_de"] for row in all_rows if "derivado_de" in row}
    used = {(r["fuente"]["norma"], str(r["fuente"]["articulo"])) for r in all_rows if "derivado_de" in r}
    next_id = max(int(row["id"].split("-")[1]) for row in all_rows) + 1
    added = {}
    for name, every in (("test", args.test_every), ("train", args.train_every)):  # held-out first
        eligible = [(row["id"], new) for row in splits[name] if "derivado_de" not in row
                    and (new := derive(row)) is not None]
        count = 0
        for source_id, new in eligible[::every]:
            key = (new["fuente"]["norma"], str(new["fuente"]["articulo"]))
            if source_id in done or key in used:
                continue
            used.add(key)
            splits[name].append({"id": f"ley-{next_id:04d}", **new})
            next_id += 1
            count += 1
        added[name] = count
    for name, rows in splits.items():
        write_text_atomic(args.dataset / f"{name}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"derived rows added: train {added['train']}, test {added['test']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
