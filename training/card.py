"""The training record's fields, and the model card (README.md, HF-hub style) made from it.

The record (`spanish_ft_record.json`) is a JSON object with these keys; producers fill what
applies and the extension and the fuser read them:

- `format`: 1
- `kind`: "trained" | "fused"
- `name`, `family` ("mistral" | "llama2" | "falcon"), `task` ("instrucciones" | "leyes-ec" | "fusionado" | ...)
- `base_model`: {"name_or_path", "revision"}
- `base_shape`: {"model_type", "hidden_size", "num_hidden_layers", "vocab_size"}
- `template`: {"name", "file", "sha256"};  `preset`: webui preset name
- `dataset`: {"train", "sha256", "rows_kept", "rows_skipped", "rows_dropped", ..., "replay" (optional):
  {"train", "sha256", "rows", ...}}
- `stacked_on` (optional): {"path", "name", "task", "weights_sha256", "modules"}: the frozen adapter
  this one was trained on top of (training/stacking.py)
- `config`: the full resolved recipe;  `metrics`: {"train_loss", "eval_loss", "tokens_trained", "wall_time_s", ...}
- `sources` (fused): [{"path", "sha256", "weight", "name"}];  `method`, `error` (fused)
- `libraries`: {package: version};  `created`: ISO time
"""

from __future__ import annotations

RECORD_FORMAT = 1


def _metrics_table(metrics: dict) -> str:
    if not metrics:
        return "_No metrics recorded._\n"
    rows = "".join(f"| {key} | {value} |\n" for key, value in metrics.items())
    return "| metric | value |\n| --- | --- |\n" + rows


def _origin(record: dict) -> str:
    if record.get("kind") != "fused":
        dataset = record.get("dataset") or {}
        text = f"Trained with QLoRA on `{dataset.get('train', '?')}`"
        if dataset.get("replay"):
            text += f" plus {dataset['replay'].get('rows')} rows of `{dataset['replay'].get('train')}`"
        stacked = record.get("stacked_on")
        if stacked:
            text += (f", on top of the frozen adapter `{stacked.get('name')}`: fused with it (exact `cat`), "
                     "the pair is exactly the trained model")
        return text + "."
    sources = ", ".join(f"`{s.get('name', s.get('path'))}` (weight {s.get('weight')})" for s in record.get("sources", []))
    if record.get("method", "cat") == "cat":
        return f"Fused exactly (rank concatenation) from: {sources}."
    error = (record.get("error") or {}).get("relative_frobenius")
    return f"Fused by SVD to rank {record.get('rank')} (relative error of the delta {error}) from: {sources}."


def render_model_card(record: dict) -> str:
    """A README.md for an adapter folder, from its training record."""
    base = (record.get("base_model") or {}).get("name_or_path", "unknown")
    template = (record.get("template") or {}).get("name", "?")
    preset = record.get("preset") or template
    task = record.get("task", "?")
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

# {record.get('name', 'adapter')}

**Español.** Adaptador LoRA de spanish_ft para `{base}` (familia `{record.get('family', '?')}`, tarea `{task}`).
En text-generation-webui: elige este adaptador en el menú LoRA de la pestaña Model, usa el modo
*instruct* con la plantilla `{template}` y el preset `{preset}`.
Las respuestas sobre leyes ecuatorianas no son asesoría legal.

**English.** A spanish_ft LoRA adapter for `{base}` (family `{record.get('family', '?')}`, task `{task}`).
In the webui: pick it in the Model tab's LoRA menu, chat in instruct mode with template `{template}`
and preset `{preset}`. {origin}

## Metrics

{_metrics_table(record.get('metrics', {}))}
## Provenance

The full record (base model and revision, template sha256, dataset sha256, configuration,
library versions) is in `spanish_ft_record.json` beside this card.
"""
