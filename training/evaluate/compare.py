"""`python -m training compare RUN_DIR... [--report DIR]`: several families' evaluations in one report.

Each RUN_DIR is a pipeline run folder (its report/report.json), a report folder, or a report.json
file (`python -m training evaluate`'s). Nothing is trained or loaded again. The report holds:
- per task, one table with a row per family x variant (answer loss, perplexity, chrF, citations,
  seconds per answer);
- the same held-out questions answered side by side by each family's fused adapter;
- the base model, template, preset and machine of each family;
- a chart (an extra: drawn after report.md and report.json, best effort).
Runs evaluated on different data are refused: a split's sha256, its rows, the rows answered or
the answer length differ. So are runs whose template is not their family's, and two runs of one
family with different templates. `--allow-mismatch` writes the report anyway, with every
difference listed at its top. --report must be new (or empty), or a report of ours with --replace.

    python -m training compare pipeline-mistral pipeline-llama2 pipeline-falcon --report comparison
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from training.evaluate.report import METRICS, REPORT, machine_summary, read_report, rows_note
from training.families import FAMILIES
from training.files import atomic_output_dir, check_output, write_extra, write_json_atomic, write_text_atomic

ROLES = ("base", "instrucciones", "leyes-ec", "fusionado")
DATA_KEYS = ("data_sha256", "rows", "answered_rows")  # per task: what makes two evaluations comparable


@dataclass(frozen=True)
class Run:
    label: str  # the family, or the base model's name for a report without one
    family: str | None
    source: Path  # the report.json read
    results: dict

    def role(self, variant: str) -> str:
        """base, instrucciones, leyes-ec or fusionado for a variant (adapter folder) of this run."""
        roles = {name: task for task, name in (self.results.get("pipeline") or {}).get("adapters", {}).items()}
        return roles.get(variant) or next((r for r in ROLES if variant == r or variant.endswith(f"-{r}")), variant)

    def variant_of(self, role: str) -> str | None:
        return next((v for v in self.results["variants"] if self.role(v) == role), None)


def add_arguments(parser) -> None:
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR",
                        help="pipeline run folders, report folders or report.json files (one per family)")
    parser.add_argument("--report", type=Path, default=Path("comparison"),
                        help="new folder for report.md, report.json, chart.png (default comparison)")
    parser.add_argument("--replace", action="store_true", help="replace --report if it holds a report of ours")
    parser.add_argument("--allow-mismatch", action="store_true",
                        help="compare runs evaluated on different data or templates (listed at the report's top)")
    parser.add_argument("--samples", type=int, default=3, help="questions answered side by side per task")


def run(args) -> int:
    check_output(args.report, replace=args.replace, what=REPORT, inputs=args.runs)
    runs = [load_run(path) for path in args.runs]
    paths = compare_runs(runs, args.report, args.allow_mismatch, args.samples, args.replace)
    print(f"report written: {', '.join(str(p) for p in paths)}")
    return 0


def report_file(path: Path) -> Path:
    for candidate in (path, path / "report.json", path / "report" / "report.json"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{path}: no report.json there nor in {path / 'report'}; give a pipeline run folder, "
                            "a report folder or a report.json (python -m training pipeline / evaluate writes them)")


def load_run(path: Path) -> Run:
    source = report_file(Path(path))
    results = read_report(source)
    family = (results.get("pipeline") or {}).get("family")
    return Run(family or Path(str(results.get("base_model", source.parent))).name, family, source, results)


def distinct_labels(runs: list[Run]) -> list[Run]:
    """Two runs of one family (two base models, say) get '-2', '-3' after the family's name."""
    seen: dict[str, int] = {}
    labelled = []
    for run in runs:
        seen[run.label] = seen.get(run.label, 0) + 1
        labelled.append(replace(run, label=f"{run.label}-{seen[run.label]}") if seen[run.label] > 1 else run)
    return labelled


def mismatches(runs: list[Run]) -> list[str]:
    """Every difference that makes the runs' scores incomparable, one line each."""
    found, first = [], runs[0]
    for run in runs[1:]:
        if set(run.results["tasks"]) != set(first.results["tasks"]):
            found.append(f"{run.label} evaluated tasks {sorted(run.results['tasks'])}, {first.label} "
                         f"{sorted(first.results['tasks'])}")
        for key in ("max_new_tokens", "base_weights", "loss_dtype"):  # answer cap; weights and loss dtypes
            if run.results.get(key) != first.results.get(key):
                found.append(f"{key}: {run.label} {run.results.get(key)}, {first.label} {first.results.get(key)}")
        for task in set(run.results["tasks"]) & set(first.results["tasks"]):
            for key in DATA_KEYS:
                mine, theirs = run.results["tasks"][task].get(key), first.results["tasks"][task].get(key)
                if mine is None:
                    found.append(f"{task}: {run.source} records no {key} (an older report): the data is unknown")
                elif mine != theirs:
                    found.append(f"{task}: {key} of {run.label} ({_short(mine)}) differs from {first.label}'s "
                                 f"({_short(theirs)})")
    templates: dict[str, set] = {}
    for run in runs:
        templates.setdefault(run.family or run.label, set()).add(run.results.get("template_sha256"))
        expected = FAMILIES[run.family].template_file if run.family in FAMILIES else None
        if expected and Path(expected).stem != run.results["template"]:
            found.append(f"{run.label} was evaluated with the template {run.results['template']}, not its family's "
                         f"{Path(expected).stem}")
    found += [f"the runs of {family} used different templates" for family, shas in templates.items() if len(shas) > 1]
    return found


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 24 else text[:21] + "..."


