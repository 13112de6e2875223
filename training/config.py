"""Training recipes: YAML -> dotted overrides -> jsonschema -> frozen, typed settings.

A recipe is validated against `schema.json` (Draft 2020-12) as a whole and every mistake
is reported at once with its key path (`lora.rank: 'x' is not of type 'integer'`). Defaults
come from the schema; the family-dependent ones (template, preset, LoRA targets) from
`training/families.py`. Files are not required to exist here: data and template paths are
checked when training starts; template and
`lora.stack_on` are resolved here once (`template_path`, `lora.stack_on_path`): as given, else
under the bundle root. The file is read and checked through training/userdata.py, the door for
user JSON and YAML (anchors and aliases refused; an integer is a whole number, not 8.0; a number is
finite, not .nan or .inf), and a value quoted in an error message is shortened (`shown`).

    config = load_config("training/recipes/mistral-instrucciones.yaml", ["lora.rank=8"])
    config.lora.rank  # 8
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path

import yaml

from training.families import FAMILIES
from training.files import BUNDLE_ROOT, find_bundle_file
from training.safeyaml import load_yaml, shorten, shown
from training.userdata import UserFileError, parse_yaml, schema_errors, text_errors

SCHEMA_PATH = Path(__file__).with_name("schema.json")
SHOWN_ERROR_CHARS = 1000  # each error line is cut to about this length (a key path, a list of allowed keys)


class ConfigError(ValueError):
    """A recipe with mistakes; `errors` lists each one with its key path."""

    def __init__(self, source: str, errors: list[str]):
        self.errors = [shorten(error, SHOWN_ERROR_CHARS) for error in errors]
        listing = "\n".join(f"  - {error}" for error in self.errors)
        super().__init__(f"{source}: {len(errors)} error(s) in the recipe:\n{listing}")


@dataclass(frozen=True)
class ModelSettings:
    base_model: str
    revision: str | None
    family: str
    trust_remote_code: bool


@dataclass(frozen=True)
class ReplaySettings:
    train: str
    rows: int
    format: str = "alpaca"


@dataclass(frozen=True)
class RetrievalSettings:
    k: int = 3
    missing_share: float = 0.2
    corpus: Path | None = None  # resolved like every recipe path; None: the shipped corpus
    unanswerable: str | None = None  # legal questions the corpus cannot answer (found like dataset.train)
    distractor_share: float = 0.0  # replayed rows given the best-ranked articles though not legal


@dataclass(frozen=True)
class DataSettings:
    train: str
    eval: str | None
    eval_fraction: float
    format: str
    split: str
    on_error: str
    max_tokens: int
    replay: ReplaySettings | None = None
    retrieval: RetrievalSettings | None = None


@dataclass(frozen=True)
class LoraSettings:
    rank: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...]
    save_dtype: str = "float32"
    stack_on: str | None = None  # as the recipe gives it (recorded)
    stack_on_path: Path | None = None  # resolved: as given, else under the bundle root


@dataclass(frozen=True)
class QuantizationSettings:
    bits: int
    quant_type: str
    double_quant: bool
    compute_dtype: str
    embeddings: str = "16bit"  # input embedding and LM head: 16bit or 4bit (training/model/embeddings.py)


@dataclass(frozen=True)
class TrainingSettings:
    epochs: float
    max_steps: int | None
    batch_size: int
    grad_accumulation: int
    learning_rate: float
    scheduler: str
    warmup_ratio: float
    weight_decay: float
    max_grad_norm: float
    optimizer: str
    seed: int
    logging_steps: int
    eval_steps: int
    save_steps: int
    save_total_limit: int
    keep_checkpoints: bool
    early_stopping_patience: int | None
    gradient_checkpointing: bool | str  # true, false or "auto" (training/model/checkpointing.py)
    packing: bool | str  # true, false or "auto"
    report_to: str


@dataclass(frozen=True)
class RunConfig:
    """One resolved recipe; each part goes to the function that needs only it."""

    name: str
    task: str | None
    template: str  # as the recipe gives it (recorded in the adapter's training record)
    template_path: Path  # resolved once: as given (absolute or from CWD), else under the bundle root
    preset: str
    output_dir: Path
    work_dir: Path
    resume: bool | str
    model: ModelSettings
    data: DataSettings
    lora: LoraSettings
    quantization: QuantizationSettings
    training: TrainingSettings
    source: str
    resolved_json: str  # the full resolved recipe, for the training record

    def as_dict(self) -> dict:
        return json.loads(self.resolved_json)


@cache
def load_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read, override, validate and resolve a recipe; raise ConfigError listing every mistake."""
    return config_from_recipe(read_recipe(path), str(path), overrides)


