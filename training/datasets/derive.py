"""`python -m training derive-questions DATASET`: add article-named rows to a leyes-ec folder.

A derived row (training/datasets/derivation.py) stays in the split of its source row, so no
held-out answer reaches the training split, and each article gets at most one derived
question across both splits (no duplicate question across splits). Only data that passes the
validator is read, and both splits are written atomically.

    python -m training derive-questions training/datasets/leyes-ec --train-every 3 --test-every 2

Re-running is idempotent: rows derived earlier are recognised by `derivado_de` and kept.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from training.datasets.derivation import derive
from training.datasets.validate import validate_dataset
from training.files import write_text_atomic


def _read(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", type=Path, help="the leyes-ec folder (train.jsonl, test.jsonl)")
    parser.add_argument("--train-every", type=int, default=3, help="derive from every Nth eligible train row")
    parser.add_argument("--test-every", type=int, default=2, help="derive from every Nth eligible test row")


def run(args: argparse.Namespace) -> int:
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
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        write_text_atomic(args.dataset / f"{name}.jsonl", lines)
    print(f"derived rows added: train {added['train']}, test {added['test']}")
    return 0

