"""The evaluation report: report.md (tables + side-by-side samples), report.json, chart.png.

Essentials first: report.md and report.json are written together into a new report folder,
renamed into place at once (a folder of ours, marked with training/files.py's OUTPUT_MARKER, so
that `--replace` can recognise it later). The chart is an extra drawn afterwards: if it fails
(matplotlib missing or broken) the command warns and the report stays whole without it. A
report.json read back (`compare`, the pipeline's reuse) passes `read_report`: REPORT_SCHEMA, then
every variant scored and answered in every task, so another tool's file is refused by key path.
"""

from __future__ import annotations

from pathlib import Path

from training.files import atomic_output_dir, write_extra, write_json_atomic, write_text_atomic
from training.userdata import UserFileError, read_json

REPORT = "report folder"

METRICS = [("answer_loss", "answer loss ↓", "{:.3f}"), ("answer_loss_per_char", "loss per char ↓", "{:.3f}"),
           ("perplexity", "perplexity ↓", "{:.1f}"),
           ("chrf", "chrF ↑", "{:.1f}"), ("citation_accuracy", "citations ↑", "{:.0%}"),
           ("citation_accuracy_named", "citations, article named ↑", "{:.0%}"),
           ("citation_accuracy_recall", "citations, article recalled ↑", "{:.0%}"),
           ("grounded", "grounded ↑", "{:.0%}"), ("retrieval_recall", "gold in prompt", "{:.0%}"),
           ("seconds_per_answer", "s/answer", "{:.2f}")]

_TEXT = {"type": ["string", "null"]}
_TEXTS = {"type": "array", "items": {"type": "string"}}
# a score is printed with a float format: any JSON number a float can hold (NaN too: a diverged loss)
_SCORE = {"type": "number", "minimum": -1e308, "maximum": 1e308}
_TASK = {"type": "object", "required": ["path", "rows", "questions", "references", "scores"], "properties": {
    "path": {"type": "string"}, "data_sha256": _TEXT, "rows": {"type": "integer", "minimum": 0},
    "answered_rows": {"type": ["array", "null"], "items": {"type": "integer", "minimum": 0}},
    "questions": _TEXTS, "references": _TEXTS,
    "scores": {"type": "object", "additionalProperties": {"type": "object", "additionalProperties": _SCORE}},
    "answers": {"type": "object", "additionalProperties": {"type": "array", "items": _TEXT}}}}
# What `evaluate` writes and what report.md, the pipeline's reuse and `compare` read back (other keys are kept)
REPORT_SCHEMA = {"type": "object", "required": ["base_model", "template", "variants", "tasks"], "properties": {
    "base_model": {"type": "string"}, "template": {"type": "string"}, "template_sha256": _TEXT,
    "variants": {**_TEXTS, "minItems": 1, "uniqueItems": True},
    "presets": {"type": ["object", "null"], "additionalProperties": _TEXT},
    "hardware": {"type": ["object", "null"], "properties": {"device": _TEXT}},
    "tasks": {"type": "object", "additionalProperties": _TASK}, "inputs_sha256": _TEXT,
    "pipeline": {"type": ["object", "null"], "properties": {
        "family": _TEXT, "adapters": {"type": "object", "additionalProperties": {"type": "string"}}}}}}


def read_report(path: Path) -> dict:
    """An evaluation's report.json, checked against REPORT_SCHEMA and its own variants; UserFileError names the file."""
    results = read_json(path, REPORT_SCHEMA, "evaluation report (report.json)", finite=False)
    problems = [problem for name, task in results["tasks"].items() for problem in _task_gaps(name, task,
                                                                                              results["variants"])]
    if problems:
        raise UserFileError(path, "evaluation report (report.json)", problems)
    return results


def earlier_report(path: Path, say) -> dict:
    """The report.json an earlier run left in `path`, or {} when there is none or it is not usable (said why)."""
    if not path.is_file():
        return {}
    try:
        return read_report(path)
    except UserFileError as err:
        say(f"the earlier report is not reused: {err}")
        return {}


def _task_gaps(name: str, task: dict, variants: list[str]) -> list[str]:
    """What a task lacks for its variants: their scores, a reference and an answer for each question."""
    gaps = [f"tasks.{name}.scores: no scores for the variant {variant!r}" for variant in variants
            if variant not in task["scores"]]
    if len(task["references"]) < len(task["questions"]):
        gaps.append(f"tasks.{name}.references: {len(task['references'])} for {len(task['questions'])} questions")
    answers = task.get("answers", {})
    gaps += [f"tasks.{name}.answers: {len(answers.get(v, []))} answers of {v!r} for {len(task['questions'])} "
             "questions" for v in variants if len(answers.get(v, [])) < len(task["questions"])]
    return gaps


