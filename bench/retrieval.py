"""How well `training.retrieval.retrieve` finds the gold article of held-out leyes-ec questions.

    python bench/retrieval.py [--split test|train]

For each leyes-ec row (question = instruction, plus "\\n" + input when there is one) the gold
article is `fuente` (norma + articulo). Recall@1/@4/@10 is reported apart for article-named
questions (rows with `derivado_de`, or whose instruction cites an article) and topic questions,
over all rows and over the rows whose gold norm is in the corpus (the Código de la Niñez and the
Ley de Defensa del Consumidor are not). False triggers: share of instrucciones-es questions (no
legal content) that get any article. Latency per question (index loaded), median and p95.
In fresh subprocesses with an empty temporary cache: index build time and its peak-RSS delta
(RSS after building above RSS after reading the corpus), then the load time from that cache.
Baseline in the same run: plain bm25s (its Spanish stop words + Snowball stemmer) over
"titulo + texto": no norm detection, title weight, article lookup, derogation filter or trigger.
Tune on `--split train`; the targets hold for test. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from training.datasets.citations import canonical_article, find_citations, norm_canonical  # noqa: E402
from training.datasets.corpus.read import load_corpus  # noqa: E402

DATA = ROOT / "training" / "datasets"
KS = (1, 4, 10)

_SUBPROCESS = """
import json, resource, sys, time
from training.datasets.corpus.read import load_corpus
from training.retrieval import cache
if sys.argv[1] == "build":
    rows, sha = load_corpus()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    cache.load_index()  # empty cache: builds and saves
    seconds = time.perf_counter() - start
    print(json.dumps({"s": seconds, "mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024}))
else:
    start = time.perf_counter()
    cache.load_index()
    print(json.dumps({"s": time.perf_counter() - start}))
"""


def read(name: str, split: str) -> list[dict]:
    lines = (DATA / name / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def question(row: dict) -> str:
    return row["instruction"] + ("\n" + row["input"] if row.get("input") else "")


def article_named(row: dict) -> bool:
    return "derivado_de" in row or any(c.norma for c in find_citations(row["instruction"]))


def gold(row: dict) -> tuple[str, str]:
    return norm_canonical(row["fuente"]["norma"]), canonical_article(str(row["fuente"]["articulo"]))


def recalls(ranked: list[list[tuple[str, str]]], golds: list[tuple[str, str]]) -> dict[str, float]:
    n = max(len(golds), 1)
    return {f"r@{k}": sum(g in r[:k] for r, g in zip(ranked, golds, strict=True)) / n for k in KS}


class Baseline:
    """Plain bm25s: Spanish stop words and stemmer from bm25s/PyStemmer, titulo + texto, top 10."""

    def __init__(self, rows: list[dict]):
        import bm25s
        import Stemmer

        self.bm25s, self.stemmer, self.rows = bm25s, Stemmer.Stemmer("spanish"), rows
        tokens = bm25s.tokenize([f"{r['titulo']}\n{r['texto']}" for r in rows], stopwords="es",
                                stemmer=self.stemmer, show_progress=False)
        self.index = bm25s.BM25()
        self.index.index(tokens, show_progress=False)

    def ranked(self, text: str) -> list[tuple[str, str]]:
        tokens = self.bm25s.tokenize([text], stopwords="es", stemmer=self.stemmer, show_progress=False)
        docs, scores = self.index.retrieve(tokens, k=10, show_progress=False, n_threads=1)
        return [(self.rows[d]["norma"], canonical_article(self.rows[d]["articulo"]))
                for d, s in zip(docs[0], scores[0], strict=True) if s > 0]


def in_fresh_process(what: str, cache_dir: str) -> dict:
    env = {**os.environ, "SPANISH_FT_CACHE": cache_dir, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", _SUBPROCESS, what], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def evaluate(split: str, retrieve, baseline: Baseline | None = None) -> dict:
    """Recall by question kind, false triggers and latency for `retrieve` (and the baseline)."""
    laws, general = read("leyes-ec", split), read("instrucciones-es", split)
    corpus_norms = {r["norma"] for r in (baseline.rows if baseline else [])} or None
    seconds, ours, base = [], [], []
    for row in laws:
        start = time.perf_counter()
        hits = retrieve(question(row), k=10)
        seconds.append(time.perf_counter() - start)
        ours.append([(h.norma, canonical_article(h.articulo)) for h in hits])
        base.append(baseline.ranked(question(row)) if baseline else [])
    triggered = 0
    for row in general:
        start = time.perf_counter()
        triggered += bool(retrieve(question(row), k=4))
        seconds.append(time.perf_counter() - start)
    result = {"split": split, "false_triggers": triggered / len(general), "n_general": len(general)}
    if baseline:
        result["baseline_false_triggers"] = sum(bool(baseline.ranked(question(r))) for r in general) / len(general)
    for kind, keep in (("named", article_named), ("topic", lambda r: not article_named(r))):
        for scope in ("all", "in_corpus"):
            idx = [i for i, r in enumerate(laws) if keep(r) and (scope == "all" or corpus_norms is None
                                                                  or gold(r)[0] in corpus_norms)]
            golds = [gold(laws[i]) for i in idx]
            result[f"{kind}_{scope}"] = {"n": len(idx), **recalls([ours[i] for i in idx], golds),
                                         "baseline": recalls([base[i] for i in idx], golds)}
    seconds.sort()
    result["latency_ms"] = {"median": 1000 * statistics.median(seconds),
                            "p95": 1000 * seconds[int(0.95 * (len(seconds) - 1))]}
    return result


def print_table(result: dict) -> None:
    print(f"split: {result['split']}")
    print("| questions | n | ours r@1 | r@4 | r@10 | baseline r@1 | r@4 | r@10 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for key in ("named_all", "named_in_corpus", "topic_all", "topic_in_corpus"):
        row, base = result[key], result[key]["baseline"]
        print(f"| {key.replace('_', ' ')} | {row['n']} | " + " | ".join(f"{row[f'r@{k}']:.3f}" for k in KS) + " | "
              + " | ".join(f"{base[f'r@{k}']:.3f}" for k in KS) + " |")
    print(f"false triggers on instrucciones-es ({result['n_general']} questions): ours {result['false_triggers']:.1%}, "
          f"baseline {result.get('baseline_false_triggers', float('nan')):.1%}")
    lat = result["latency_ms"]
    print(f"latency per question (index loaded): median {lat['median']:.1f} ms, p95 {lat['p95']:.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("test", "train"), default="test")
    split = parser.parse_args().split
    print(f"load average before the run: {os.getloadavg()[0]:.1f} (2 cores shared with other jobs)")
    with tempfile.TemporaryDirectory() as cache_dir:
        build = in_fresh_process("build", cache_dir)
        load = in_fresh_process("load", cache_dir)
        os.environ["SPANISH_FT_CACHE"] = cache_dir
        from training.retrieval import retrieve

        retrieve("¿Qué es el hábeas corpus?")  # load the index before timing questions
        rows, _ = load_corpus()
        result = evaluate(split, retrieve, Baseline(rows))
    print_table(result)
    print(f"index build: {build['s']:.2f} s, peak RSS +{build['mb']:.0f} MB; load from cache (fresh process): "
          f"{load['s']:.2f} s")
    result.update(build_s=round(build["s"], 3), build_rss_mb=round(build["mb"], 1), load_s=round(load["s"], 3))
    print(json.dumps(result, default=lambda x: round(x, 4)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
