"""`python -m training evaluate`: the base model and its adapters, side by side, on held-out data.

For every held-out split (a task) and every variant (the base model with adapters disabled,
then each adapter): the answer loss per token and per answer character (comparable across
tokenizers) and the perplexity (answer tokens only, prompts rendered by
the adapters' instruction template exactly as the webui renders them), greedy answers scored
with chrF against the references, and for rows that carry a `fuente` (the leyes-ec task) the
share of answers citing the right norm and article. Losses cover every row; with `--answer-rows N`
the answers are generated on N rows per split spread evenly over it (the same rows every run),
since generation takes most of the time. Rows are alpaca by default; with
`--format messages|sharegpt` each conversation's last (assistant) turn is the reference; a bad
row stops the evaluation before the model loads, named with its file and line. Writes
report.md, report.json and a bar chart to --report: a new folder, or a report folder of ours
with --replace, checked before any model is loaded (training/files.py: check_output). Every adapter
passes the door of training/adapters/folder.py first; PEFT gets its checked config, never the file.
report.json also records what `python -m training compare` needs to put runs side by side: the
machine, each adapter's preset, and the sha256 of the template and of every split.

    python -m training evaluate --base models/gemma3-270m \\
        --adapters loras/gemma3-270m-instrucciones loras/gemma3-270m-leyes-ec \\
        --data training/datasets/instrucciones-es/test.jsonl training/datasets/leyes-ec/test.jsonl --report report/
"""

from __future__ import annotations

import argparse
import contextlib
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import sacrebleu
import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from training.adapters.folder import AdapterFolder, load_peft_adapter, open_adapter
from training.adapters.record import TrainingRecord, read_record
from training.data.conversations import encode_row, to_conversation
from training.data.prepare import list_problems
from training.data.read import DataError, RowError, read_source
from training.datasets.citations import canonical_article, cites, find_citations
from training.evaluate.generate import active_variant, answer_loss, generate_answers
from training.evaluate.machine import adapter_presets, describe_machine
from training.evaluate.report import REPORT, write_report
from training.files import BUNDLE_ROOT, check_output, find_bundle_file, sha256_file
from training.model.load import choose_pad_token, cpu_has_native_bf16
from training.templates import load_template

BASE = "base"
RETRIEVAL_MODES = ("off", "on", "both")
FUENTES = "+fuentes"  # the suffix of a variant evaluated with Fuentes in --retrieval both
SCORED_FORMATS = ("alpaca", "messages", "sharegpt")  # formats with a reference answer


@dataclass(frozen=True, kw_only=True)
class EvaluateSettings:
    """What `evaluate` scores and how: the base model, its adapters, the held-out splits.

    The pipeline holds one with its own choices (max_new_tokens, answer_rows, ...) and fills in the
    base, the adapters and the splits when it evaluates (dataclasses.replace).
    """

    base: str = ""  # base model folder or hub id
    adapters: list[Path] = field(default_factory=list)  # adapter folders, each a variant beside the base
    data: list[str] = field(default_factory=list)  # held-out splits, one task each
    data_format: str = "alpaca"  # row format of the splits; the last turn is the reference answer
    template: Path | None = None  # instruction template (default: the adapters' own)
    max_new_tokens: int = 96  # answer length cap
    limit: int | None = None  # only the first N rows of each split (quick checks, tests)
    answer_rows: int | None = None  # answers on N rows per split spread evenly (None: every row); losses on all
    bits: int = 16  # base weights on a GPU: 16 or 4 (NF4); the CPU evaluates in fp32
    bf16_loss: bool = False  # the loss pass under bf16 autocast on a CPU with native bf16 (the demo)
    allow_pickle: bool = False  # accept adapter_model.bin (runs pickle)
    retrieval: str = "off"  # off, on, both: the prompts without Fuentes, with it, or each variant both ways
    fuentes_k: int = 3  # articles per question with Fuentes
    report: Path | None = None  # the report folder the command writes (the pipeline writes its own)
    replace: bool = False  # `report` may hold a report made by spanish_ft, which is replaced
    samples: int = 3  # side-by-side sample answers per task in report.md

    @classmethod
    def from_args(cls, args) -> EvaluateSettings:
        return cls(base=args.base, adapters=list(args.adapters), data=list(args.data), data_format=args.format,
                   template=args.template, max_new_tokens=args.max_new_tokens, limit=args.limit,
                   answer_rows=args.answer_rows, bits=args.bits, allow_pickle=args.allow_pickle,
                   retrieval=args.retrieval, fuentes_k=args.fuentes_k, report=args.report, replace=args.replace,
                   samples=args.samples)


