"""The training record: where an adapter (or a merged model) came from. Its one home.

Every folder the bundle writes holds `spanish_ft_record.json` beside PEFT's files. It is the
contract between train, fuse, merge, evaluate, the demo and the webui extension: they build it
only through the builders below and read it only through `TrainingRecord`.

The JSON object, by `kind` (producers leave out what is unknown):
- every kind: `format` (1), `kind`, `name`, `family` ("mistral" | "llama2" | "falcon"),
  `base_model` {"name_or_path", "revision"}, `template` {"name", "file", "sha256"},
  `preset` (webui preset name), `libraries` {package: version}, `created` (ISO time)
- "trained" (train): `task`, `base_shape` {"model_type", "hidden_size", "num_hidden_layers",
  "vocab_size"}, `dataset` {"train", "sha256", "rows_kept", ..., "replay" (optional)},
  `config` (the full resolved recipe), `metrics` {"train_loss", "eval_loss", ...},
  `stacked_on` (optional) {"path", "name", "task", "weights_sha256", "modules"}: the frozen
  adapter it was trained on top of (training/model/stacking.py)
- "fused" (fuse): `task`, `base_shape`, `sources` [{"path", "name", "sha256", "weight"}],
  `method` ("cat" | "svd"), `rank`, `error` {"relative_frobenius", "per_module"}, `metrics`
- "merged" (merge): `adapter` {"path", "name", "sha256"}, `dtype`, `dequantized_nf4`
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from training.families import FAMILIES, family_of_model_type
from training.files import write_json_atomic
from training.userdata import read_json

RECORD_NAME = "spanish_ft_record.json"
RECORD_FORMAT = 1
KINDS = ("trained", "fused", "merged")
BASE_SHAPE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")
RECORD_MAX_BYTES = 64 << 20  # a fused record lists an error per module: a few hundred KB for a 70B model


def _maybe(kind: str, **keywords) -> dict:
    """A JSON Schema for `kind` or null, with `keywords` (properties, items, ...)."""
    return {"type": [kind, "null"], **keywords}


_TEXT = _maybe("string")
_FILE = _maybe("object", properties={"path": _TEXT, "name": _TEXT, "sha256": _TEXT})
_ROWS = _maybe("object", properties={"train": _TEXT, "sha256": _TEXT, "sha256_of": _TEXT})
# Every key the readers below and their callers look into, with its shape; none is required (producers
# leave out what is unknown) and other keys are kept. Checked by training/userdata.py when read.
RECORD_SCHEMA = {"type": "object", "properties": {
    "format": {"type": "integer"}, "kind": {"enum": [*KINDS, None]}, "family": {"enum": [*FAMILIES, None]},
    **dict.fromkeys(("name", "task", "preset", "created", "dtype"), _TEXT),
    "base_model": _maybe("object", properties={"name_or_path": _TEXT, "revision": _TEXT}),
    "template": _maybe("object", properties={"name": _TEXT, "file": _TEXT, "sha256": _TEXT}),
    "libraries": _maybe("object", additionalProperties={"type": "string"}),
    "base_shape": _maybe("object", properties={"model_type": _TEXT, **dict.fromkeys(BASE_SHAPE_KEYS[1:],
                                                                                   _maybe("integer"))}),
    "dataset": _maybe("object", properties={**_ROWS["properties"], "replay": _ROWS,
                                            "retrieval": _maybe("object", properties={"k": _maybe("integer")})}),
    "fuentes": _maybe("object", properties={"k": _maybe("integer")}),
    "config": _maybe("object", properties={**dict.fromkeys(("lora", "quantization", "training"), _maybe("object")),
                                           "dataset": _maybe("object", properties={"replay": _maybe("object")})}),
    "metrics": _maybe("object"),
    "stacked_on": _maybe("object", properties={"path": _TEXT, "name": _TEXT, "task": _TEXT,
                                               "weights_sha256": _TEXT}),
    "sources": _maybe("array", items={**_FILE, "type": "object",
                                      "properties": {**_FILE["properties"], "weight": _maybe("number")}}),
    "method": {"enum": ["cat", "svd"]}, "rank": _maybe("integer"),
    "error": _maybe("object", properties={"relative_frobenius": _maybe("number"), "per_module": _maybe("object")}),
    "adapter": _FILE, "dequantized_nf4": _maybe("boolean"),
}}


@dataclass(frozen=True)
class TrainingRecord:
    """A record as read or built; `data` is the JSON object itself (keys this code does not know are kept)."""

    data: dict = field(default_factory=dict)

    @property
    def exists(self) -> bool:
        return bool(self.data)

    @property
    def kind(self) -> str | None:
        return self.data.get("kind")

    @property
    def name(self) -> str | None:
        return self.data.get("name")

    @property
    def task(self) -> str | None:
        return self.data.get("task")

    @property
    def preset(self) -> str | None:
        return self.data.get("preset")

    @property
    def base_shape(self) -> dict | None:
        return self.data.get("base_shape")

    @property
    def family(self) -> str | None:
        """The recorded family, else the one the base model's architecture implies."""
        return self.data.get("family") or family_of_model_type((self.base_shape or {}).get("model_type"))

    @property
    def base_model(self) -> str | None:
        return (self.data.get("base_model") or {}).get("name_or_path")

    @property
    def base_revision(self) -> str | None:
        return (self.data.get("base_model") or {}).get("revision")

    @property
    def template(self) -> dict | None:
        """{"name", "file", "sha256"} of the instruction template the adapter was trained with."""
        return self.data.get("template")

    @property
    def template_name(self) -> str | None:
        return (self.template or {}).get("name")

    @property
    def template_file(self) -> str | None:
        return (self.template or {}).get("file")

    @property
    def dataset(self) -> dict:
        return self.data.get("dataset") or {}

    @property
    def config(self) -> dict:
        """The resolved recipe a trained adapter was made with."""
        return self.data.get("config") or {}

    @property
    def metrics(self) -> dict:
        return self.data.get("metrics") or {}

    @property
    def fuentes_k(self) -> int | None:
        """Articles per question the adapter learned to read in its prompt (Fuentes): a trained adapter's
        dataset.retrieval.k, kept by the fused and merged ones as `fuentes`; None if it never saw any."""
        value = (self.dataset.get("retrieval") or {}).get("k") or (self.data.get("fuentes") or {}).get("k")
        return value if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 8 else None

    @property
    def stacked_on(self) -> dict | None:
        return self.data.get("stacked_on")

    @property
    def sources(self) -> list[dict]:
        """A fused adapter's sources: [{"path", "name", "sha256", "weight"}]."""
        return list(self.data.get("sources") or ())

    @property
    def method(self) -> str:
        return self.data.get("method", "cat")

    @property
    def rank(self) -> int | None:
        return self.data.get("rank")

    @property
    def relative_error(self) -> float | None:
        return (self.data.get("error") or {}).get("relative_frobenius")


