"""Grounded legal answers on the demo model: the shipped adapters with Fuentes against without, one run.

    python bench/grounded.py --base demo-output/models/gemma3-270m
        [--instrucciones loras/gemma3-270m-instrucciones] [--fused loras/gemma3-270m-fusionado]
        [--answer-rows N] [--max-new-tokens 96] [--limit N]

Everything is measured by training/evaluate/evaluate.py's own functions (load_task, the loss pass,
greedy answers, citation_scores, grounding_scores), so the figures are `evaluate`'s. Fuentes builds
each prompt as the webui extension does (training/retrieval/fuentes.py, k from the fused adapter's
training record; no gold article put in). Held-out data only:
- leyes-ec/test.jsonl: the fused adapter's answers with Fuentes and without. Citation accuracy
  (the answer cites the row's norm and article) on topic questions and on article-named ones,
  `grounded` (answers that cite an article whose citations were all in the prompt), and the share
  of prompts that held the gold article;
- instrucciones-es/test.jsonl: the fused adapter's chrF and answer loss with Fuentes and without
  (Fuentes must not hurt general instructions; a general question rarely gets articles);
- bench/heldout/general-otros-estilos.jsonl (written for this, never trained on or tuned with) and
  instrucciones-es/test.jsonl: how much of the instrucciones adapter's loss gain over the base model
  the fused adapter keeps, per answer character, with Fuentes and without.
Targets (issue 25): topic citations >= 60 %, named >= 95 %, grounded >= 90 %, instrucciones no worse
with Fuentes, the fused adapter keeps >= 90 % of the instrucciones gain on both general sets.
The last line is one JSON object; the exit status is 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import sacrebleu
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from training.adapters.folder import open_adapter  # noqa: E402
from training.demo.demo import fuentes_k  # noqa: E402
from training.evaluate.evaluate import (  # noqa: E402
    BASE,
    adapter_template,
    answered_rows,
    citation_scores,
    grounding_scores,
    load_base_tokenizer,
    load_model,
    load_task,
    loss_autocast,
    loss_in_steps,
    task_rows,
)
from training.evaluate.generate import active_variant, generate_answers  # noqa: E402
from training.templates import load_template  # noqa: E402

DATA = ROOT / "training" / "datasets"
SPLITS = {"leyes-ec": DATA / "leyes-ec" / "test.jsonl", "instrucciones-es": DATA / "instrucciones-es" / "test.jsonl",
          "general-otros-estilos": ROOT / "bench" / "heldout" / "general-otros-estilos.jsonl"}
TARGETS = {"topic_citations": 0.60, "named_citations": 0.95, "grounded": 0.90, "gain_kept": 0.90}
CHRF_TOLERANCE = 0.5  # chrF points: "no worse" allows this much noise on 63 answers


def losses(model, task, variants: list[str]) -> dict[str, float]:
    """Answer loss per character of each variant over every row of the task."""
    out = {}
    with tqdm(total=len(variants) * len(task.encoded), desc=f"loss {task.name}", unit="row") as progress:
        for variant in variants:
            with active_variant(model, None if variant == BASE else variant), loss_autocast(model, True):
                out[variant] = loss_in_steps(model, task.encoded, progress, task.answer_chars)["answer_loss_per_char"]
    return out


def answers(model, tokenizer, template, task, variant: str, rows: list[int], max_new_tokens: int) -> list[str]:
    conversations = [task.questions[i] for i in rows]
    texts = []
    with active_variant(model, variant), tqdm(total=len(rows), desc=f"answers {task.name}", unit="answer") as bar:
        for start in range(0, len(conversations), 8):
            chunk = conversations[start:start + 8]
            texts += [a.text for a in generate_answers(model, tokenizer, template, chunk, max_new_tokens)]
            bar.update(len(chunk))
    return texts


def gain_kept(scores: dict[str, float], instr: str, fused: str) -> float:
    return (scores[BASE] - scores[fused]) / (scores[BASE] - scores[instr])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the demo model folder (fetch-demo-model's output)")
    parser.add_argument("--instrucciones", type=Path, default=ROOT / "loras" / "gemma3-270m-instrucciones")
    parser.add_argument("--fused", type=Path, default=ROOT / "loras" / "gemma3-270m-fusionado")
    parser.add_argument("--answer-rows", type=int, help="answers on N rows per split spread evenly (default all)")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--limit", type=int, help="only the first N rows of each split (a quick check)")
    args = parser.parse_args()
    started = time.perf_counter()
    k = fuentes_k(args.fused) or 3  # the extension's k for this adapter
    opened = [open_adapter(args.instrucciones), open_adapter(args.fused)]
    template = load_template(adapter_template([args.fused], None))
    tokenizer = load_base_tokenizer(args.base)
    tasks = {(name, on): load_task(str(path), tokenizer, template, args.limit, "alpaca", k if on else None)
             for name, path in SPLITS.items() for on in (False, True)}
    model, (instr, fused) = load_model(args.base, opened)
    result = {"base": args.base, "instrucciones": instr, "fused": fused, "fuentes_k": k, "targets": TARGETS}

    # losses per answer character: the gain kept on the two general sets, Fuentes off and on
    for name in ("instrucciones-es", "general-otros-estilos"):
        off = losses(model, tasks[name, False], [BASE, instr, fused])
        on = losses(model, tasks[name, True], [BASE, instr, fused])
        result[name] = {"loss_per_char": {"off": off, "on": on},
                        "gain_kept": {"off": gain_kept(off, instr, fused), "on": gain_kept(on, instr, fused)}}
    result["leyes-ec"] = {"loss_per_char": {"off": losses(model, tasks["leyes-ec", False], [BASE, fused]),
                                            "on": losses(model, tasks["leyes-ec", True], [BASE, fused])}}

    # answers of the fused adapter: legal ones (citations, grounding) and general ones (chrF)
    for on in (False, True):
        task = tasks["leyes-ec", on]
        rows = answered_rows(len(task.references), args.answer_rows)
        texts = answers(model, tokenizer, template, task, fused, rows, args.max_new_tokens)
        shown = task_rows(task, rows)
        scores = citation_scores(texts, shown) | (grounding_scores(texts, shown) if on else {})
        result["leyes-ec"]["fuentes" if on else "sin_fuentes"] = scores | {"answers": texts}
        task = tasks["instrucciones-es", on]
        rows = answered_rows(len(task.references), args.answer_rows)
        texts = answers(model, tokenizer, template, task, fused, rows, args.max_new_tokens)
        result["instrucciones-es"]["chrf_" + ("on" if on else "off")] = sacrebleu.corpus_chrf(
            texts, [[task.references[i] for i in rows]]).score
    result["seconds"] = round(time.perf_counter() - started)

    laws, general = result["leyes-ec"], result["instrucciones-es"]
    checks = {
        "topic_citations": laws["fuentes"].get("citation_accuracy_recall", 0.0) >= TARGETS["topic_citations"],
        "named_citations": laws["fuentes"].get("citation_accuracy_named", 0.0) >= TARGETS["named_citations"],
        "grounded": laws["fuentes"].get("grounded", 0.0) >= TARGETS["grounded"],
        "instrucciones_chrf": general["chrf_on"] >= general["chrf_off"] - CHRF_TOLERANCE,
        "instrucciones_loss": general["loss_per_char"]["on"][fused] <= general["loss_per_char"]["off"][fused] + 1e-3,
        "gain_kept": all(result[n]["gain_kept"][w] >= TARGETS["gain_kept"]
                         for n in ("instrucciones-es", "general-otros-estilos") for w in ("off", "on")),
    }
    result["checks"] = checks
    rows = len(tasks["leyes-ec", True].references)
    print(f"\n{fused} with Fuentes (k={k}) against without, held-out leyes-ec ({rows} rows):")
    print("| | topic citations | named citations | grounded | citing answers | gold article in the prompt |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for key, label in (("sin_fuentes", "without Fuentes"), ("fuentes", "with Fuentes")):
        s = laws[key]
        grounding = (f"{s.get('grounded', 0):.0%} | {s['citing_answers']} | {s.get('retrieval_recall', 0):.0%}"
                     if key == "fuentes" else " | | ")
        print(f"| {label} | {s.get('citation_accuracy_recall', 0):.0%} ({s.get('citation_rows_recall', 0)}) | "
              f"{s.get('citation_accuracy_named', 0):.0%} ({s.get('citation_rows_named', 0)}) | {grounding} |")
    print(f"instrucciones-es, {fused}: chrF {general['chrf_off']:.1f} without Fuentes, {general['chrf_on']:.1f} with; "
          f"loss per char {general['loss_per_char']['off'][fused]:.4f} / {general['loss_per_char']['on'][fused]:.4f}")
    for name in ("instrucciones-es", "general-otros-estilos"):
        kept = result[name]["gain_kept"]
        print(f"{name}: the fused adapter keeps {kept['off']:.0%} of the instrucciones gain ({kept['on']:.0%} with "
              "Fuentes)")
    print("targets: " + ", ".join(f"{name} {'ok' if ok else 'MISSED'}" for name, ok in checks.items())
          + f"; {result['seconds']} s")
    print(json.dumps(result, ensure_ascii=False, default=lambda x: round(x, 4)))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
