"""The model card (README.md, HF-hub style) of an adapter folder, made from its training record."""

from __future__ import annotations

from pathlib import Path

from training.adapters.record import RECORD_NAME, TrainingRecord
from training.families import notice_of

NOTICE_NAME = "NOTICE"


def _metrics_table(metrics: dict) -> str:
    if not metrics:
        return "_No metrics recorded._\n"
    rows = "".join(f"| {key} | {value} |\n" for key, value in metrics.items())
    return "| metric | value |\n| --- | --- |\n" + rows


def _origin(record: TrainingRecord) -> str:
    if record.kind != "fused":
        dataset = record.dataset
        text = f"Trained with QLoRA on `{dataset.get('train', '?')}`"
        if dataset.get("replay"):
            text += f" plus {dataset['replay'].get('rows')} rows of `{dataset['replay'].get('train')}`"
        stacked = record.stacked_on
        if stacked:
            text += (f", on top of the frozen adapter `{stacked.get('name')}`: fused with it (exact `cat`), "
                     "the pair is exactly the trained model")
        return text + "."
    sources = ", ".join(f"`{s.get('name', s.get('path'))}` (weight {s.get('weight')})" for s in record.sources)
    if record.method == "cat":
        return f"Fused exactly (rank concatenation) from: {sources}."
    error = record.relative_error
    return f"Fused by SVD to rank {record.rank} (relative error of the delta {error}) from: {sources}."


def render_model_card(record: TrainingRecord) -> str:
    """A README.md for an adapter folder, from its training record."""
    base = record.base_model or "unknown"
    template = record.template_name or "?"
    preset = record.preset or template
    task = record.task or "?"
    origin = _origin(record)
    return f"""---
base_model: {base}
library_name: peft
language:
- es
tags:
- lora
- spanish_ft
- {task}
---

# {record.name or 'adapter'}

**Español.** Adaptador LoRA de spanish_ft para `{base}` (familia `{record.family or '?'}`, tarea `{task}`).
En text-generation-webui: elige este adaptador en el menú LoRA de la pestaña Model, usa el modo
*instruct* con la plantilla `{template}` y el preset `{preset}`.
Las respuestas sobre leyes ecuatorianas no son asesoría legal.

**English.** A spanish_ft LoRA adapter for `{base}` (family `{record.family or '?'}`, task `{task}`).
In the webui: pick it in the Model tab's LoRA menu, chat in instruct mode with template `{template}`
and preset `{preset}`. {origin}

## Metrics

{_metrics_table(record.metrics)}
## Provenance

The full record (base model and revision, template sha256, dataset sha256, configuration,
library versions) is in `{RECORD_NAME}` beside this card.
{_licence(record)}"""


def _licence(record: TrainingRecord) -> str:
    notice = notice_of(record.family)
    if not notice:
        return ""
    return (f"\n## Licence\n\n**Español.** Se aplican los términos de licencia del modelo base; "
            f"ver `{NOTICE_NAME}`.\n\n"
            f"**English.** {notice}See `{NOTICE_NAME}` in this folder.\n")


def write_card(folder: Path, record: TrainingRecord) -> None:
    """README.md from the record, and NOTICE when the base model's licence asks every derived file to carry one."""
    (Path(folder) / "README.md").write_text(render_model_card(record), encoding="utf-8")
    write_notice(folder, record.family)


def write_notice(folder: Path, family: str | None) -> None:
    notice = notice_of(family)
    if notice:
        (Path(folder) / NOTICE_NAME).write_text(notice, encoding="utf-8")