def scores_table(task: dict, variants: list[str]) -> str:
    shown = [m for m in METRICS if any(m[0] in task["scores"][v] for v in variants)]
    lines = ["| variant | " + " | ".join(label for _, label, _ in shown) + " |",
             "| --- |" + " ---: |" * len(shown)]
    for variant in variants:
        scores = task["scores"][variant]
        cells = [fmt.format(scores[key]) if key in scores else "" for key, _, fmt in shown]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def samples_section(task: dict, variants: list[str], samples: int) -> str:
    out = []
    for i in range(min(samples, len(task["questions"]))):
        out.append(f"**Pregunta:** {task['questions'][i]}\n\n**Referencia:** {task['references'][i]}\n")
        out += [f"- *{variant}*: {task['answers'][variant][i] or '(vacía)'}" for variant in variants]
        out.append("")
    return "\n".join(out)


def citation_note(scores: dict) -> str:
    """What the two citation columns count (empty when the task has no `fuente`)."""
    if "citation_rows" not in scores:
        return ""
    named, recall = scores.get("citation_rows_named", 0), scores.get("citation_rows_recall", 0)
    return (f"Citations: share of answers citing the row's norm and article; {named} questions name the "
            f"article (\"¿Qué dice el artículo 71 ...?\"), {recall} ask about a topic and the model must "
            "recall the article.\n")


def machine_summary(machine: dict) -> str:
    """One line for reports: 'NVIDIA A10G (22.0 GiB)' or 'Intel Xeon ..., 2 cores, 1 torch thread'."""
    if machine.get("device") == "cuda":
        return f"{machine.get('gpu')} ({machine.get('gpu_memory_gib')} GiB)"
    threads = machine.get("torch_threads")
    return f"{machine.get('cpu')}, {machine.get('cpu_cores')} cores, {threads} torch thread{'s' * (threads != 1)}"


def rows_note(task: dict) -> str:
    """'63 held-out rows' or '63 held-out rows for the loss, answers on 16 of them (spread evenly)'."""
    answered = task.get("answered_rows")
    if answered is None or len(answered) == task["rows"]:
        return f"{task['rows']} held-out rows"
    return f"{task['rows']} held-out rows for the loss, answers on {len(answered)} of them (spread evenly)"


def render_markdown(results: dict, samples: int = 3) -> str:
    variants = results["variants"]
    parts = [f"# Evaluation: `{results['base_model']}`\n",
             f"Template `{results['template']}`; greedy answers; loss on answer tokens only."
             + (f" Run on {machine_summary(results['hardware'])}." if results.get("hardware") else "") + "\n"]
    for name, task in results["tasks"].items():
        parts += [f"## {name} ({rows_note(task)}, `{task['path']}`)\n", scores_table(task, variants),
                  citation_note(task["scores"][variants[0]]),
                  "### Samples\n", samples_section(task, variants, samples)]
    return "\n".join(parts)


def write_chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants, tasks = results["variants"], list(results["tasks"])
    keys = [k for k in ("answer_loss", "chrf", "citation_accuracy")
            if any(k in results["tasks"][t]["scores"][variants[0]] for t in tasks)]
    figure, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4), squeeze=False)
    width = 0.8 / len(variants)
    for axis, key in zip(axes[0], keys, strict=True):
        for i, variant in enumerate(variants):
            values = [results["tasks"][t]["scores"][variant].get(key, 0) for t in tasks]
            axis.bar([x + i * width for x in range(len(tasks))], values, width, label=variant)
        axis.set_xticks([x + width * (len(variants) - 1) / 2 for x in range(len(tasks))], tasks)
        axis.set_title(dict((k, label) for k, label, _ in METRICS)[key])
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_report(results: dict, folder: Path, samples: int = 3, replace: bool = False) -> list[Path]:
    """Write the report folder (new, or ours with `replace`); returns the files written."""
    folder = Path(folder)
    with atomic_output_dir(folder, replace=replace, what=REPORT) as tmp:
        write_text_atomic(tmp / "report.md", render_markdown(results, samples))
        write_json_atomic(tmp / "report.json", results)
    paths = [folder / "report.md", folder / "report.json"]
    if write_extra(folder / "chart.png", lambda path: write_chart(results, path), "the chart"):
        paths.append(folder / "chart.png")
    return paths