@dataclass(frozen=True)
class TaskData:
    name: str  # the split's folder name, e.g. "leyes-ec"
    path: str
    questions: list[list[dict]]  # conversation up to its last answer
    references: list[str]
    sources: list[dict | None]  # the `fuente` of each row, if any
    encoded: list  # training.data.tokens.Encoded rows for the loss
    answer_chars: int = 0  # characters of every answer the loss scores: the per-character loss divides by it
    hits: list | None = None  # with Fuentes: the articles each row's prompt holds (training.retrieval)
    asked: list[str] | None = None  # each row's last question as the user typed it (without Fuentes)


def add_arguments(parser) -> None:
    parser.add_argument("--base", required=True, help="base model folder or hub id")
    parser.add_argument("--adapters", nargs="+", type=Path, default=[], help="adapter folders to compare")
    parser.add_argument("--data", nargs="+", required=True,
                        help="held-out splits (.jsonl/.json/.csv/.parquet in --format), e.g. test.jsonl")
    parser.add_argument("--format", choices=SCORED_FORMATS, default="alpaca",
                        help="row format of the --data files (default alpaca); the last turn is the reference answer")
    parser.add_argument("--report", type=Path, required=True,
                        help="new folder for report.md, report.json, chart.png (or see --replace)")
    parser.add_argument("--replace", action="store_true",
                        help="replace --report if it holds a report made by spanish_ft (never anything else)")
    parser.add_argument("--template", type=Path, help="instruction template (default: the adapters' own)")
    parser.add_argument("--max-new-tokens", type=int, default=96, help="answer length cap (default 96)")
    parser.add_argument("--limit", type=positive_rows, help="use only the first N rows of each split (quick checks)")
    parser.add_argument("--answer-rows", type=positive_rows,
                        help="generate answers (chrF, citations) on N rows per split spread evenly over it; "
                        "the losses still cover every row (default: answers on every row)")
    parser.add_argument("--bits", type=int, choices=(16, 4), default=16,
                        help="base weights on a GPU: 16 (bf16/fp16) or 4 (NF4, for a 7B on a 16 GB card); CPU: fp32")
    parser.add_argument("--samples", type=int, default=3, help="side-by-side sample answers per task")
    parser.add_argument("--allow-pickle", action="store_true", help="accept adapter_model.bin (runs pickle)")
    parser.add_argument("--retrieval", choices=RETRIEVAL_MODES, default="off",
                        help="Fuentes: the law articles retrieved for each question in its prompt, as the webui "
                             "extension puts them (on), not (off, default), or each variant both ways (both: "
                             "<name> and <name>+fuentes); scores add `grounded` and the retrieval's recall")
    parser.add_argument("--fuentes-k", type=int, default=3, help="articles per question with --retrieval (default 3)")


