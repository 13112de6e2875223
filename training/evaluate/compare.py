"""`python -m training evaluate`: the base model and its adapters, side by side, on held-out data.

For every held-out split (a task) and every variant (the base model with adapters disabled,
then each adapter): the answer loss and perplexity (answer tokens only, prompts rendered by
the adapters' instruction template exactly as the webui renders them), greedy answers scored
with chrF against the references, and for rows that carry a `fuente` (the leyes-ec task) the
share of answers citing the right norm and article. Rows are alpaca by default; with
`--format messages|sharegpt` each conversation's last (assistant) turn is the reference; a bad
row stops the evaluation before the model loads, named with its file and line. Writes
report.md, report.json and a bar chart to --report: a new folder, or a report folder of ours
with --replace, checked before any model is loaded (training/files.py: check_output). Every adapter
passes the door of training/adapters/folder.py first; PEFT gets its checked config, never the file.

    python -m training evaluate --base models/smollm2-135m \\
        --adapters loras/smollm2-135m-instrucciones loras/smollm2-135m-leyes-ec \\
        --data training/datasets/instrucciones-es/test.jsonl training/datasets/leyes-ec/test.jsonl --report report/
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import sacrebleu
import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from training.adapters.folder import AdapterFolder, load_peft_adapter, open_adapter
from training.adapters.record import TrainingRecord, read_record
from training.data.conversations import encode_row, to_conversation
from training.data.prepare import list_problems
from training.data.read import DataError, RowError, read_source
from training.datasets.citations import canonical_article, cites, find_citations
from training.evaluate.generate import active_variant, answer_loss, generate_answers
from training.evaluate.report import REPORT, write_report
from training.files import BUNDLE_ROOT, check_output, find_bundle_file
from training.model.load import choose_pad_token
from training.templates import load_template

BASE = "base"
SCORED_FORMATS = ("alpaca", "messages", "sharegpt")  # formats with a reference answer


@dataclass(frozen=True)
class TaskData:
    name: str  # the split's folder name, e.g. "leyes-ec"
    path: str
    questions: list[list[dict]]  # conversation up to its last answer
    references: list[str]
    sources: list[dict | None]  # the `fuente` of each row, if any
    encoded: list  # training.data.tokens.Encoded rows for the loss


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
    parser.add_argument("--limit", type=_positive, help="use only the first N rows of each split (quick checks)")
    parser.add_argument("--samples", type=int, default=3, help="side-by-side sample answers per task")
    parser.add_argument("--allow-pickle", action="store_true", help="accept adapter_model.bin (runs pickle)")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of rows, 1 or more")
    return int(text)


def run(args) -> int:
    given = [*args.adapters, *args.data, *([args.template] if args.template else []), args.base]
    inputs = [path for path in map(find_bundle_file, map(str, given)) if path]
    check_output(args.report, replace=args.replace, what=REPORT, inputs=inputs)
    results = evaluate(args.base, args.adapters, args.data, template=args.template,
                       max_new_tokens=args.max_new_tokens, limit=args.limit, allow_pickle=args.allow_pickle,
                       data_format=args.format)
    paths = write_report(results, args.report, samples=args.samples, replace=args.replace)
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


def load_task(path: str, tokenizer, template, limit: int | None, data_format: str = "alpaca") -> TaskData:
    """Every row of one held-out split; DataError listing each bad row with its file and line."""
    source = read_source(path)
    questions, references, sources, encoded, problems = [], [], [], [], []
    for where, row in source.rows[:limit]:
        try:
            if isinstance(row, RowError):
                raise row
            conversation = to_conversation(row, data_format)
            if conversation[-1]["role"] != "assistant":
                raise RowError("the last turn must be the assistant's answer (the reference to score against)")
            encoded.append(encode_row(row, data_format, tokenizer, template))
        except RowError as err:
            problems.append(f"{path}, {where}: {err}")
            continue
        questions.append(conversation[:-1])
        references.append(conversation[-1]["content"])
        sources.append(row.get("fuente"))
    if problems:
        raise DataError(list_problems(path, problems) + "\nfix these rows: evaluation scores every row")
    name = Path(path).parent.name or Path(path).stem
    return TaskData(name, path, questions, references, sources, encoded)


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
    for text, source, question in zip(texts, task.sources, task.questions):
        if not source:
            continue
        hit = cites(text, source)
        groups["citation_accuracy"].append(hit)
        named = names_its_article(question[-1]["content"], source)
        groups["citation_accuracy_named" if named else "citation_accuracy_recall"].append(hit)
    for key, hits in groups.items():
        if hits:
            scores[key] = sum(hits) / len(hits)
            scores[key.replace("accuracy", "rows")] = len(hits)
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


def load_model(base: str, adapters: list[AdapterFolder]):
    """(the base model in full precision with each adapter that passed the door, the adapters' names)."""
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    for adapter in adapters:
        model = load_peft_adapter(model, adapter, adapter.path.name)
    model.eval()
    return model, [adapter.path.name for adapter in adapters]


def evaluate(base: str, adapters: list[Path], data: list[str], template: Path | None = None,
             max_new_tokens: int = 96, limit: int | None = None, allow_pickle: bool = False,
             data_format: str = "alpaca") -> dict:
    """Scores of every variant on every task, plus the answers, as one JSON-able dict."""
    opened = [open_adapter(adapter, allow_pickle) for adapter in adapters]  # the door before anything loads
    template_obj = load_template(adapter_template(adapters, template))
    # the data before the model: a bad row is reported in seconds, not after loading 7B weights
    tokenizer = load_base_tokenizer(base)
    tasks = [load_task(path, tokenizer, template_obj, limit, data_format) for path in data]
    model, names = load_model(base, opened)
    results = {"base_model": base, "template": template_obj.name, "variants": [BASE, *names], "tasks": {}}
    for task in tasks:
        entry = {"path": shown_path(task.path), "rows": len(task.references), "references": task.references,
                 "questions": [q[-1]["content"] for q in task.questions], "scores": {}, "answers": {}}
        for variant in tqdm([BASE, *names], desc=f"evaluate {task.name}", unit="variant"):
            with active_variant(model, None if variant == BASE else variant):
                scores = answer_loss(model, task.encoded)
                answers = generate_answers(model, tokenizer, template_obj, task.questions, max_new_tokens)
            texts = [a.text for a in answers]
            scores["chrf"] = sacrebleu.corpus_chrf(texts, [task.references]).score
            scores.update(citation_scores(texts, task))
            scores["seconds_per_answer"] = sum(a.seconds for a in answers) / max(1, len(answers))
            entry["scores"][variant], entry["answers"][variant] = scores, texts
        results["tasks"][task.name] = entry
    return results
