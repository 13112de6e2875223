"""`python -m training compare`: several families' evaluation reports in one, without a model.

Reports are built here as the pipeline writes them (report.json); the end-to-end run of the three
tiny families is in tests/test_pipeline.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.__main__ import main
from training.evaluate.evaluate import answered_rows
from training.families import FAMILIES

TASKS = ("instrucciones", "leyes-ec", "fusionado")
HARDWARE = {"device": "cuda", "gpu": "NVIDIA A10G", "gpu_memory_gib": 22.0, "cpu": "x", "cpu_cores": 8,
            "torch_threads": 8, "ram_gib": 31.0, "torch": "2.13.0"}


def make_report(family: str, data_sha256: str = "a" * 64, template: str | None = None, loss: float = 2.0) -> dict:
    variants = ["base", *(f"{family}-{task}" for task in TASKS)]
    tasks = {}
    for task in ("instrucciones-es", "leyes-ec"):
        scores = {v: {"answer_loss": loss - i * 0.1, "perplexity": 7.0, "chrf": 20.0 + i,
                      "seconds_per_answer": 0.5, **({"citation_accuracy": 0.25 * i} if task == "leyes-ec" else {})}
                  for i, v in enumerate(variants)}
        tasks[task] = {"path": f"training/datasets/{task}/test.jsonl", "data_sha256": data_sha256, "rows": 10,
                       "answered_rows": [0, 5],
                       "questions": ["¿Cuál es la capital de Ecuador?", "¿Qué dice el art. 71?"],
                       "references": ["Quito.", "La naturaleza."], "scores": scores,
                       "answers": {v: [f"{v} dice Quito", f"{v} dice 71"] for v in variants}}
    return {"base_model": f"hub/{family}-7b", "template": template or Path(FAMILIES[family].template_file).stem,
            "template_sha256": family, "variants": variants, "hardware": HARDWARE, "max_new_tokens": 96,
            "presets": {v: FAMILIES[family].preset for v in variants[1:]}, "tasks": tasks,
            "pipeline": {"family": family, "adapters": {t: f"{family}-{t}" for t in TASKS}}}


def write_run(root: Path, report: dict) -> Path:
    folder = root / report["pipeline"]["family"]
    (folder / "report").mkdir(parents=True)
    (folder / "report" / "report.json").write_text(json.dumps(report), encoding="utf-8")
    return folder


def test_one_table_per_task_with_a_row_per_family_and_variant_and_the_fused_answers_side_by_side(tmp_path):
    runs = [write_run(tmp_path, make_report(family)) for family in ("mistral", "llama2", "falcon")]
    assert main(["compare", *map(str, runs), "--report", str(tmp_path / "out")]) == 0
    report = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    saved = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    for task in ("instrucciones-es", "leyes-ec"):
        table = saved["tasks"][task]["table"]
        assert [(row["family"], row["variant"]) for row in table] == [
            (f, v) for f in ("mistral", "llama2", "falcon") for v in ("base", "instrucciones", "leyes-ec", "fusionado")]
        assert saved["tasks"][task]["side_by_side"][0]["answers"] == {
            f: f"{f}-fusionado dice Quito" for f in ("mistral", "llama2", "falcon")}
    assert "| falcon | leyes-ec | 1.800 | 7.0 | 22.0 | 50% | 0.50 |" in report
    assert "- *llama2*: llama2-fusionado dice Quito" in report
    assert "| mistral | `hub/mistral-7b` | spanish_ft-Mistral | spanish_ft-Mistral | NVIDIA A10G (22.0 GiB) |" in report
    assert "10 held-out rows for the loss, answers on 2 of them" in report


def test_runs_evaluated_on_different_data_are_refused_unless_allowed(tmp_path, capsys):
    runs = [write_run(tmp_path, make_report("mistral")), write_run(tmp_path, make_report("falcon", "b" * 64))]
    out = tmp_path / "out"
    assert main(["compare", *map(str, runs), "--report", str(out)]) == 1
    error = capsys.readouterr().err
    assert "b" * 64 not in error  # a sha256 is shortened in the message
    assert "leyes-ec: data_sha256 of falcon" in error and "--allow-mismatch" in error
    assert not out.exists()
    assert main(["compare", *map(str, runs), "--report", str(out), "--allow-mismatch"]) == 0
    assert "**Warning: these runs were not evaluated alike" in (out / "report.md").read_text(encoding="utf-8")


def test_a_run_evaluated_with_another_familys_template_is_refused(tmp_path, capsys):
    runs = [write_run(tmp_path, make_report("mistral")),
            write_run(tmp_path, make_report("falcon", template="spanish_ft-ChatML"))]
    assert main(["compare", *map(str, runs), "--report", str(tmp_path / "out")]) == 1
    assert "falcon was evaluated with the template spanish_ft-ChatML, not its family's spanish_ft-Falcon" in (
        capsys.readouterr().err)


def test_the_report_folder_is_checked_before_any_run_is_read(tmp_path, capsys):
    theirs = tmp_path / "thesis"
    theirs.mkdir()
    (theirs / "chapter1.tex").write_text("mine", encoding="utf-8")
    assert main(["compare", str(tmp_path / "missing-run"), "--report", str(theirs)]) == 1
    assert "holds files spanish_ft did not make" in capsys.readouterr().err
    assert [p.name for p in theirs.iterdir()] == ["chapter1.tex"]


@pytest.mark.parametrize(("total", "wanted", "picked"), [(63, 16, [i * 63 // 16 for i in range(16)]),
                                                          (10, None, list(range(10))), (3, 16, [0, 1, 2])])
def test_answers_are_generated_on_rows_spread_evenly_over_the_split(total, wanted, picked):
    assert answered_rows(total, wanted) == picked
    assert answered_rows(79, 16)[-1] >= 70  # the subset reaches the end of the split, not only its start


def test_two_runs_of_one_family_keep_apart(tmp_path):
    first = write_run(tmp_path / "a", make_report("mistral"))
    second = write_run(tmp_path / "b", make_report("mistral", loss=3.0))
    assert main(["compare", str(first), str(second), "--report", str(tmp_path / "out")]) == 0
    saved = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert [run["family"] for run in saved["runs"]] == ["mistral", "mistral-2"]
    assert set(saved["tasks"]["leyes-ec"]["side_by_side"][0]["answers"]) == {"mistral", "mistral-2"}
