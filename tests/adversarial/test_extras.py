"""Essentials before extras: a finished adapter or report survives a broken plotting library, and a
failure while writing the essentials leaves the previous artefact whole, with no half-written one."""

from __future__ import annotations

import json

import pytest
from harness import (
    FAST,
    ROOT,
    assert_refused,
    cli_env,
    fingerprint,
    make_adapter,
    run_cli,
    user_folder,
    write_recipe,
    write_rows,
)

from training.__main__ import main

BROKEN = 'raise RuntimeError("matplotlib is broken here (a test stand-in)")\n'


@pytest.fixture
def broken_matplotlib(tmp_path_factory) -> dict:
    """An environment whose `import matplotlib` fails, as with a broken or half-installed matplotlib."""
    fake = tmp_path_factory.mktemp("fake-site") / "matplotlib"
    fake.mkdir()
    (fake / "__init__.py").write_text(BROKEN, encoding="utf-8")
    return cli_env(PYTHONPATH=f"{fake.parent}:{ROOT}")


def test_train_keeps_the_adapter_when_the_loss_plot_fails(tiny_model_dirs, tmp_path, broken_matplotlib):
    thesis = user_folder(tmp_path / "tesis")
    before = fingerprint(thesis)
    out = tmp_path / "adapter"
    rows = write_rows(tmp_path / "rows.jsonl", 8)
    recipe = write_recipe(tmp_path / "tiny.yaml", tiny_model_dirs["llama2"], rows, out)
    result = run_cli("train", recipe, *FAST, "training.max_steps=2", "training.save_steps=1", env=broken_matplotlib)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "warning: the loss plot was not written (RuntimeError: matplotlib is broken here" in result.stderr
    assert str(out) in result.stderr and "Traceback" not in result.stderr
    assert {p.name for p in out.iterdir()} == {"adapter_config.json", "adapter_model.safetensors",
                                              "spanish_ft_record.json", "README.md"}
    assert json.loads((out / "spanish_ft_record.json").read_text())["metrics"]["steps"] == 2
    assert not list((tmp_path / "adapter.work").glob("checkpoint-*"))  # the run is over: no rerun refused
    assert fingerprint(thesis) == before


def test_evaluate_keeps_the_report_when_the_chart_fails(tiny_model_dirs, tmp_path, broken_matplotlib):
    thesis = user_folder(tmp_path / "tesis")
    before = fingerprint(thesis)
    base = tiny_model_dirs["llama2"]
    adapter = make_adapter(base, tmp_path / "a")
    report = tmp_path / "informe"
    rows = write_rows(tmp_path / "t" / "test.jsonl")
    result = run_cli("evaluate", "--base", base, "--adapters", adapter, "--data", rows, "--report", report,
                     "--max-new-tokens", "2", env=broken_matplotlib)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "warning: the chart was not written (RuntimeError" in result.stderr and str(report) in result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads((report / "report.json").read_text())["variants"] == ["base", "a"]
    assert "# Evaluation" in (report / "report.md").read_text()
    assert not (report / "chart.png").exists()
    assert fingerprint(thesis) == before


@pytest.mark.parametrize("command", ["fuse", "evaluate"])
def test_a_failure_in_the_essentials_leaves_the_previous_output_whole(command, tiny_model_dirs, tmp_path, capsys,
                                                                        monkeypatch):
    base = tiny_model_dirs["llama2"]
    a, b = make_adapter(base, tmp_path / "in" / "a", 1), make_adapter(base, tmp_path / "in" / "b", 2)
    rows = write_rows(tmp_path / "in" / "test.jsonl")
    fuse_args = ["fuse", str(a), str(b), "--out"]
    eval_args = ["evaluate", "--base", str(base), "--adapters", str(a), "--data", str(rows), "--max-new-tokens", "1",
                 "--report"]
    args = fuse_args if command == "fuse" else eval_args
    out = tmp_path / "salida"
    assert main([*args, str(out)]) == 0
    before = fingerprint(tmp_path)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(out))

    import training.adapters.fuse as fuse
    import training.evaluate.report as report

    monkeypatch.setattr(*(fuse, "write_card") if command == "fuse" else (report, "write_json_atomic"), disk_full)
    code = main([*args, str(out), "--replace"])
    assert_refused(code, capsys.readouterr().err, out)
    assert fingerprint(tmp_path) == before  # the old output whole, no temporary folder left