def positive_rows(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of rows, 1 or more")
    return int(text)


def run(args) -> int:
    settings = EvaluateSettings.from_args(args)
    given = [*settings.adapters, *settings.data, *([settings.template] if settings.template else []), settings.base]
    inputs = [path for path in map(find_bundle_file, map(str, given)) if path]
    check_output(settings.report, replace=settings.replace, what=REPORT, inputs=inputs)
    results = evaluate(settings)
    paths = write_report(results, settings.report, samples=settings.samples, replace=settings.replace)
    print(f"report written: {', '.join(str(p) for p in paths)}")
    return 0


def adapter_template(adapters: list[Path], template: Path | None) -> Path:
    """The template the adapters were trained with (all must agree), or the one given."""
    if template is not None:
        return template
    files = set()
    for adapter in adapters:
        name = (read_record(adapter) or TrainingRecord()).template_file
        if not name:
            raise ValueError(f"{adapter}: no template in its training record; pass --template FILE")
        files.add(name)
    if len(files) != 1:
        raise ValueError(f"the adapters were trained with different templates ({sorted(files)}); pass --template")
    name = files.pop()
    path = find_bundle_file(name)
    if path is None:
        raise FileNotFoundError(f"template {name} (from the adapters' records) not found; pass --template FILE")
    return path


def shown_path(path: str) -> str:
    """A data path for the report: relative to the bundle when inside it (no machine paths in reports)."""
    try:
        return str(Path(path).resolve().relative_to(BUNDLE_ROOT))
    except ValueError:
        return path


def load_task(path: str, tokenizer, template, limit: int | None, data_format: str = "alpaca",
              fuentes_k: int | None = None) -> TaskData:
    """Every row of one held-out split; DataError listing each bad row with its file and line.

    With `fuentes_k`, each row's last user turn carries the articles retrieved for it (as the
    extension's Fuentes builds it: no gold article put in), and `hits` keeps them per row.
    """
    source = read_source(path)
    questions, references, sources, encoded, problems, hits, asked = [], [], [], [], [], [], []
    answer_chars = 0
    for where, row in source.rows[:limit]:
        try:
            if isinstance(row, RowError):
                raise row
            conversation = to_conversation(row, data_format)
            if conversation[-1]["role"] != "assistant":
                raise RowError("the last turn must be the assistant's answer (the reference to score against)")
            found = None
            typed = conversation[-2]["content"] if len(conversation) > 1 else ""
            if fuentes_k is not None:
                conversation, found = with_fuentes(conversation, fuentes_k)
            encoded.append(encode_row(row, data_format, tokenizer, template,
                                      None if found is None else lambda _row, _turns, done=conversation: done))
            hits.append(found)
            asked.append(typed)
        except RowError as err:
            problems.append(f"{path}, {where}: {err}")
            continue
        questions.append(conversation[:-1])
        references.append(conversation[-1]["content"])
        answer_chars += sum(len(turn["content"]) for turn in conversation if turn["role"] == "assistant")
        sources.append(row.get("fuente"))
    if problems:
        raise DataError(list_problems(path, problems) + "\nfix these rows: evaluation scores every row")
    name = Path(path).parent.name or Path(path).stem
    return TaskData(name, path, questions, references, sources, encoded, answer_chars,
                    hits if fuentes_k is not None else None, asked)


def with_fuentes(conversation: list[dict], k: int) -> tuple[list[dict], list]:
    """The conversation with its last user turn as the extension's Fuentes builds it, and its articles."""
    from training.retrieval.fuentes import grounded_turn, sources_for

    ask = max(i for i, turn in enumerate(conversation) if turn["role"] == "user")
    question = conversation[ask]["content"]
    found, absent = sources_for(question, k)
    grounded = [dict(turn) for turn in conversation]
    grounded[ask]["content"] = grounded_turn(question, found, absent)
    return grounded, found


def names_its_article(question: str, fuente: dict) -> bool:
    """Whether the question itself names the article the answer must cite ("¿Qué dice el artículo 71 ...?")."""
    article = canonical_article(str(fuente.get("articulo", "")))
    return any(citation.articulo == article for citation in find_citations(question))


def citation_scores(texts: list[str], task: TaskData) -> dict:
    """Share of answers citing their row's norm and article: over all rows with a `fuente`, and split
    into rows whose question names the article (copying it is enough) and rows where the model must
    recall the article from the topic alone."""
    scores = {}
    groups = {"citation_accuracy": [], "citation_accuracy_named": [], "citation_accuracy_recall": []}
    asked = task.asked or [question[-1]["content"] for question in task.questions]
    for text, source, question in zip(texts, task.sources, asked, strict=True):
        if not source:
            continue
        hit = cites(text, source)
        groups["citation_accuracy"].append(hit)
        named = names_its_article(question, source)
        groups["citation_accuracy_named" if named else "citation_accuracy_recall"].append(hit)
    for key, hits in groups.items():
        if hits:
            scores[key] = sum(hits) / len(hits)
            scores[key.replace("accuracy", "rows")] = len(hits)
    return scores


def grounding_scores(texts: list[str], task: TaskData) -> dict:
    """With Fuentes: `grounded`, the share of answers that cite an article whose citations all name an
    article of their prompt, and `retrieval_recall`, the share of rows with a `fuente` whose prompt held it."""
    from training.retrieval.fuentes import citation_check

    checks = [citation_check(text, hits) for text, hits in zip(texts, task.hits, strict=True)]
    citing = [check for check in checks if check.verified or check.unverified]
    scores = {"citing_answers": len(citing)}
    if citing:
        scores["grounded"] = sum(not check.unverified for check in citing) / len(citing)
    held = [any(cites(f"artículo {h.articulo} de {h.norma}", source) for h in hits)
            for source, hits in zip(task.sources, task.hits, strict=True) if source]
    if held:
        scores["retrieval_recall"] = sum(held) / len(held)
    return scores


def load_base_tokenizer(base: str):
    try:
        tokenizer = AutoTokenizer.from_pretrained(base)
    except OSError as err:  # what transformers raises for a missing folder or an unknown hub id
        raise ValueError(f"--base {base}: not a model folder, and the hub did not provide it ({err})") from err
    choose_pad_token(tokenizer)
    return tokenizer


def load_model_with_adapters(base: str, adapters: list[Path], allow_pickle: bool):
    """The base model in full precision with every adapter loaded under its folder name.

    Every adapter passes the door (training/adapters/folder.py) before the base model is loaded.
    """
    opened = [open_adapter(adapter, allow_pickle) for adapter in adapters]
    model, names = load_model(base, opened)
    return model, load_base_tokenizer(base), names


def load_model(base: str, adapters: list[AdapterFolder], bits: int = 16):
    """(the base model with each adapter that passed the door, the adapters' names).

    On the CPU the model computes in fp32; on a GPU in its native 16-bit type, or in NF4 with
    `bits=4` (a 7B in 16 bits does not leave room for generation on a 16 GB card).
    """
    if not torch.cuda.is_available():
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    else:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        extra = {"quantization_config": BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)} if bits == 4 else {}
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, device_map={"": 0}, **extra)
    for adapter in adapters:
        model = load_peft_adapter(model, adapter, adapter.path.name)
    model.eval()
    return model, [adapter.path.name for adapter in adapters]


