"""What Fuentes adds to a chat turn, and how the grounded adapter answers what the corpus cannot.

    python bench/fuentes.py                                   # latency only (no model)
    python bench/fuentes.py --base demo-output/models/gemma3-270m --adapter loras/gemma3-270m-fusionado

1. Latency: the extension's whole turn work (spanish_ft_ext.fuentes.ground: retrieval, the norms
   the corpus lacks, the user's turn rendered) per held-out question (leyes-ec and instrucciones-es),
   index already loaded; median, p95 and max against the 150 ms budget, beside retrieval alone.
2. With --base/--adapter: the 10 held-out questions the corpus cannot answer
   (bench/heldout/leyes-sin-fuente.jsonl), answered greedily with Fuentes through the
   adapter's template, with its preset's repetition penalty as the webui applies it (--no-preset: without): an answer passes when it cites no article and says the sources or the text do
   not settle it. Target: 8 of 10.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "extensions" / "spanish_ft"))
from spanish_ft_ext.fuentes import ground  # noqa: E402

from training.datasets.citations import find_citations  # noqa: E402
from training.retrieval.search import retrieve  # noqa: E402

DATA = ROOT / "training" / "datasets"
BUDGET_MS = 150
K = 3
SAYS_SO = re.compile(r"no (tratan|responde|resuelven|permiten|está|están|tengo|puedo|encuentro|contienen)|"
                     r"ninguno de los artículos|las fuentes (recibidas|proporcionadas)? ?no", re.IGNORECASE)


def questions(path: Path) -> list[str]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [row["instruction"] + (f"\n\n{row['input']}" if (row.get("input") or "").strip() else "") for row in rows]


def timed_ms(work, items) -> list[float]:
    times = []
    for item in items:
        start = time.perf_counter()
        work(item)
        times.append((time.perf_counter() - start) * 1000)
    return times


def latency() -> dict:
    asked = questions(DATA / "leyes-ec" / "test.jsonl") + questions(DATA / "instrucciones-es" / "test.jsonl")
    ground(asked[0], K)  # the index, loaded once per process as in the webui
    turn = timed_ms(lambda q: ground(q, K), asked)
    alone = timed_ms(lambda q: retrieve(q, K), asked)
    p95 = statistics.quantiles(turn, n=20)[18]
    return {"questions": len(asked), "turn_median_ms": statistics.median(turn), "turn_p95_ms": p95,
            "turn_max_ms": max(turn), "retrieve_median_ms": statistics.median(alone), "budget_ms": BUDGET_MS,
            "within_budget": p95 <= BUDGET_MS}


def unanswerable(base: str, adapter: str, max_new_tokens: int, preset: bool = True) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from training.adapters.folder import load_peft_adapter, open_adapter
    from training.evaluate.evaluate import adapter_template, load_base_tokenizer
    from training.evaluate.generate import generate_answers
    from training.templates import load_template

    folder = open_adapter(Path(adapter))
    template = load_template(adapter_template([Path(adapter)], None))
    tokenizer = load_base_tokenizer(base)
    model = load_peft_adapter(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), folder, "a").eval()
    asked = questions(ROOT / "bench" / "heldout" / "leyes-sin-fuente.jsonl")
    conversations = [[{"role": "user", "content": ground(q, K).user}] for q in asked]
    penalty = None
    if preset:  # as the webui answers: the repetition penalty of the preset the adapter names
        from training.demo.demo import preset_repetition_penalty

        penalty = preset_repetition_penalty(Path(adapter))[1]
    print(f"greedy answers, repetition penalty {penalty or 1.0}")
    answers = [a.text for a in generate_answers(model, tokenizer, template, conversations, max_new_tokens,
                                                repetition_penalty=penalty)]
    rows = [{"question": q, "answer": a, "cites": [list(c) for c in find_citations(a)],
             "says_so": bool(SAYS_SO.search(a))} for q, a in zip(asked, answers, strict=True)]
    passed = sum(not row["cites"] and row["says_so"] for row in rows)
    for row in rows:
        print(f"- {row['question']}\n  {'ok ' if not row['cites'] and row['says_so'] else 'NO '} {row['answer']}")
    return {"unanswerable_passed": passed, "unanswerable_total": len(rows), "target": 8,
            "repetition_penalty": penalty or 1.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="base model folder (with --adapter: the unanswerable questions)")
    parser.add_argument("--adapter", help="adapter folder (leyes-ec or fusionado)")
    parser.add_argument("--max-new-tokens", type=int, default=80)
    parser.add_argument("--no-preset", action="store_true",
                        help="plain greedy answers (default: the repetition penalty of the adapter's preset, as the webui)")
    args = parser.parse_args()
    result = latency()
    print(f"Fuentes per chat turn ({result['questions']} held-out questions): median "
          f"{result['turn_median_ms']:.1f} ms, p95 {result['turn_p95_ms']:.1f} ms, max {result['turn_max_ms']:.1f} ms "
          f"(budget {BUDGET_MS} ms); retrieval alone median {result['retrieve_median_ms']:.1f} ms")
    if args.base and args.adapter:
        result |= unanswerable(args.base, args.adapter, args.max_new_tokens, not args.no_preset)
        print(f"questions the corpus cannot answer: {result['unanswerable_passed']} of "
              f"{result['unanswerable_total']} answered without an article and saying so (target 8)")
    print(json.dumps(result))
    return 0 if result["within_budget"] and result.get("unanswerable_passed", 8) >= 8 else 1


if __name__ == "__main__":
    sys.exit(main())
