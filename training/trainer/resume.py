"""Resume: which checkpoint a run continues from, and only with the recipe that made it.

Every checkpoint holds `spanish_ft_recipe.json`, written as the trainer saves it
(`RecipeInCheckpoints`): the resolved recipe and the sha256 of the files it names. With
`resume`, `check_recipe_unchanged` compares it with the current recipe before anything loads and
refuses every key that differs and shapes what is trained, naming each with both values.
Otherwise the trainer would stop on a state_dict size mismatch (`lora.rank`), or, worse, go on
and mix two recipes in one adapter (`lora.target_modules`, the data, the learning rate, which
the checkpoint's optimizer state silently overrides).

Every key must stay as it was except these, which may change between sessions:
- where things go and what is logged: name, task, preset, output_dir, work_dir, resume,
  training.logging_steps, eval_steps, save_steps, save_total_limit, keep_checkpoints, report_to;
- how long it trains: training.epochs, max_steps, early_stopping_patience (a decaying
  learning-rate schedule then decays over the new length);
- what leaves the numbers alone: training.gradient_checkpointing, lora.save_dtype and
  dataset.on_error (skip or raise keep the same good rows; raise stops at a bad one).
Files count by their content, not their path: the template, the local data files
(dataset.train, dataset.eval, dataset.replay.train) and the weights of lora.stack_on; a hub
dataset or a dataset folder counts by its name. The base model counts by its name and revision.

A checkpoint without the file (made by an older version, or a run killed while it saved) is
compared on what PEFT's adapter_config.json in it says (lora.rank, alpha, dropout,
target_modules), with a warning that nothing else could be.
"""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

from training import strict_json
from training.adapters.folder import SAFE_WEIGHTS_NAME, AdapterError, read_adapter_config
from training.config import RunConfig
from training.files import find_bundle_file, sha256_file, write_json_atomic
from training.safeyaml import shown

RECIPE_NAME = "spanish_ft_recipe.json"
RECIPE_FORMAT = 1
MAY_CHANGE = {"name", "task", "preset", "output_dir", "work_dir", "resume", "dataset.on_error", "lora.save_dtype",
              "training.epochs", "training.max_steps", "training.early_stopping_patience",
              "training.logging_steps", "training.eval_steps", "training.save_steps", "training.save_total_limit",
              "training.keep_checkpoints", "training.report_to", "training.gradient_checkpointing"}
SECTIONS = ("dataset", "lora", "quantization", "training")
BY_CONTENT = ("template", "dataset.train", "dataset.eval", "dataset.replay.train", "lora.stack_on")
PEFT_NAMES = {"r": "rank", "lora_alpha": "alpha", "lora_dropout": "dropout",
              "target_modules": "target_modules"}  # adapter_config.json -> lora.*, for older checkpoints


def checkpoint_to_resume(config: RunConfig) -> str | None:
    """The checkpoint `resume` asks for; refuses to silently restart over an earlier run's checkpoints."""
    newest = get_last_checkpoint(str(config.work_dir)) if config.work_dir.is_dir() else None
    if config.resume is False:
        if newest:
            raise ValueError(
                f"{config.work_dir} holds checkpoints of an earlier run (newest: {Path(newest).name}); "
                f"continue it with resume=true, or delete {config.work_dir} to start over"
            )
        return None
    if config.resume is True:
        if not newest:
            raise ValueError(f"resume=true, but {config.work_dir} has no checkpoint-* folder; run without resume=true")
        return newest
    if not (Path(config.resume) / "trainer_state.json").is_file():
        raise ValueError(f"resume: {config.resume} is not a checkpoint folder (no trainer_state.json)")
    return config.resume


def check_recipe_unchanged(checkpoint: str | Path, config: RunConfig) -> list[str]:
    """Refuse (ValueError) a recipe that differs from the checkpoint's in a key that matters; warnings to print."""
    checkpoint = Path(checkpoint)
    recorded, notes = _recorded_recipe(checkpoint)
    current = effective_recipe(config.as_dict(), contents(config))
    changed = [f"  - {key}: {_shown(recorded[key])} in the checkpoint, {_shown(current[key])} now"
               for key in sorted(recorded.keys() & current.keys()) if recorded[key] != current[key]]
    if changed:
        raise ValueError(
            f"resume: {checkpoint} was trained with another recipe; these keys shape what is trained and differ:\n"
            + "\n".join(changed)
            + f"\nset them back to continue that training, or start a new one: delete {config.work_dir} or set "
            "work_dir to a new folder, without resume (training length, logging, evaluation and save steps may "
            "change on resume: training/trainer/resume.py lists them)"
        )
    return notes


