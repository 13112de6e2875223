"""`python -m training pipeline --family {mistral,llama2,falcon}`: one family's experiment, end to end.

1. the plan: every step with its estimated peak memory and time (training/pipeline/plan.py),
   printed before anything is downloaded or loaded; refused when a step does not fit the device;
2. `instrucciones` trained with QLoRA from training/recipes/<family>-instrucciones.yaml;
3. `leyes-ec` trained on top of it (lora.stack_on, frozen) from <family>-leyes-ec.yaml;
4. the two fused exactly into <family>-fusionado (training/adapters/fuse.py);
5. base vs the three adapters evaluated on the held-out splits: report.md, report.json, chart.png
   in --out/report, report.json recording the machine, the presets and the data's sha256;
6. with --webui DIR: the bundle and the three adapters installed into that webui.

Every step reuses its finished output when its inputs are unchanged and continues an interrupted
training from its last checkpoint (training/pipeline/steps.py). --out (default pipeline-<family>)
must be new, empty, or a pipeline folder of ours (it holds spanish_ft_output.json); inside it a run
replaces only its own stale artefacts. Every folder a step will write (a folder the user put in an
earlier run's, say) and the webui are checked with the plan, before the first step: found by the
step that writes there, after the trainings, a refusal would cost hours. Recipe overrides
(KEY.PATH=VALUE) apply to both recipes.
`python -m training compare RUN_DIR...` puts several families' runs into one report.

    python -m training pipeline --family mistral --out runs/mistral
    python -m training pipeline --family falcon --plan-only --gpu-memory 16 training.batch_size=2

`--force` runs a plan that does not fit; `--force-memory`, its old spelling, still works for one release.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from training.adapters.folder import adapter_weights_path
from training.adapters.record import RECORD_NAME
from training.config import RunConfig, config_from_recipe, read_recipe
from training.evaluate.evaluate import EvaluateSettings, evaluate, positive_rows
from training.evaluate.report import REPORT, earlier_report, render_markdown, write_report
from training.families import FAMILIES, SEVEN_B_FAMILIES
from training.files import BUNDLE_ROOT, check_output, own_folder, sha256_file
from training.memory.arch import architecture_of
from training.pipeline import plan
from training.pipeline.steps import FUSED, STACKED_ON, TASKS, fuse_once, train_adapter
from training.pipeline.webui import ADAPTER, check_webui, install_adapters, install_bundle
from training.trainer.save import check_folders

SPLITS = {"instrucciones": "training/datasets/instrucciones-es/test.jsonl",
          "leyes-ec": "training/datasets/leyes-ec/test.jsonl"}


@dataclass(frozen=True)
class PipelineSpec:
    """What a pipeline trains: its recipes, the names of its adapters, the model config for the plan."""

    family: str  # one of families.SEVEN_B_FAMILIES, or "demo"
    prefix: str  # adapters: <prefix>-instrucciones, <prefix>-leyes-ec, <prefix>-fusionado
    recipes: dict[str, str]  # task -> recipe, relative to the bundle
    memory_config: str  # shipped config (training/memory/configs) when the base is not a local folder
    model_step: str = ""  # what the base model step does, when the caller fetches the model itself

    def adapter_dir(self, out: Path, task: str) -> Path:
        return out / "loras" / f"{self.prefix}-{task}"


def family_spec(family: str) -> PipelineSpec:
    return PipelineSpec(family, family, {task: f"training/recipes/{family}-{task}.yaml" for task in TASKS},
                        FAMILIES[family].memory_config)


@dataclass(frozen=True, kw_only=True)
class PipelineSettings:
    """What `pipeline` (and the demo, over it) runs: the family's spec, its folders, how it evaluates."""

    spec: PipelineSpec
    out: Path  # the run folder: new, empty, or an earlier run's
    base_model: str | None = None  # default: the recipes' base_model
    webui: Path | None = None  # also install the bundle and the adapters into this webui
    recipe_overrides: list[str] = field(default_factory=list)  # applied to both recipes
    shipped: dict[str, Path] | None = None  # adapters to use instead of training them (the demo's)
    evaluation: EvaluateSettings = field(default_factory=EvaluateSettings)  # base, adapters, data: filled in
    force: bool = False  # run even if the plan's memory estimate exceeds the device's free memory
    gpu_memory_gb: float | None = None  # plan for a GPU of this size instead of this machine's device
    plan_only: bool = False  # print the plan and stop
    label: str = "pipeline"

    @classmethod
    def from_args(cls, args) -> PipelineSettings:
        if args.gpu_memory is not None and not args.plan_only:
            raise ValueError("--gpu-memory plans for another GPU: use it with --plan-only")
        evaluation = EvaluateSettings(max_new_tokens=args.max_new_tokens, answer_rows=args.answer_rows,
                                      bits=args.eval_bits)
        return cls(spec=family_spec(args.family), out=args.out or Path(f"pipeline-{args.family}"),
                   base_model=args.base, webui=args.webui, recipe_overrides=args.overrides, evaluation=evaluation,
                   force=args.force, gpu_memory_gb=args.gpu_memory, plan_only=args.plan_only)

    def say(self, message: str) -> None:
        print(f"[{self.label}] {message}", flush=True)


