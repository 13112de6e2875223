"""The pipeline on tiny models of all three architectures, each with its family's recipes and template:
both adapters trained in order, fused, evaluated; a second run reuses every step; an interrupted
training continues from its checkpoint; the plan is printed before anything loads and refused when
memory does not fit; the three runs compare in one report."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import pytest
from test_train import InterruptAfterSave

from training import config
from training.__main__ import main
from training.adapters.record import read_record
from training.evaluate.compare import compare_runs, load_run
from training.evaluate.evaluate import EvaluateSettings
from training.families import FAMILIES
from training.pipeline import plan
from training.pipeline.pipeline import PipelineSettings, family_spec, run_pipeline

TINY_RUN = ["training.max_steps=2", "training.batch_size=2", "training.eval_steps=1", "training.save_steps=1",
            "training.logging_steps=1", "dataset.max_tokens=400", "lora.rank=4", "training.report_to=none"]
QUICK_EVAL = EvaluateSettings(max_new_tokens=4, limit=3, answer_rows=2)


def tiny_settings(family: str, base, out, *overrides: str, **fields) -> PipelineSettings:
    return PipelineSettings(spec=family_spec(family), out=out, base_model=str(base),
                            recipe_overrides=[*TINY_RUN, *overrides], evaluation=QUICK_EVAL, **fields)


RECIPE_READS: dict[str, Counter] = {}  # family: how often its run parsed each recipe file (family_runs)


@pytest.fixture(scope="module")
def family_runs(tiny_model_dirs, tmp_path_factory):
    """{family: (settings, results)} of one pipeline run per family on its tiny model; RECIPE_READS counts
    the recipe files each run parsed."""
    root = tmp_path_factory.mktemp("pipeline")
    runs = {}
    for family in ("mistral", "llama2", "falcon"):
        settings = tiny_settings(family, tiny_model_dirs[family], root / family)
        reads = RECIPE_READS.setdefault(family, Counter())
        with pytest.MonkeyPatch.context() as patch:
            def counted(path, what, real=config.parse_yaml, reads=reads):
                reads[Path(path).name] += what == "recipe"
                return real(path, what)

            patch.setattr(config, "parse_yaml", counted)
            runs[family] = settings, run_pipeline(settings)
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("family", ["mistral", "llama2", "falcon"])
def test_one_command_trains_stacks_fuses_and_evaluates_each_family(family, family_runs):
    settings, results = family_runs[family]
    loras = settings.out / "loras"
    leyes = read_record(loras / f"{family}-leyes-ec").data
    assert leyes["stacked_on"]["path"] == str(loras / f"{family}-instrucciones")
    assert leyes["template"]["file"] == FAMILIES[family].template_file
    fused = read_record(loras / f"{family}-fusionado").data
    assert fused["kind"] == "fused" and [s["name"] for s in fused["sources"]] == [
        f"{family}-instrucciones", f"{family}-leyes-ec"]
    assert results["variants"] == ["base", f"{family}-instrucciones", f"{family}-leyes-ec", f"{family}-fusionado"]
    saved = json.loads((settings.out / "report" / "report.json").read_text(encoding="utf-8"))
    assert saved["pipeline"]["family"] == family and saved["hardware"]["device"] == "cpu"
    assert saved["presets"][f"{family}-fusionado"] == FAMILIES[family].preset
    leyes_task = saved["tasks"]["leyes-ec"]
    assert leyes_task["rows"] == 3 and leyes_task["answered_rows"] == [0, 1]  # losses on 3, answers on 2
    assert len(leyes_task["data_sha256"]) == 64 and len(leyes_task["answers"]["base"]) == 2


@pytest.mark.slow
@pytest.mark.slow
def test_a_run_parses_each_recipe_once(family_runs):
    """Plan, base model, both trainings: every config of a run is built from one reading of each recipe."""
    for family, (settings, _) in family_runs.items():
        assert RECIPE_READS[family] == Counter(Path(recipe).name for recipe in settings.spec.recipes.values())


def test_a_second_run_reuses_every_step(family_runs, capsys):
    settings, _ = family_runs["falcon"]
    capsys.readouterr()
    run_pipeline(settings)
    output = capsys.readouterr().out
    assert output.count("reused") == 4, output  # two adapters, the fused one, the evaluation
    assert "with QLoRA" not in output and "fused (exact" not in output  # nothing trained or fused again


@pytest.mark.slow
def test_the_three_runs_compare_in_one_report(family_runs, tmp_path):
    runs = [load_run(settings.out) for settings, _ in family_runs.values()]
    paths = compare_runs(runs, tmp_path / "comparison", allow_mismatch=False, samples=2)
    report = (tmp_path / "comparison" / "report.md").read_text(encoding="utf-8")
    for family in ("mistral", "llama2", "falcon"):
        assert f"| {family} | fusionado |" in report and f"- *{family}*:" in report
        assert FAMILIES[family].preset in report
    assert [p.name for p in paths] == ["report.md", "report.json", "chart.png"]


@pytest.mark.slow
def test_an_interrupted_training_continues_from_its_checkpoint(tiny_model_dirs, tmp_path, monkeypatch, capsys):
    import training.pipeline.steps as steps

    real_train = steps.train
    monkeypatch.setattr(steps, "train", lambda config, replace: real_train(
        config, callbacks=[InterruptAfterSave(2)], replace=replace))
    settings = tiny_settings("llama2", tiny_model_dirs["llama2"], tmp_path / "run", "training.max_steps=3")
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(settings)
    work = settings.out / "loras" / "llama2-instrucciones.work"
    assert (work / "checkpoint-2").is_dir() and not (settings.out / "loras" / "llama2-instrucciones").exists()

    monkeypatch.setattr(steps, "train", real_train)
    run_pipeline(settings)
    assert "continuing the interrupted training of llama2-instrucciones" in capsys.readouterr().out
    metrics = read_record(settings.out / "loras" / "llama2-instrucciones").data["metrics"]
    assert metrics["resumed_from"] == "checkpoint-2" and metrics["steps"] == 3


def test_the_plan_comes_first_and_a_plan_that_does_not_fit_is_refused(tiny_model_dirs, tmp_path, monkeypatch, capsys):
    import training.pipeline.pipeline as pipeline_run

    tiny_cpu = plan.Device("cpu", "a small CPU", 1 << 20, 1 << 20)
    monkeypatch.setattr(plan, "detect_device", lambda gpu_memory_gb=None: tiny_cpu)
    monkeypatch.setattr(pipeline_run, "train_adapter", lambda *a, **k: pytest.fail("trained before the plan"))
    settings = tiny_settings("mistral", tiny_model_dirs["mistral"], tmp_path / "run")
    with pytest.raises(ValueError, match=r"step 'train instrucciones' needs about .* GiB on cpu \(a small CPU\), "
                                         r"0\.0 GiB available.*training\.batch_size.*--force to"):
        run_pipeline(settings)
    printed = capsys.readouterr().out
    assert "plan for mistral on cpu" in printed and "train leyes-ec" in printed and "estimated total" in printed
    assert not settings.out.exists()  # nothing written

    assert run_pipeline(dataclasses.replace(settings, force=True, plan_only=True)) is None
    assert "going on anyway (--force)" in capsys.readouterr().out


def test_the_old_flag_spelling_still_works_and_says_it_is_deprecated(capsys, tmp_path):
    """`--force-memory` (before issue 27) is `--force` for one more release, with a warning."""
    from training.__main__ import parse_args

    args = parse_args(["pipeline", "--family", "falcon", "--force-memory", "--out", str(tmp_path / "f")])
    assert PipelineSettings.from_args(args).force is True
    warned = capsys.readouterr().err
    assert "--force-memory is deprecated" in warned and "use --force" in warned
    args = parse_args(["pipeline", "--family", "falcon", "--force"])
    assert PipelineSettings.from_args(args).force is True and "deprecated" not in capsys.readouterr().err


def test_plans_for_the_7b_families_on_16_and_24_gb_gpus(capsys, tmp_path):
    assert main(["pipeline", "--family", "falcon", "--plan-only", "--gpu-memory", "24",
                 "--out", str(tmp_path / "f")]) == 0
    printed = capsys.readouterr().out
    assert "download tiiuae/falcon-7b" in printed and "assumed for a 24 GB class" in printed
    train_line = next(line for line in printed.splitlines() if "train instrucciones" in line)
    assert 5 < float(train_line.split("GiB")[0].split()[-1]) < 12  # QLoRA of a 7B: single-digit GiB
    # a 7B in 16 bits leaves no room for the evaluation on a 16 GB card: refused, with the fix named
    assert main(["pipeline", "--family", "mistral", "--plan-only", "--gpu-memory", "16"]) == 1
    assert "step 'evaluate' needs about" in capsys.readouterr().err
    assert main(["pipeline", "--family", "mistral", "--plan-only", "--gpu-memory", "16", "--eval-bits", "4"]) == 0
    assert not (tmp_path / "f").exists()


def test_cpu_time_comes_from_the_nearest_measured_model_and_the_estimate_uses_the_trainers_dtype(monkeypatch):
    cpu = plan.Device("cpu", "CPU", 8 << 30, 8 << 30)
    gemma = plan.throughput(268_098_176, cpu)
    assert gemma[0] == 120.0 and gemma[1].startswith("measured") and "Gemma-3-270M" in gemma[1]
    assert plan.throughput(134_515_008, cpu)[1].startswith("measured") and "SmolLM2" in plan.throughput(
        134_515_008, cpu)[1]
    rate, how = plan.throughput(1_000_000_000, cpu)  # a 1B model: scaled from the nearer reference, Gemma's
    assert rate == pytest.approx(120.0 * 268_098_176 / 1e9) and "Gemma-3-270M" in how and "scaled" in how
    # `auto` is what the trainer computes in: bf16 on a CPU with native bf16, else fp32; a GPU resolves its own
    monkeypatch.setattr(plan, "cpu_has_native_bf16", lambda: True)
    assert plan.training_compute("auto", cpu) == "bfloat16"
    monkeypatch.setattr(plan, "cpu_has_native_bf16", lambda: False)
    assert plan.training_compute("auto", cpu) == "float32" and plan.training_compute("float16", cpu) == "float16"
    assert plan.training_compute("auto", plan.Device("cuda", "GPU", 1, 1)) == "auto"