def compare_runs(runs: list[Run], folder: Path, allow_mismatch: bool, samples: int = 3,
                 replace: bool = False) -> list[Path]:
    """Refuse incomparable runs (unless allowed), then write report.md, report.json and the chart."""
    runs = distinct_labels(runs)
    problems = mismatches(runs)
    if problems and not allow_mismatch:
        listing = "\n".join(f"  - {problem}" for problem in problems)
        raise ValueError(f"these runs were not evaluated alike, so their scores do not compare:\n{listing}\n"
                         "evaluate them on the same splits and rows with their families' templates, or pass "
                         "--allow-mismatch to write the report with these differences listed")
    comparison = build_comparison(runs, problems, samples)
    with atomic_output_dir(folder, replace=replace, what=REPORT) as tmp:
        write_text_atomic(tmp / "report.md", render_comparison(comparison))
        write_json_atomic(tmp / "report.json", comparison)
    paths = [folder / "report.md", folder / "report.json"]
    if write_extra(folder / "chart.png", lambda path: write_comparison_chart(comparison, path), "the chart"):
        paths.append(folder / "chart.png")
    return paths


def build_comparison(runs: list[Run], problems: list[str], samples: int) -> dict:
    """The report as JSON: the runs, per task the rows (family x variant) and the side by side."""
    first = runs[0].results
    tasks = {}
    for name, task in first["tasks"].items():
        rows = [{"family": run.label, "variant": run.role(variant),
                 "scores": run.results["tasks"][name]["scores"][variant]}
                for run in runs if name in run.results["tasks"] for variant in run.results["variants"]]
        side = []
        for i, question in enumerate(task["questions"][:samples]):
            answers = {run.label: _fused_answer(run, name, i) for run in runs}
            side.append({"question": question, "reference": task["references"][i], "answers": answers})
        tasks[name] = {"path": task["path"], "rows": task["rows"], "answered_rows": task.get("answered_rows"),
                       "table": rows, "side_by_side": side}
    described = [{"family": run.label, "source": str(run.source), "base_model": run.results.get("base_model"),
                  "template": run.results["template"], "preset": _preset(run),
                  "hardware": run.results.get("hardware")} for run in runs]
    return {"runs": described, "mismatches": problems, "tasks": tasks}


def _fused_answer(run: Run, task: str, i: int) -> str | None:
    variant = run.variant_of("fusionado") or run.results["variants"][-1]
    answers = run.results["tasks"].get(task, {}).get("answers", {}).get(variant, [])
    return answers[i] if i < len(answers) else None


def _preset(run: Run) -> str | None:
    presets = run.results.get("presets") or {}
    return presets.get(run.variant_of("fusionado") or "") or next(iter(filter(None, presets.values())), None)


def render_comparison(comparison: dict) -> str:
    parts = ["# Comparison across families\n"]
    if comparison["mismatches"]:
        parts.append("**Warning: these runs were not evaluated alike (--allow-mismatch):**\n")
        parts += [f"- {problem}" for problem in comparison["mismatches"]] + [""]
    parts += ["| family | base model | template | preset | machine |", "| --- | --- | --- | --- | --- |"]
    parts += [f"| {r['family']} | `{r['base_model']}` | {r['template']} | {r['preset'] or '-'} | "
              f"{machine_summary(r['hardware']) if r['hardware'] else 'not recorded'} |" for r in comparison["runs"]]
    for name, task in comparison["tasks"].items():
        parts += ["", f"## {name} ({rows_note(task)}, `{task['path']}`)\n", family_table(task["table"]),
                  "### The same questions, each family's fused adapter\n"]
        for entry in task["side_by_side"]:
            parts.append(f"**Pregunta:** {entry['question']}\n\n**Referencia:** {entry['reference']}\n")
            parts += [f"- *{family}*: {answer or '(vacía)'}" for family, answer in entry["answers"].items()] + [""]
    return "\n".join(parts)


def family_table(rows: list[dict]) -> str:
    shown = [m for m in METRICS if any(m[0] in row["scores"] for row in rows)]
    lines = ["| family | variant | " + " | ".join(label for _, label, _ in shown) + " |",
             "| --- | --- |" + " ---: |" * len(shown)]
    for row in rows:
        cells = [fmt.format(row["scores"][key]) if key in row["scores"] else "" for key, _, fmt in shown]
        lines.append(f"| {row['family']} | {row['variant']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_comparison_chart(comparison: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(comparison["tasks"])
    keys = ("answer_loss", "chrf")
    figure, axes = plt.subplots(len(tasks), len(keys), figsize=(6 * len(keys), 3.5 * len(tasks)), squeeze=False)
    families = [run["family"] for run in comparison["runs"]]
    width = 0.8 / len(families)
    for row_axes, task in zip(axes, tasks, strict=True):
        table = comparison["tasks"][task]["table"]
        variants = list(dict.fromkeys(row["variant"] for row in table))
        for axis, key in zip(row_axes, keys, strict=True):
            for i, family in enumerate(families):
                values = {row["variant"]: row["scores"].get(key, 0) for row in table if row["family"] == family}
                axis.bar([x + i * width for x in range(len(variants))], [values.get(v, 0) for v in variants],
                         width, label=family)
            axis.set_xticks([x + width * (len(families) - 1) / 2 for x in range(len(variants))], variants)
            axis.set_title(f"{task}: {dict((k, label) for k, label, _ in METRICS)[key]}")
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