def add_arguments(parser) -> None:
    parser.add_argument("--family", required=True, choices=sorted(SEVEN_B_FAMILIES), help="the model family")
    parser.add_argument("--base", help="base model folder or hub id (default: the family recipes' base_model)")
    parser.add_argument("--out", type=Path, help="output folder: new, empty, or an earlier run's (default "
                        "pipeline-<family>)")
    parser.add_argument("--webui", type=Path, help="also install the bundle and the three adapters into this webui")
    parser.add_argument("--answer-rows", type=positive_rows,
                        help="generate answers on N rows per held-out split, spread evenly (default: every row); "
                        "the losses always cover every row")
    parser.add_argument("--max-new-tokens", type=int, default=96, help="answer length cap (default 96)")
    parser.add_argument("--eval-bits", type=int, choices=(16, 4), default=16,
                        help="base weights during the evaluation on a GPU: 16, or 4 (NF4) for a 7B on a 16 GB card")
    parser.add_argument("--plan-only", action="store_true", help="print the plan and stop")
    parser.add_argument("--gpu-memory", type=float, metavar="GB", help="with --plan-only: plan for a GPU of GB "
                        "gigabytes (e.g. 16, 24) instead of this machine's device")
    parser.add_argument("--force", action="store_true",
                        help="run even if the plan's memory estimate exceeds the device's free memory")
    parser.add_argument("--force-memory", action=DeprecatedFlag, dest="force", nargs=0, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", metavar="KEY.PATH=VALUE", help="recipe overrides for both recipes")


class DeprecatedFlag(argparse.Action):
    """An old spelling of a flag (`--force-memory`), kept for one release: sets the new one, says so."""

    def __call__(self, parser, namespace, values, option_string=None):
        new = "--" + self.dest.replace("_", "-")
        print(f"warning: {option_string} is deprecated and will be removed in the next release; use {new}",
              file=sys.stderr)
        setattr(namespace, self.dest, True)


def run(args) -> int:
    run_pipeline(PipelineSettings.from_args(args))
    return 0


def run_pipeline(settings: PipelineSettings) -> dict | None:
    check_output(settings.out, replace=True, what="pipeline folder")  # before anything loads
    recipes = read_recipes(settings)
    base = base_model_of(settings, recipes)
    show_plan(settings, plan_steps(settings, base, recipes))
    if settings.plan_only:
        return None
    own_folder(settings.out, "pipeline folder")
    adapters = step_adapters(settings, base, recipes)
    results = step_evaluate(settings, base, adapters)
    if settings.webui:
        step_webui(settings, base, adapters)
    return results


def read_recipes(settings: PipelineSettings) -> dict[str, dict]:
    """{task: recipe} as read from its file: once per run; every config of the run is built from these."""
    return {task: read_recipe(recipe_source(settings, task)) for task in TASKS}


def recipe_source(settings: PipelineSettings, task: str) -> str:
    return str(BUNDLE_ROOT / settings.spec.recipes[task])


def base_model_of(settings: PipelineSettings, recipes: dict[str, dict]) -> str:
    if settings.base_model:
        return str(settings.base_model)
    first = TASKS[0]
    config = config_from_recipe(recipes[first], recipe_source(settings, first), settings.recipe_overrides)
    return config.model.base_model


def task_overrides(settings: PipelineSettings, base: str, task: str) -> list[str]:
    """The overrides of `task`'s recipe in this run, the one place they are derived (the plan and the training
    both take them from here): the base model, the adapter's folder under --out, the user's KEY.PATH=VALUE, and
    the adapter it is trained on top of (lora.stack_on), in its folder under --out."""
    overrides = [f"base_model={base}", f"output_dir={settings.spec.adapter_dir(settings.out, task)}",
                 *settings.recipe_overrides]
    if task in STACKED_ON:
        overrides.append(f"lora.stack_on={settings.spec.adapter_dir(settings.out, STACKED_ON[task])}")
    return overrides


def recipe_configs(settings: PipelineSettings, base: str, recipes: dict[str, dict]) -> dict[str, RunConfig]:
    """{task: RunConfig} of the two recipes as this run trains them (folders under --out)."""
    return {task: config_from_recipe(recipes[task], recipe_source(settings, task), task_overrides(settings, base, task))
            for task in TASKS}


def plan_steps(settings: PipelineSettings, base: str, recipes: dict[str, dict]) -> list[plan.PlannedStep]:
    """The steps of this run, each with its estimated memory and time (nothing is loaded).

    A step that could not write its output is refused here, before any step runs (check_outputs).
    """
    configs = recipe_configs(settings, base, recipes)
    check_outputs(settings, configs)
    device = plan.detect_device(settings.gpu_memory_gb)
    model, source = plan.model_config(base, settings.spec.memory_config)
    params = architecture_of(model).total_params
    fetch = settings.spec.model_step or (f"{base}, a local folder" if Path(base).is_dir() else
                                         f"download {base} (~{params * 2 / 1e9:.1f} GB in 16-bit)")
    steps = [plan.PlannedStep("base model", f"{fetch}; memory estimated from {source}")]
    if settings.shipped:
        steps.append(plan.PlannedStep("adapters", "the shipped adapters in loras/, not trained again"))
    else:
        for task, config in configs.items():
            peak, checkpointing = plan.training_memory(config, model, device)
            seconds, basis = plan.training_time(config, params, device, checkpointing)
            what = (f"{settings.spec.recipes[task]} -> {config.output_dir}, gradient checkpointing "
                    f"{'on' if checkpointing else 'off'}")
            steps.append(plan.PlannedStep(f"train {task}", what, peak, seconds, basis, plan.TRAINING_FIX))
        steps.append(plan.PlannedStep("fuse", f"exact -> {settings.spec.adapter_dir(settings.out, FUSED)}", None, 2))
    steps.append(evaluation_step(settings, model, params, device))
    if settings.webui:
        steps.append(plan.PlannedStep("webui", f"install the bundle and the adapters into {settings.webui}"))
    return steps


def check_outputs(settings: PipelineSettings, configs: dict) -> None:
    """Refuse the run now if a step could not write its output; `configs`: {task: RunConfig} as trained."""
    if settings.shipped:
        adapters = list(settings.shipped.values())
    else:
        for config in configs.values():
            check_folders(config, replace=True)  # the pipeline's own folders: replaced when stale
        adapters = [settings.spec.adapter_dir(settings.out, task) for task in (*TASKS, FUSED)]
        check_output(adapters[-1], replace=True, marker=RECORD_NAME, what=ADAPTER)
    check_output(settings.out / "report", replace=True, what=REPORT)
    if settings.webui:
        check_webui(settings.webui, adapters)


def evaluation_step(settings: PipelineSettings, model: dict, params: int, device) -> plan.PlannedStep:
    limit, wanted = settings.evaluation.limit, settings.evaluation.answer_rows
    splits = [_split_rows(split)[:limit] for split in SPLITS.values()]
    rows = [len(lines) for lines in splits]
    # the longest held-out row (estimated tokens) plus the answer: the longest sequence a batch holds
    seq_len = int(max(len(line) for lines in splits for line in lines) / plan.BYTES_PER_TOKEN)
    seq_len += settings.evaluation.max_new_tokens
    answered = sum(min(n, wanted or n) for n in rows)
    seconds, basis = plan.evaluation_time(4 * sum(rows), 4 * answered, params, device, settings.evaluation)
    what = (f"base + 3 adapters: loss on {sum(rows)} held-out rows, answers on {answered}"
            + ("" if answered == sum(rows) else f" ({wanted} per split, spread evenly)"))
    fix = "Evaluate in NF4 with --eval-bits 4" if device.kind == "cuda" and settings.evaluation.bits == 16 else (
        "The evaluation holds the base model in full precision: free memory, or evaluate on a GPU")
    return plan.PlannedStep("evaluate", what, plan.evaluation_memory(model, device, seq_len, settings.evaluation.bits),
                            seconds, basis, fix)


def _split_rows(split: str) -> list[bytes]:
    return [line for line in (BUNDLE_ROOT / split).read_bytes().splitlines() if line.strip()]


def show_plan(settings: PipelineSettings, steps: list[plan.PlannedStep]) -> None:
    """Print the plan, then refuse it if a step does not fit the device (unless --force)."""
    device = plan.detect_device(settings.gpu_memory_gb)
    settings.say(plan.render_plan(f"plan for {settings.spec.family}", steps, device))
    plan.check_fits(steps, device, settings.force)


def step_adapters(settings: PipelineSettings, base: str, recipes: dict[str, dict]) -> dict[str, Path]:
    """{task: adapter folder} for instrucciones, leyes-ec and fusionado: shipped, reused or trained."""
    if settings.shipped:
        settings.say("adapters: the shipped ones in loras/")
        return settings.shipped
    adapters: dict[str, Path] = {}
    for task in TASKS:
        under = adapters.get(STACKED_ON.get(task, ""))  # trained just before, in its folder under --out
        adapters[task] = train_adapter(recipes[task], recipe_source(settings, task),
                                       task_overrides(settings, base, task), under, settings.say)
    adapters[FUSED] = fuse_once([adapters[task] for task in TASKS], settings.spec.adapter_dir(settings.out, FUSED),
                                settings.say)
    return adapters


# the evaluation settings an earlier report must share to be reused (its inputs_sha256)
DIGESTED = ("max_new_tokens", "limit", "answer_rows", "bits", "bf16_loss")


def _inputs_digest(base: str, adapters: dict[str, Path], settings: PipelineSettings) -> str:
    evaluation = {key: getattr(settings.evaluation, key) for key in DIGESTED}
    digest = hashlib.sha256(json.dumps([base, evaluation]).encode())
    weights = [adapter_weights_path(adapter) for adapter in adapters.values()]
    for path in [*weights, *(BUNDLE_ROOT / split for split in SPLITS.values())]:
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def step_evaluate(settings: PipelineSettings, base: str, adapters: dict[str, Path]) -> dict:
    """Base vs the three adapters on the held-out splits, or the report of the same inputs made before."""
    report_dir = settings.out / "report"
    digest = _inputs_digest(base, adapters, settings)
    saved = report_dir / "report.json"
    results = earlier_report(saved, settings.say)
    if results.get("inputs_sha256") == digest:
        settings.say(f"evaluation of the same model, adapters and data already in {report_dir}: reused")
    else:
        settings.say("evaluating base vs adapters on the held-out splits")
        results = evaluate(replace(settings.evaluation, base=base, adapters=list(adapters.values()),
                                   data=[str(BUNDLE_ROOT / s) for s in SPLITS.values()]))
        results["inputs_sha256"] = digest
        results["pipeline"] = {"family": settings.spec.family, "base_model": base,
                               "recipes": settings.spec.recipes, "overrides": settings.recipe_overrides,
                               "adapters": {task: path.name for task, path in adapters.items()}}
        write_report(results, report_dir, replace=True)
    print(render_markdown(results, samples=0))
    settings.say("report: " + ", ".join(str(p) for p in (report_dir / "report.md", report_dir / "chart.png")
                                        if p.is_file()))
    return results


def step_webui(settings: PipelineSettings, base: str, adapters: dict[str, Path]) -> Path:
    """Install the bundle and the adapters this run trained into the webui; return its data folder."""
    data_dir = install_bundle(settings.webui)
    install_adapters(data_dir, list(adapters.values()))
    settings.say(f"webui ready: cd {settings.webui} && python server.py --extensions spanish_ft, then load "
                 f"{base} and the LoRA {adapters[FUSED].name} (instruct mode)")
    return data_dir
