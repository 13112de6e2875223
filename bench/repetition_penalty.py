"""Which repetition penalty suits the demo preset (spanish_ft-Gemma): the fused demo adapter's
greedy answers to every 5th held-out row of each task, scored by chrF and citation accuracy.

    python bench/repetition_penalty.py [1.0 1.05 1.1 1.2] [--base demo-output/models/gemma3-270m]

Needs the demo model (`python -m training fetch-demo-model demo-output/models/gemma3-270m`, which the
demo writes too).
The penalty applies, as in the webui, to every token already in the prompt or the answer; answers
are generated one prompt at a time. The legal questions carry their Fuentes, as the webui extension
gives them to this adapter, so the penalty also weighs on the articles' words the answer should
quote; `grounded` is the share of citing answers whose citations were all among those articles.
About 2-4 minutes per value on 2 cores.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

BUNDLE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BUNDLE))


def main(penalties: list[float], base: str) -> None:
    import sacrebleu

    from training.datasets.citations import cites
    from training.demo.demo import DEMO_MODEL, fuentes_k
    from training.evaluate.evaluate import adapter_template, load_model_with_adapters, with_fuentes
    from training.evaluate.generate import active_variant, generate_answers
    from training.retrieval.fuentes import citation_check
    from training.templates import load_template

    fused = BUNDLE / "loras" / f"{DEMO_MODEL}-fusionado"
    k = fuentes_k(fused)
    template = load_template(adapter_template([fused], None))
    model, tokenizer, names = load_model_with_adapters(base, [fused], False)
    data = {}
    for task in ("leyes-ec", "instrucciones-es"):
        lines = (BUNDLE / f"training/datasets/{task}/test.jsonl").read_text(encoding="utf-8").splitlines()
        data[task] = [json.loads(line) for line in lines if line.strip()][::5]

    def conversation(row: dict) -> list[dict]:
        return [{"role": "user", "content": row["instruction"] + (f"\n\n{row['input']}" if row["input"] else "")}]

    prompts, hits = {}, []
    for task, rows in data.items():
        prompts[task] = [conversation(r) for r in rows]
    if k:
        grounded = [with_fuentes(c, k) for c in prompts["leyes-ec"]]
        prompts["leyes-ec"], hits = [c for c, _ in grounded], [h for _, h in grounded]
    print(f"rows: leyes-ec {len(data['leyes-ec'])} (Fuentes k={k}), instrucciones-es {len(data['instrucciones-es'])} "
          "(every 5th held-out row)")
    print("| repetition_penalty | leyes-ec chrF | citations | grounded | instrucciones-es chrF | seconds |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for penalty in penalties:
        started = time.perf_counter()
        scores = {}
        with active_variant(model, names[0]):
            for task, rows in data.items():
                answers = [a.text for a in generate_answers(model, tokenizer, template, prompts[task], 80,
                                                            repetition_penalty=penalty)]
                scores[task] = sacrebleu.corpus_chrf(answers, [[r["output"] for r in rows]]).score
                if task == "leyes-ec":
                    scores["cites"] = sum(cites(a, r["fuente"]) for a, r in zip(answers, rows, strict=True)) / len(rows)
                    checks = [citation_check(a, h) for a, h in zip(answers, hits, strict=True)] if hits else []
                    citing = [c for c in checks if c.verified or c.unverified]
                    scores["grounded"] = sum(not c.unverified for c in citing) / len(citing) if citing else 0.0
        print(f"| {penalty} | {scores['leyes-ec']:.1f} | {scores['cites']:.0%} | {scores['grounded']:.0%} | "
              f"{scores['instrucciones-es']:.1f} | {time.perf_counter() - started:.0f} |", flush=True)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("penalties", nargs="*", type=float, default=[1.0, 1.05, 1.1, 1.2])
    parser.add_argument("--base", default=str(BUNDLE / "demo-output" / "models" / "gemma3-270m"),
                        help="the demo model folder (default demo-output/models/gemma3-270m)")
    arguments = parser.parse_args()
    main(arguments.penalties, arguments.base)