def read_record(folder: str | Path) -> TrainingRecord | None:
    """The record of an adapter or model folder, or None for folders made by other tools.

    Checked against RECORD_SCHEMA first: a record of the wrong shape raises UserFileError (a ValueError)
    naming the file and every key that is wrong.
    """
    path = Path(folder) / RECORD_NAME
    if not path.is_file():
        return None
    return TrainingRecord(read_json(path, RECORD_SCHEMA, "training record", max_bytes=RECORD_MAX_BYTES))


def write_record(folder: str | Path, record: TrainingRecord) -> None:
    write_json_atomic(Path(folder) / RECORD_NAME, record.data)


def _common_fields(kind: str, name: str, family: str | None, base_model: str | None, revision: str | None,
                   template: dict | None, preset: str | None) -> dict:
    return {
        "format": RECORD_FORMAT,
        "kind": kind,
        "name": name,
        "family": family,
        "base_model": {"name_or_path": base_model, "revision": revision},
        "template": template,
        "preset": preset,
    }


def _stamped(fields: dict, keep_empty: bool = False) -> TrainingRecord:
    """The record of `fields` with library versions and creation time; unknown (None) fields left out unless kept."""
    fields = {**fields, "libraries": library_versions(), "created": datetime.now(UTC).isoformat(timespec="seconds")}
    return TrainingRecord(fields if keep_empty else {key: value for key, value in fields.items() if value is not None})


def trained_record(config, template, dataset: dict, metrics: dict, base_config,
                   stacked_on: dict | None = None) -> TrainingRecord:
    """The record of a training run: `config` is the RunConfig, `template` the loaded template."""
    fields = _common_fields(
        "trained", config.name, config.model.family, config.model.base_model,
        config.model.revision or getattr(base_config, "_commit_hash", None),
        {"name": template.name, "file": config.template, "sha256": template.sha256}, config.preset,
    )
    fields |= {
        "task": config.task,
        "base_shape": {key: getattr(base_config, key, None) for key in BASE_SHAPE_KEYS},
        "dataset": dataset,
        "config": config.as_dict(),
        "metrics": metrics,
    }
    if stacked_on is not None:
        fields["stacked_on"] = stacked_on
    return _stamped(fields, keep_empty=True)  # a trained record keeps its empty keys (revision unknown, say)


def fused_record(name: str, sources: list[tuple[TrainingRecord, dict]], weights: list[float], method: str,
                 rank: int, errors: dict, overall: float, template: dict | None,
                 base: tuple[str | None, str | None]) -> TrainingRecord:
    """The record of a fusion; `sources` pairs each source's record with {"path", "name", "sha256"}."""
    records = [record for record, _ in sources]
    fields = _common_fields("fused", name, _shared_value(r.family for r in records), base[0], base[1], template,
                            _shared_value(r.preset for r in records))
    fields |= {
        "task": _shared_value(r.task for r in records) or "fusionado",
        "base_shape": _shared_value(r.base_shape for r in records),
        "sources": [{**entry, "weight": weight} for (_, entry), weight in zip(sources, weights, strict=True)],
        "method": method,
        "rank": rank,
        "error": {"relative_frobenius": overall, "per_module": errors},
        "metrics": {"fused_rank": rank, "relative_error": overall},
    }
    ks = [r.fuentes_k for r in records if r.fuentes_k]
    if ks:  # a source learned to read Fuentes: the fused adapter is used with them, as many as it read
        fields["fuentes"] = {"k": max(ks)}
    return _stamped(fields)


def merged_record(name: str, adapter: TrainingRecord, base_model: str, adapter_entry: dict, dtype: str,
                  dequantized_nf4: bool) -> TrainingRecord:
    """The record of a model folder made by folding `adapter` into its base."""
    fields = _common_fields("merged", name, adapter.data.get("family"), base_model, adapter.base_revision,
                            adapter.template, adapter.preset)
    fields |= {"adapter": adapter_entry, "dtype": dtype, "dequantized_nf4": dequantized_nf4}
    if adapter.fuentes_k:
        fields["fuentes"] = {"k": adapter.fuentes_k}
    return _stamped(fields)


def _shared_value(values):
    """The one value all non-None values share, else None."""
    distinct = {repr(value): value for value in values if value is not None}
    return next(iter(distinct.values())) if len(distinct) == 1 else None


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape an adapter, for the training record."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "trl", "datasets"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out
