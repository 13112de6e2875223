"""What the extension knows about the adapters in the webui's LoRA folder, and base-model checks.

An adapter folder made by the bundle carries a training record (`spanish_ft_record.json`,
fields in training/adapters/record.py): its family, task, instruction template, preset and the shape
of the base model it was trained on. Folders without a record (adapters from other tools)
are still listed, with those fields empty, so the multi-adapter guard can see them.
`check_base_model` compares an adapter with the loaded model's config and says, in Spanish,
which base model to load when they do not match. No webui needed:

    infos, problems = scan_adapters(Path("user_data/loras"))
    check_base_model(infos["llama2-fusionado"], {"model_type": "mistral", "hidden_size": 4096, ...})
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from training.adapters.folder import CONFIG_NAME, AdapterError, base_model_of, read_adapter_config
from training.adapters.record import read_record
from training.families import FAMILIES, family_of_model_type

SHAPE_KEYS = ("hidden_size", "num_hidden_layers", "vocab_size")
SHAPE_LABELS = {"hidden_size": "hidden_size", "num_hidden_layers": "número de capas",
                "vocab_size": "tamaño del vocabulario"}


@dataclass(frozen=True)
class AdapterInfo:
    """One adapter folder of the LoRA menu; record fields are None for adapters made elsewhere."""

    name: str  # the folder name, as the LoRA menu shows it
    path: Path
    rank: int | None  # adapter_config.json `r`
    has_record: bool = False
    family: str | None = None
    task: str | None = None
    template: str | None = None  # instruction template name (file stem in instruction-templates/)
    preset: str | None = None  # preset name (file stem in presets/)
    base_model: str | None = None
    base_shape: dict = field(default_factory=dict)
    sources: tuple[str, ...] = ()  # names of the adapters a fused adapter was made from
    fuentes_k: int | None = None  # articles per question it was trained with (dataset.retrieval.k), if any


def read_adapter_info(path: Path) -> AdapterInfo:
    """The adapter folder's info; raises ValueError naming the file when its config is refused or unreadable.

    adapter_config.json is read through the bundle's door (training/adapters/folder.py): unknown
    fields, wrong types and fields that would make PEFT import a package are refused.
    """
    try:
        config = read_adapter_config(path)
    except (OSError, AdapterError) as err:
        raise ValueError(f"«{path.name}»: configuración del adaptador rechazada: {err}") from err
    record = read_record(path)
    if record is None:
        return AdapterInfo(path.name, path, config.get("r"))
    return AdapterInfo(
        name=path.name, path=path, rank=config.get("r"), has_record=True, family=record.family,
        task=record.task, template=record.template_name, preset=record.preset,
        base_model=base_model_of(config, record)[0],
        base_shape=record.base_shape or {},
        sources=tuple(Path(s.get("name") or s.get("path", "")).name for s in record.sources),
        fuentes_k=record.fuentes_k,
    )


def scan_adapters(lora_dir: Path) -> tuple[dict[str, AdapterInfo], list[str]]:
    """({name: info} for every adapter folder in lora_dir, [problems with unreadable folders])."""
    infos, problems = {}, []
    if not lora_dir.is_dir():
        return infos, [f"la carpeta de adaptadores {lora_dir} no existe"]
    for path in sorted(p for p in lora_dir.iterdir() if (p / CONFIG_NAME).is_file()):
        try:
            infos[path.name] = read_adapter_info(path)
        except ValueError as err:
            problems.append(str(err))
    return infos, problems


def model_family(config: dict) -> str | None:
    """The bundle family of a loaded model's config (`model_type`), or None if not one of ours."""
    return family_of_model_type(config.get("model_type"))


def _fix(info: AdapterInfo) -> str:
    family = FAMILIES.get(info.family or "")
    shape = ", ".join(f"{SHAPE_LABELS[k]} {info.base_shape[k]}" for k in SHAPE_KEYS if k in info.base_shape)
    model = f"«{info.base_model}»" if info.base_model else "su modelo base"
    other = f" u otro {family.architecture} con {shape}" if family and shape else ""
    return f"Solución: carga {model}{other} en la pestaña Model y vuelve a aplicar el adaptador."


def check_base_model(info: AdapterInfo, config: dict, model_name: str = "cargado") -> list[str]:
    """Spanish warnings, each with the fix, when the loaded model does not fit the adapter ([] if it does)."""
    if not info.has_record:
        return []
    problems = []
    loaded_family = model_family(config)
    if info.family and loaded_family != info.family:
        kind = f"de la familia {loaded_family}" if loaded_family else "de una familia que spanish_ft no conoce"
        problems.append(
            f"El adaptador «{info.name}» es para la familia {info.family}, pero el modelo «{model_name}» es "
            f"{kind} (model_type {config.get('model_type')!r})."
        )
    for key in SHAPE_KEYS:
        expected, found = info.base_shape.get(key), config.get(key)
        if expected is not None and found is not None and expected != found:
            problems.append(
                f"El adaptador «{info.name}» se entrenó sobre un modelo con {SHAPE_LABELS[key]} {expected}; "
                f"el modelo «{model_name}» tiene {found}."
            )
    return [*problems, _fix(info)] if problems else []