def answered_rows(total: int, wanted: int | None) -> list[int]:
    """The rows whose answers are generated: all, or `wanted` rows spread evenly over the split
    (0, total/wanted, 2*total/wanted, ...), the same on every run and for every model."""
    if wanted is None or wanted >= total:
        return list(range(total))
    return [i * total // wanted for i in range(wanted)]


def evaluate(settings: EvaluateSettings) -> dict:
    """Scores of every variant on every task, plus the answers, as one JSON-able dict.

    Losses cover every row (of the first `limit`); answers (chrF, citations, seconds per answer)
    the rows `answered_rows` picks when `answer_rows` is given. `bf16_loss`: the loss pass under
    bfloat16 autocast on a CPU that multiplies bf16 natively (the demo's choice; see loss_dtype).
    `retrieval` (off, on, both): the prompts with Fuentes (`fuentes_k` articles), without, or each
    variant both ways, the Fuentes one named `<variant>+fuentes`.
    """
    base, adapters, bits, bf16_loss = settings.base, settings.adapters, settings.bits, settings.bf16_loss
    retrieval, fuentes_k = settings.retrieval, settings.fuentes_k
    if retrieval not in RETRIEVAL_MODES:
        raise ValueError(f"retrieval={retrieval!r}: allowed values are {', '.join(RETRIEVAL_MODES)}")
    if isinstance(fuentes_k, bool) or not isinstance(fuentes_k, int) or not 1 <= fuentes_k <= 8:
        raise ValueError(f"--fuentes-k {fuentes_k!r}: a whole number from 1 to 8")
    opened = [open_adapter(adapter, settings.allow_pickle) for adapter in adapters]  # the door before anything loads
    template_obj = load_template(adapter_template(adapters, settings.template))
    # the data before the model: a bad row is reported in seconds, not after loading 7B weights
    tokenizer = load_base_tokenizer(base)
    ways = {"off": [None], "on": [fuentes_k], "both": [None, fuentes_k]}[retrieval]
    tasks = [[load_task(path, tokenizer, template_obj, settings.limit, settings.data_format, k) for k in ways]
             for path in settings.data]
    model, names = load_model(base, opened, bits)
    suffix = {None: "", fuentes_k: FUENTES if retrieval == "both" else ""}
    results = {"base_model": base, "template": template_obj.name, "template_sha256": template_obj.sha256,
               "variants": [f"{v}{suffix[k]}" for v in [BASE, *names] for k in ways],
               "retrieval": retrieval, "fuentes_k": fuentes_k if retrieval != "off" else None,
               "presets": adapter_presets(adapters), "hardware": describe_machine(),
               "base_weights": "nf4" if bits == 4 and torch.cuda.is_available() else str(
                   next(model.parameters()).dtype).removeprefix("torch."), "loss_dtype": loss_dtype(model, bf16_loss),
               "max_new_tokens": settings.max_new_tokens, "answer_rows": settings.answer_rows,
               "limit": settings.limit, "tasks": {}}
    for versions in tasks:
        picked = answered_rows(len(versions[0].references), settings.answer_rows)
        entries = [evaluate_task(model, tokenizer, template_obj, task, [BASE, *names], settings.max_new_tokens,
                                 picked, bf16_loss) for task in versions]
        entry = entries[0]
        for other, k in zip(entries[1:], ways[1:], strict=True):
            for key in ("scores", "answers"):
                entry[key] |= {f"{variant}{suffix[k]}": value for variant, value in other[key].items()}
        results["tasks"][versions[0].name] = entry
    return results


ROWS_PER_CALL = 8  # rows scored or answered per call: the progress bars move (and estimate the time left) this often


def task_rows(task: TaskData, picked: list[int]) -> TaskData:
    """The task's `picked` rows, for their answers (the loss rows `encoded` stay whole)."""
    return replace(task, questions=[task.questions[i] for i in picked],
                   references=[task.references[i] for i in picked], sources=[task.sources[i] for i in picked],
                   hits=task.hits and [task.hits[i] for i in picked],
                   asked=task.asked and [task.asked[i] for i in picked])


def evaluate_task(model, tokenizer, template, task: TaskData, variants: list[str], max_new_tokens: int,
                  picked: list[int], bf16_loss: bool = False) -> dict:
    """One split: the loss of every variant on every row, and answers on the `picked` rows."""
    answered = task_rows(task, picked)
    entry = {"path": shown_path(task.path), "data_sha256": sha256_file(task.path), "rows": len(task.references),
             "answered_rows": picked, "references": answered.references,
             "questions": [task.asked[i] for i in picked] if task.asked else [q[-1]["content"]
                                                                              for q in answered.questions],
             "scores": {}, "answers": {}}
    with tqdm(total=len(variants) * len(task.encoded), desc=f"loss {task.name}", unit="row") as progress:
        for variant in variants:
            with active_variant(model, None if variant == BASE else variant), loss_autocast(model, bf16_loss):
                entry["scores"][variant] = loss_in_steps(model, task.encoded, progress, task.answer_chars)
    with tqdm(total=len(variants) * len(picked), desc=f"answers {task.name}", unit="answer") as progress:
        for variant in variants:
            answers = []
            with active_variant(model, None if variant == BASE else variant):
                for start in range(0, len(picked), ROWS_PER_CALL):
                    chunk = answered.questions[start:start + ROWS_PER_CALL]
                    answers += generate_answers(model, tokenizer, template, chunk, max_new_tokens)
                    progress.update(len(chunk))
            texts = [a.text for a in answers]
            scores = entry["scores"][variant]
            scores["chrf"] = sacrebleu.corpus_chrf(texts, [answered.references]).score
            scores.update(citation_scores(texts, answered))
            if answered.hits is not None:
                scores.update(grounding_scores(texts, answered))
            scores["seconds_per_answer"] = sum(a.seconds for a in answers) / max(1, len(answers))
            entry["answers"][variant] = texts
    return entry


def loss_dtype(model, bf16_loss: bool) -> str:
    """What the loss pass computes in: with `bf16_loss`, bfloat16 autocast on a CPU that multiplies bf16
    natively (AVX512-BF16/AMX: 1.5x faster on the demo model, losses within 0.001 of fp32), else the
    weights' dtype."""
    weights = str(next(model.parameters()).dtype).removeprefix("torch.")
    native = model.device.type == "cpu" and cpu_has_native_bf16()
    return "bfloat16 autocast" if bf16_loss and native else weights


def loss_autocast(model, bf16_loss: bool):
    if loss_dtype(model, bf16_loss) == "bfloat16 autocast":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def loss_in_steps(model, rows: list, progress, answer_chars: int = 0) -> dict:
    """answer_loss over all rows, computed ROWS_PER_CALL rows at a time so that `progress` moves.

    The loss is a sum over answer tokens, so the order of the rows does not change it: batches of
    rows of similar length carry little padding (on 2 CPU cores this pass costs minutes).
    With `answer_chars` (the answers' characters), also `answer_loss_per_char`: the same nats divided
    by characters instead of tokens, comparable across tokenizers (Gemma's 262k-token vocabulary
    spends fewer tokens on a Spanish sentence than SmolLM2's 49k one, so its loss per token is higher).
    """
    by_length = sorted(rows, key=lambda row: len(row.input_ids))
    total = tokens = 0
    for start in range(0, len(by_length), ROWS_PER_CALL):
        part = answer_loss(model, by_length[start:start + ROWS_PER_CALL])
        total, tokens = total + part["answer_loss"] * part["answer_tokens"], tokens + part["answer_tokens"]
        progress.update(len(by_length[start:start + ROWS_PER_CALL]))
    loss = total / tokens
    scores = {"answer_loss": loss, "perplexity": math.exp(min(loss, 50.0)), "answer_tokens": tokens}
    if answer_chars:
        scores |= {"answer_loss_per_char": total / answer_chars, "answer_chars": answer_chars}
    return scores