def config_from_recipe(recipe: dict, source: str, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """A recipe read once (read_recipe from `source`), overridden, validated and resolved; the recipe itself is
    left as it was, so one reading serves several configs (the pipeline's). ConfigError lists every mistake."""
    recipe, errors = apply_overrides(recipe, overrides)
    errors += text_errors(recipe) + validate(recipe)
    if not errors:
        recipe = fill_defaults(recipe)
        errors += check_consistency(recipe)
    if errors:
        raise ConfigError(source, errors)
    return build_config(recipe, source=source)


def check_recipe_arguments(arguments: list[str]) -> None:
    """`train RECIPE [KEY=VALUE ...]` checked before torch is imported (python -m training's early check)."""
    positional = [arg for arg in arguments if not arg.startswith("-")]
    if positional:
        load_config(positional[0], positional[1:])


def read_recipe(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: recipe not found (recipes ship in {BUNDLE_ROOT / 'training' / 'recipes'})")
    try:
        data = parse_yaml(path, "recipe")
    except UserFileError as err:
        raise ConfigError(str(path), err.errors) from None
    if not isinstance(data, dict):
        found = "empty" if data is None else f"a YAML {type(data).__name__}"
        raise ConfigError(str(path), [f"the recipe is {found}; it must be a YAML mapping of keys "
                                      "(base_model, family, dataset, ...)"])
    return data


def apply_overrides(recipe: dict, overrides) -> tuple[dict, list[str]]:
    """Apply `key.path=value` overrides (values parsed as YAML); unknown keys are errors."""
    recipe, errors = copy.deepcopy(recipe), []
    for text in overrides:
        key, sep, raw = text.partition("=")
        if not sep or not key:
            errors.append(f"override {shown(text)}: expected KEY.PATH=VALUE, e.g. lora.rank=8")
            continue
        problem = _unknown_key(key.split("."))
        if problem:
            errors.append(f"override {shown(text)}: {problem}")
            continue
        try:
            value = load_yaml(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            why = getattr(err, "problem", None) or err
            errors.append(f"override {shown(text)}: the value is not valid YAML: {why}")
            continue
        *parents, last = key.split(".")
        target = recipe
        for part in parents:
            if target.get(part) is None:  # absent or null (dataset.replay): the override starts the mapping
                target[part] = {}
            target = target[part]
            if not isinstance(target, dict):
                break  # the recipe has a non-mapping here; validation reports it
        else:
            target[last] = value
    return recipe, errors


def _unknown_key(parts: list[str]) -> str | None:
    node, walked = load_schema(), []
    for part in parts:
        known = node.get("properties", {})
        if part not in known:
            where = f"under {'.'.join(walked)}" if walked else "at the top level"
            allowed = ", ".join(sorted(known)) or "none"
            return f"unknown key {shown('.'.join(walked + [part]))}; allowed {where}: {allowed}"
        node, walked = known[part], walked + [part]
    return None


def validate(recipe: dict) -> list[str]:
    """Every schema violation, one line each, prefixed with its key path (training/userdata.py's door)."""
    return schema_errors(recipe, load_schema())


def fill_defaults(recipe: dict) -> dict:
    """A copy of a valid recipe with every default: the schema's, then the family's."""
    out = _schema_defaults(recipe, load_schema())
    family = FAMILIES[out["family"]]
    out["template"] = out["template"] or family.template_file
    out["preset"] = out["preset"] or family.preset
    out["lora"]["target_modules"] = out["lora"]["target_modules"] or list(family.lora_targets)
    out["name"] = out["name"] or Path(out["output_dir"]).name
    out["work_dir"] = out["work_dir"] or f"{out['output_dir'].rstrip('/')}.work"
    return out


def _schema_defaults(values: dict, schema: dict) -> dict:
    out = copy.deepcopy(values)
    for key, sub in schema.get("properties", {}).items():
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if isinstance(out.get(key), dict) and "properties" in sub:
            out[key] = _schema_defaults(out[key], sub)
    return out


def check_consistency(recipe: dict) -> list[str]:
    """Rules that span several keys (the schema checks each key alone)."""
    data, training, errors = recipe["dataset"], recipe["training"], []
    has_eval = data["eval"] is not None or data["eval_fraction"] > 0
    if data["eval"] is not None and data["eval_fraction"] > 0:
        errors.append("dataset.eval_fraction: give either dataset.eval or dataset.eval_fraction, not both")
    if training["early_stopping_patience"] is not None:
        if not has_eval:
            errors.append(
                "training.early_stopping_patience: needs evaluation data; set dataset.eval or dataset.eval_fraction"
            )
        if training["save_steps"] % training["eval_steps"]:
            errors.append(
                f"training.save_steps: must be a multiple of training.eval_steps ({training['eval_steps']}) "
                "with early stopping, so that the best evaluated step has a checkpoint"
            )
    stack_on = recipe["lora"]["stack_on"]
    if stack_on is not None and Path(stack_on).resolve() == Path(recipe["output_dir"]).resolve():
        errors.append("lora.stack_on: must differ from output_dir (the adapter under the new one stays unchanged)")
    if recipe["quantization"]["embeddings"] == "4bit" and recipe["quantization"]["bits"] != 4:
        errors.append("quantization.embeddings: 4bit needs quantization.bits: 4 (a 4-bit base model)")
    if Path(recipe["work_dir"]).resolve() == Path(recipe["output_dir"]).resolve():
        errors.append("work_dir: must differ from output_dir (the adapter folder is replaced as a whole)")
    return errors


def build_config(recipe: dict, source: str) -> RunConfig:
    def section(cls, values: dict):
        return cls(**{f.name: values[f.name] for f in fields(cls)})

    stack_on = recipe["lora"]["stack_on"]
    lora = dict(recipe["lora"], target_modules=tuple(recipe["lora"]["target_modules"]),
                stack_on_path=stack_on and _resolve(stack_on))
    replay = recipe["dataset"]["replay"]
    retrieval = recipe["dataset"]["retrieval"]
    data = dict(recipe["dataset"], replay=replay and ReplaySettings(**replay),
                retrieval=retrieval and RetrievalSettings(**dict(retrieval, corpus=retrieval["corpus"]
                                                                 and _resolve(retrieval["corpus"]))))
    return RunConfig(
        name=recipe["name"],
        task=recipe["task"],
        template=recipe["template"],
        template_path=_resolve(recipe["template"]),
        preset=recipe["preset"],
        output_dir=Path(recipe["output_dir"]),
        work_dir=Path(recipe["work_dir"]),
        resume=recipe["resume"],
        model=section(ModelSettings, recipe),
        data=section(DataSettings, data),
        lora=section(LoraSettings, lora),
        quantization=section(QuantizationSettings, recipe["quantization"]),
        training=section(TrainingSettings, recipe["training"]),
        source=source,
        resolved_json=json.dumps(recipe, ensure_ascii=False, sort_keys=True),
    )


def _resolve(text: str) -> Path:
    """A recipe path, resolved once; a missing file keeps its given form and is reported where it is read."""
    return find_bundle_file(text) or Path(text)


def describe_keys(schema: dict | None = None, prefix: str = "") -> list[str]:
    """One line per recipe key: path, allowed values or type, default, description (for --help)."""
    schema = schema or load_schema()
    required = set(schema.get("required", []))
    lines = []
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        if "properties" in sub:
            lines.append(f"{path}: {sub['description']}")
            lines += describe_keys(sub, prefix=f"{path}.")
            continue
        kind = "|".join(map(str, sub["enum"])) if "enum" in sub else "/".join(_as_list(sub.get("type", "any")))
        default = "required" if key in required else f"default {json.dumps(sub.get('default'))}"
        lines.append(f"  {path} ({kind}; {default}): {sub.get('description', '')}")
    return lines


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]
