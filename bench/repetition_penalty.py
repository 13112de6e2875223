"""Which repetition penalty suits the demo preset (spanish_ft-Gemma): the fused demo adapter's
greedy answers to every 5th held-out row of each task, scored by chrF and citation accuracy.

    python bench/repetition_penalty.py [1.0 1.05 1.1 1.2]

Needs the demo model (`python -m training fetch-demo-model demo-output/models/gemma3-270m`, which the
demo writes too).
The penalty applies, as in the webui, to every token already in the prompt or the answer; answers
are generated one prompt at a time. About 4 minutes per value on 2 cores.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

BUNDLE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BUNDLE))


def main(penalties: list[float]) -> None:
    import sacrebleu

    from training.datasets.citations import cites
    from training.demo.demo import DEMO_MODEL
    from training.evaluate.evaluate import adapter_template, load_model_with_adapters
    from training.evaluate.generate import active_variant, generate_answers
    from training.templates import load_template

    fused = BUNDLE / "loras" / f"{DEMO_MODEL}-fusionado"
    template = load_template(adapter_template([fused], None))
    model, tokenizer, names = load_model_with_adapters(str(BUNDLE / "demo-output/models" / DEMO_MODEL), [fused], False)
    data = {}
    for task in ("leyes-ec", "instrucciones-es"):
        lines = (BUNDLE / f"training/datasets/{task}/test.jsonl").read_text(encoding="utf-8").splitlines()
        data[task] = [json.loads(line) for line in lines if line.strip()][::5]

    def conversation(row: dict) -> list[dict]:
        return [{"role": "user", "content": row["instruction"] + (f"\n\n{row['input']}" if row["input"] else "")}]

    print(f"rows: leyes-ec {len(data['leyes-ec'])}, instrucciones-es {len(data['instrucciones-es'])} "
          "(every 5th held-out row)")
    print("| repetition_penalty | leyes-ec chrF | citations | instrucciones-es chrF | seconds |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for penalty in penalties:
        started = time.perf_counter()
        scores = {}
        with active_variant(model, names[0]):
            for task, rows in data.items():
                conversations = [conversation(r) for r in rows]
                answers = [a.text for a in generate_answers(model, tokenizer, template, conversations, 80,
                                                            repetition_penalty=penalty)]
                scores[task] = sacrebleu.corpus_chrf(answers, [[r["output"] for r in rows]]).score
                if task == "leyes-ec":
                    scores["cites"] = sum(cites(a, r["fuente"]) for a, r in zip(answers, rows, strict=True)) / len(rows)
        print(f"| {penalty} | {scores['leyes-ec']:.1f} | {scores['cites']:.0%} | {scores['instrucciones-es']:.1f} | "
              f"{time.perf_counter() - started:.0f} |", flush=True)


if __name__ == "__main__":
    main([float(x) for x in sys.argv[1:]] or [1.0, 1.05, 1.1, 1.2])