def effective_recipe(recipe: dict, files: dict) -> dict:
    """{key path: value} of the keys that matter on resume; files by their content (`contents`)."""
    flat = {}
    for key, value in recipe.items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        flat |= {f"{key}.{sub}" if sub is not None else key: item for sub, item in items}
    for key in BY_CONTENT:
        if key in flat and key in files:
            flat[key] = files[key]
    replay = flat.get("dataset.replay")
    if isinstance(replay, dict) and "dataset.replay.train" in files:
        flat["dataset.replay"] = {**replay, "train": files["dataset.replay.train"]}
    if isinstance(flat.get("lora.target_modules"), list):  # a set of names: their order means nothing
        flat["lora.target_modules"] = sorted(map(str, flat["lora.target_modules"]))
    return {key: value for key, value in flat.items() if key not in MAY_CHANGE}


def contents(config: RunConfig) -> dict[str, str]:
    """{key: sha256 of its file} for the files the recipe names (a name that is no local file stays as it is)."""
    replay = config.data.replay
    given = {"template": str(config.template_path), "dataset.train": config.data.train,
             "dataset.eval": config.data.eval, "dataset.replay.train": replay and replay.train,
             "lora.stack_on": config.lora.stack_on_path and str(config.lora.stack_on_path / SAFE_WEIGHTS_NAME)}
    return {key: _content(text) for key, text in given.items() if text}


def _content(text: str) -> str:
    path = find_bundle_file(text)
    return f"sha256:{sha256_file(path)}" if path is not None and path.is_file() else text


def _shown(value) -> str:
    if isinstance(value, str) and value.startswith("sha256:"):
        return f"content sha256 {value[7:19]}..."
    return shown(value)


def _recorded_recipe(checkpoint: Path) -> tuple[dict, list[str]]:
    """The checkpoint's effective recipe, and the warnings of a checkpoint that holds only PEFT's config."""
    path = checkpoint / RECIPE_NAME
    if not path.is_file():
        try:
            config = read_adapter_config(checkpoint)
        except AdapterError as err:
            raise ValueError(f"resume: {checkpoint} has no {RECIPE_NAME} and no usable PEFT config ({err}); "
                             "resume from another checkpoint (resume=PATH), or start over without resume") from None
        lora = {PEFT_NAMES[name]: value for name, value in config.items() if name in PEFT_NAMES}
        compared = ", ".join(f"lora.{key}" for key in PEFT_NAMES.values())
        return effective_recipe({"lora": lora}, {}), [
            f"{checkpoint} has no {RECIPE_NAME} (made by an older version, or stopped while saving): only "
            f"{compared} could be compared with the recipe"]
    try:
        data = strict_json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{path}: unreadable ({err}); delete that checkpoint to resume from an older one") from None
    if not _is_record(data):
        raise ValueError(f"{path}: not a recipe record of format {RECIPE_FORMAT} (an object with 'recipe', holding "
                         "the recipe's sections, and 'contents'); delete that checkpoint to resume from an older one")
    return effective_recipe(data["recipe"], data["contents"]), []


def _is_record(data) -> bool:
    """The shape RecipeInCheckpoints writes (a record missing a section would compare nothing there)."""
    if not (isinstance(data, dict) and data.get("format") == RECIPE_FORMAT):
        return False
    recipe, files = data.get("recipe"), data.get("contents")
    return (isinstance(recipe, dict) and all(isinstance(recipe.get(section), dict) for section in SECTIONS)
            and isinstance(files, dict) and all(isinstance(value, str) for value in files.values()))


class RecipeInCheckpoints(TrainerCallback):
    """Writes the run's recipe and file contents into every checkpoint the trainer saves (main process)."""

    def __init__(self, config: RunConfig):
        self.record = {"format": RECIPE_FORMAT, "recipe": config.as_dict(), "contents": contents(config)}

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            write_json_atomic(folder / RECIPE_NAME, self.record)
