"""The evaluation report: report.md (tables + side-by-side samples), report.json, chart.png.

Essentials first: report.md and report.json are written together into a new report folder,
renamed into place at once (a folder of ours, marked with training/files.py's OUTPUT_MARKER, so
that `--replace` can recognise it later). The chart is an extra drawn afterwards: if it fails
(matplotlib missing or broken) the command warns and the report stays whole without it.
"""

from __future__ import annotations

from pathlib import Path

from training.files import atomic_output_dir, write_extra, write_json_atomic, write_text_atomic

REPORT = "report folder"

METRICS = [("answer_loss", "answer loss ↓", "{:.3f}"), ("perplexity", "perplexity ↓", "{:.1f}"),
           ("chrf", "chrF ↑", "{:.1f}"), ("citation_accuracy", "citations ↑", "{:.0%}"),
           ("citation_accuracy_named", "citations, article named ↑", "{:.0%}"),
           ("citation_accuracy_recall", "citations, article recalled ↑", "{:.0%}"),
           ("seconds_per_answer", "s/answer", "{:.2f}")]


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
