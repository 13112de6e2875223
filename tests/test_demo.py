"""The demo pipeline end to end on a tiny random model: QLoRA training of both adapters from the
demo recipes, exact fusion, evaluation report, side-by-side answers, install into a webui.
(The full demo on Gemma-3-270M is a documented command, not a test.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from training.adapters.record import TrainingRecord, read_record
from training.demo.demo import DEMO_MODEL, DEMO_SPEC, DemoSettings, run_demo

REPO = Path(__file__).resolve().parents[1]

TINY_RUN = ["training.max_steps=2", "training.batch_size=2", "training.eval_steps=1", "training.save_steps=1",
            "training.logging_steps=1", "dataset.max_tokens=400", "lora.rank=4", "training.report_to=none"]


def make_webui_skeleton(path: Path) -> Path:
    """The files by which install.py recognises a webui (2025 layout), nothing else."""
    (path / "modules").mkdir(parents=True, exist_ok=True)
    for sub in ("instruction-templates", "presets", "loras", "models", "extensions"):
        (path / "user_data" / sub).mkdir(parents=True, exist_ok=True)
    server = path / "server.py"
    if not server.exists():
        server.write_text("# stand-in for text-generation-webui's server.py (spanish_ft demo)\n", encoding="utf-8")
    return path


@pytest.mark.slow
def test_demo_pipeline_trains_fuses_evaluates_and_installs(tiny_model_dirs, tmp_path, capsys):
    webui = make_webui_skeleton(tmp_path / "webui")
    settings = DemoSettings(out=tmp_path / "demo", retrain=True, webui=webui, base_model=tiny_model_dirs["gemma3"],
                            recipe_overrides=TINY_RUN, eval_limit=3, max_new_tokens=4)
    results = run_demo(settings)

    loras = tmp_path / "demo" / "loras"
    fused = read_record(loras / f"{DEMO_MODEL}-fusionado").data
    assert fused["kind"] == "fused"
    assert [s["name"] for s in fused["sources"]] == [f"{DEMO_MODEL}-instrucciones", f"{DEMO_MODEL}-leyes-ec"]
    leyes = read_record(loras / f"{DEMO_MODEL}-leyes-ec").data  # trained on top of instrucciones, with replay
    assert leyes["stacked_on"]["path"] == str(loras / f"{DEMO_MODEL}-instrucciones")
    recipe = yaml.safe_load((REPO / DEMO_SPEC.recipes["leyes-ec"]).read_text(encoding="utf-8"))
    assert leyes["dataset"]["replay"]["rows"] == recipe["dataset"]["replay"]["rows"] > 0
    assert results["variants"] == ["base", *(f"{DEMO_MODEL}-{t}" for t in ("instrucciones", "leyes-ec", "fusionado"))]
    assert set(results["tasks"]) == {"instrucciones-es", "leyes-ec"}
    assert "citation_accuracy" in results["tasks"]["leyes-ec"]["scores"][f"{DEMO_MODEL}-fusionado"]
    report = tmp_path / "demo" / "report"
    assert (report / "report.md").is_file() and (report / "chart.png").is_file()
    installed = webui / "user_data"
    assert (installed / "loras" / f"{DEMO_MODEL}-fusionado" / "adapter_model.safetensors").is_file()
    assert (installed / "models" / DEMO_MODEL / "config.json").is_file()
    assert (installed / "instruction-templates" / "spanish_ft-Gemma.yaml").is_file()
    output = capsys.readouterr().out
    assert "¿Cuál es la capital de Ecuador?" in output and "fusionado:" in output
    # the fused adapter answers the legal questions with Fuentes, its articles listed under the answer
    assert "fuentes:   [1] Constitución de la República del Ecuador, artículo 71" in output

    # A second run reuses every finished step.
    run_demo(settings)
    again = capsys.readouterr().out
    assert again.count("reused") >= 4, again

    # instrucciones trained again (another adapter): leyes-ec, stacked on the old one, is trained again too
    import shutil

    shutil.rmtree(loras / f"{DEMO_MODEL}-instrucciones")
    run_demo(DemoSettings(**{**settings.__dict__, "recipe_overrides": [*TINY_RUN, "training.seed=7"], "webui": None}))
    third = capsys.readouterr().out
    assert f"was trained on top of another {DEMO_MODEL}-instrucciones" in third, third
    leyes = read_record(loras / f"{DEMO_MODEL}-leyes-ec").data
    from training.files import sha256_file

    assert leyes["stacked_on"]["weights_sha256"] == sha256_file(
        loras / f"{DEMO_MODEL}-instrucciones" / "adapter_model.safetensors")
    assert json.loads((report / "report.json").read_text(encoding="utf-8"))["inputs_sha256"]


def test_a_demo_adapter_is_trained_again_when_its_rows_or_its_recipe_change():
    from training.config import load_config
    from training.demo.demo import BUNDLE, DEMO_SPEC
    from training.files import sha256_file
    from training.pipeline.steps import stale_reason

    def config(*overrides):
        return load_config(BUNDLE / DEMO_SPEC.recipes["leyes-ec"], ["base_model=m", "output_dir=o", *overrides])

    trained = config()
    record = {"config": trained.as_dict(),
              "dataset": {"sha256_of": "file", "sha256": sha256_file(BUNDLE / trained.data.train)}}
    assert stale_reason(TrainingRecord(record), config(), None) is None
    # speed/logging knobs do not change the weights: reused
    def reason(*overrides):
        return stale_reason(TrainingRecord(record), config(*overrides), None)

    assert reason("training.gradient_checkpointing=true", "training.logging_steps=1") is None
    assert reason("training.learning_rate=0.0001") == "its recipe changed (training.learning_rate)"
    assert reason("dataset.replay.rows=5") == "its recipe changed (dataset.replay)"
    # a key the schema gained after that run (its default applied then) does not make it stale
    older = {**record, "config": {**trained.as_dict(), "quantization": {
        k: v for k, v in trained.as_dict()["quantization"].items() if k != "embeddings"}}}
    assert stale_reason(TrainingRecord(older), config(), None) is None
    edited = {**record, "dataset": {**record["dataset"], "sha256": "0" * 64}}
    assert "training rows changed" in stale_reason(TrainingRecord(edited), config(), None)


def test_side_by_side_uses_the_repetition_penalty_of_the_fused_adapters_preset():
    import yaml

    from training.demo.demo import BUNDLE, DEMO_MODEL, preset_repetition_penalty

    fused = BUNDLE / "loras" / f"{DEMO_MODEL}-fusionado"
    name, penalty = preset_repetition_penalty(fused)
    assert name == "spanish_ft-Gemma"
    preset = yaml.safe_load((BUNDLE / "presets" / "spanish_ft-Gemma.yaml").read_text(encoding="utf-8"))
    assert penalty == preset["repetition_penalty"]
    assert preset_repetition_penalty(BUNDLE / "training") == (None, None)  # no record: plain greedy


def test_side_by_side_gives_the_fused_adapter_fuentes_as_the_extension_does():
    from training.demo.demo import BUNDLE, DEMO_MODEL, DEMO_QUESTIONS, fuentes_k, grounded_questions, sources_lines
    from training.retrieval.fuentes import HEADER

    assert fuentes_k(BUNDLE / "loras" / f"{DEMO_MODEL}-fusionado") == 3
    assert fuentes_k(BUNDLE / "loras" / f"{DEMO_MODEL}-instrucciones") is None  # not a law adapter: no Fuentes
    turns, hits = grounded_questions(DEMO_QUESTIONS, 3)
    assert turns[0] == DEMO_QUESTIONS[0] and hits[0] == []  # the capital: not a legal question
    assert turns[2].startswith(HEADER) and turns[2].endswith("Pregunta: " + DEMO_QUESTIONS[2])
    assert (hits[2][0].norma, hits[2][0].articulo) == ("Constitución de la República del Ecuador", "71")
    assert grounded_questions(DEMO_QUESTIONS, None) == (DEMO_QUESTIONS, [[], [], [], []])
    lines = sources_lines("Según el artículo 71 de la Constitución y el artículo 500 del COIP...", hits[2])
    assert lines[0].startswith("fuentes:   [1] Constitución de la República del Ecuador, artículo 71")
    assert lines[-1] == "⚠ cita no verificada: artículo 500 de Código Orgánico Integral Penal"
    assert not any("artículo 71" in line and "no verificada" in line for line in lines)


def test_a_demo_folder_of_an_earlier_version_is_adopted_and_a_foreign_one_is_not(tmp_path):
    from training.demo.demo import adopt_earlier_demo_folder
    from training.files import is_ours

    earlier = tmp_path / "demo-output"  # a SmolLM2-era demo folder (spanish_ft 0.1)
    (earlier / "models" / "smollm2-135m").mkdir(parents=True)
    (earlier / "models" / "smollm2-135m" / "spanish_ft_demo_model.json").write_text("{}", encoding="utf-8")
    (earlier / "report").mkdir()
    (earlier / "report" / "report.json").write_text('{"inputs_sha256": "x"}', encoding="utf-8")
    adopt_earlier_demo_folder(earlier)
    assert is_ours(earlier) and is_ours(earlier / "report")

    foreign = tmp_path / "thesis"
    (foreign / "models" / "smollm2-135m").mkdir(parents=True)
    (foreign / "models" / "smollm2-135m" / "spanish_ft_demo_model.json").write_text("{}", encoding="utf-8")
    (foreign / "chapter1.tex").write_text("mine", encoding="utf-8")
    adopt_earlier_demo_folder(foreign)
    assert not is_ours(foreign) and sorted(p.name for p in foreign.iterdir()) == ["chapter1.tex", "models"]
