"""`python -m training retrieve "pregunta" [--k 4] [--json] [--corpus DIR]`: the articles that answer it.

Prints the articles `training.retrieval.retrieve` finds, best first (norm, article, title or first
line, score), or a line saying no legal article applies; `--json` prints them as a JSON list of
{norma, articulo, titulo, texto, score} (`[]` when none applies). Bad input exits 1 with `error: ...`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.datasets.corpus.read import CORPUS_DIR


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("question", help="the question, in Spanish (at most 2,000 characters)")
    parser.add_argument("--k", type=int, default=4, help="how many articles at most (1-50; default 4)")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of text")
    parser.add_argument("--corpus", type=Path, default=CORPUS_DIR, help=f"law corpus folder (default {CORPUS_DIR})")


def run(args: argparse.Namespace) -> int:
    from training.retrieval.search import retrieve

    hits = retrieve(args.question, k=args.k, corpus_dir=args.corpus)
    if args.json:
        print(json.dumps([{"norma": h.norma, "articulo": h.articulo, "titulo": h.titulo, "texto": h.texto,
                           "score": h.score} for h in hits], ensure_ascii=False, indent=1))
        return 0
    if not hits:
        print("No legal article applies to this question (it does not look like a question about the law "
              "in the corpus).")
        return 0
    for rank, hit in enumerate(hits, start=1):
        first = hit.titulo or hit.texto.strip().splitlines()[0][:100]
        how = {"cita": "cited in the question", "ambito": "what the norm is about"}.get(
            hit.match, f"score {hit.score:.2f}")
        print(f"{rank}. {hit.norma}, art. {hit.articulo}: {first} ({how})")
    return 0
