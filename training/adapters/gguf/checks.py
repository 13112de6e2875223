"""The checks of `export-gguf` that need no weights, run before the base model is loaded.

In this order, so that a refusal costs seconds: the type; the output file(s) (new, or an earlier
export with --replace: record.py; writable, apart from the inputs: training/files.py);
llama-quantize for the types it makes; the adapter through the door (folder.py); its base
(merge.py: --base, the record, adapter_config.json; never a quantised checkpoint); the adapter's
family against the base's architecture; the architecture against what layout.py writes; the
tokenizer against what vocab.py writes; the instruction template for the chat template;
free disk space for the file (its size computed from the base's config on the meta device, and
the f16 file llama-quantize reads); RAM for the merge (merge.py's estimate and check).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import gguf
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from training.adapters.folder import AdapterFolder, open_adapter
from training.adapters.gguf import layout, vocab
from training.adapters.gguf.file_record import QUANTIZE_TYPES, check_output_file, check_type
from training.adapters.merge import refuse_quantized_base, require_merge_memory, resolve_base
from training.adapters.record import TrainingRecord, read_record
from training.families import FAMILIES, family_of_model_type
from training.files import GIB, OutputError, check_output, find_bundle_file, sha256_file
from training.templates import load_template

DISK_MARGIN_BYTES = 64 << 20  # metadata (a 50k-token vocabulary is a few MB) and the record


@dataclass(frozen=True, kw_only=True)
class ExportSettings:
    """What `export-gguf` makes: the adapter merged into its base, written as one GGUF file."""

    adapter: Path  # the adapter folder to merge and export
    out: Path  # the GGUF file, NAME.gguf: new, or an earlier export of ours with `replace`
    gguf_type: str = "f16"  # f16, bf16, q8_0 written directly; llama-quantize makes the others
    base: str | None = None  # base model folder or hub id (default: the adapter's, adapters/folder.py: base_model_of)
    dequantized_nf4: bool = False  # merge into the NF4 round trip of the base, as QLoRA trained against
    allow_pickle: bool = False  # accept adapter_model.bin (pickle) weights
    replace: bool = False  # `out` may be an earlier export of spanish_ft, which is replaced
    webui: Path | None = None  # also place the file (and its record) in this webui's models folder
    force: bool = False  # run even if available RAM looks too small
    template: Path | None = None  # instruction template YAML for the chat template (default: the adapter's record)

    @classmethod
    def from_args(cls, args) -> ExportSettings:
        return cls(adapter=args.adapter, out=args.out, gguf_type=args.gguf_type, base=args.base,
                   dequantized_nf4=args.dequantized_nf4, allow_pickle=args.allow_pickle, replace=args.replace,
                   webui=args.webui, force=args.force, template=args.template)

    @property
    def merge_dtype(self) -> str:
        return "bfloat16" if self.gguf_type == "bf16" else "float16"

    @property
    def written_type(self) -> str:
        """What the gguf package writes: the type itself, or the f16 file llama-quantize starts from."""
        return "f16" if self.gguf_type in QUANTIZE_TYPES else self.gguf_type


@dataclass(frozen=True)
class Inputs:
    """What the checks found, before any weights are loaded."""

    adapter: AdapterFolder
    record: TrainingRecord  # the adapter's (empty if it has none)
    base: str
    config: object  # the base's transformers config
    arch: gguf.MODEL_ARCH
    quantize: Path | None  # llama-quantize, for the types it makes
    family: str  # the adapter's, which is the base's
    adapter_sha256: str
    load_dtype: str  # the base is loaded in this dtype (the merge's, or the stored one for the NF4 round trip)
    tokenizer: object  # the adapter's own tokenizer, else the base's; checked by gguf_vocab
    chat_template: str  # the instruction template's Jinja

    @property
    def adapter_name(self) -> str:
        return self.record.name or self.adapter.path.name


def check_inputs(settings: ExportSettings) -> Inputs:
    """Every refusal that needs no weights: type, outputs, llama-quantize, adapter, base, family, disk, RAM."""
    check_type(settings.gguf_type)
    outputs = [settings.out] + ([models_folder(settings.webui) / settings.out.name] if settings.webui else [])
    local = [settings.adapter, *([settings.base] if settings.base and Path(settings.base).exists() else [])]
    for out in outputs:
        check_output_file(out, settings.replace)
        check_output(out.with_name(f".{out.name}.tmp-{os.getpid()}"), inputs=local, what="GGUF file")
    quantize = find_llama_quantize(settings.gguf_type) if settings.gguf_type in QUANTIZE_TYPES else None
    adapter = open_adapter(settings.adapter, settings.allow_pickle)
    record = read_record(adapter.path) or TrainingRecord()
    base = resolve_base(adapter, settings.base)
    config = AutoConfig.from_pretrained(base)
    refuse_quantized_base(config, base)
    check_family(adapter, record, config, base)
    arch = layout.gguf_architecture(config)
    family = record.family or family_of_model_type(config.model_type)
    tokenizer = load_tokenizer(settings.adapter, base)
    vocab.check_tokenizer(tokenizer, config.vocab_size)
    chat_template = chat_template_source(settings.template, record, family)
    check_disk(settings, config, outputs)
    load_dtype = base_load_dtype(settings, config)
    require_merge_memory(config, load_dtype, adapter, settings.force,
                         advice="close other programs, or pass --force to try anyway")
    return Inputs(adapter, record, base, config, arch, quantize, family, sha256_file(adapter.weights_file), load_dtype,
                  tokenizer, chat_template)


def base_load_dtype(settings: ExportSettings, config) -> str:
    """The merge dtype; with --dequantized-nf4 the checkpoint's own, which 4-bit loading quantised for training."""
    stored = str(getattr(config, "dtype", None) or "").removeprefix("torch.")
    return stored if settings.dequantized_nf4 and stored in ("float32", "bfloat16", "float16") else settings.merge_dtype


def load_tokenizer(adapter: Path, base: str):
    """The adapter's own tokenizer if it has one (added tokens), else the base's, as `merge` saves it."""
    return AutoTokenizer.from_pretrained(adapter if (adapter / "tokenizer_config.json").is_file() else base)


def chat_template_source(template: Path | None, record: TrainingRecord, family: str) -> str:
    """The instruction template given (--template), else the one the adapter was trained with, else its family's."""
    wanted = template or record.template_file or FAMILIES[family].template_file
    path = Path(wanted) if template else find_bundle_file(wanted)
    if path is None:
        raise ValueError(f"instruction template {wanted} (named by the adapter's record) not found in the bundle; "
                         "pass --template with the instruction template YAML to store as the chat template")
    return load_template(path).source


def find_llama_quantize(gguf_type: str) -> Path:
    from training.adapters.gguf.llamacpp import find_binary, missing_binary_help

    binary = find_binary("llama-quantize")
    if binary is None:
        raise ValueError(f"--type {gguf_type}: {missing_binary_help('llama-quantize')}")
    return binary


def check_family(adapter: AdapterFolder, record: TrainingRecord, config, base: str) -> None:
    """The adapter's family (its record) must be the base's (its config's model_type)."""
    base_family = family_of_model_type(config.model_type)
    if record.family and record.family != base_family:
        wanted = FAMILIES[record.family].architecture if record.family in FAMILIES else record.family
        raise ValueError(f"{adapter.path}: the adapter is for the {record.family} family ({wanted}) but the base "
                         f"{base} is {config.model_type!r} ({base_family or 'not a family of the bundle'}); pass "
                         f"--base with the model it was trained on ({record.base_model or 'see its record'})")


def check_disk(settings: ExportSettings, config, outputs: list[Path]) -> None:
    """Refuse when a folder that receives the file has not room for it (plus the f16 file llama-quantize reads)."""
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(config)
    written = layout.estimated_file_bytes(meta, settings.written_type) + DISK_MARGIN_BYTES
    needed = written * (2 if settings.gguf_type in QUANTIZE_TYPES else 1)  # f16 + the quantized file, at worst
    for out in outputs:
        folder = existing_ancestor(out.parent)
        free = shutil.disk_usage(folder).free
        if needed > free:
            raise OutputError(f"{out}: not enough disk space in {folder}: the export needs about {needed / GIB:.2f} "
                              f"GiB and {free / GIB:.2f} GiB is free; free some space or choose another --out")


def existing_ancestor(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def models_folder(webui: Path) -> Path:
    """The webui's models folder: user_data/models (2025 and later) or models/."""
    if not (webui / "server.py").is_file():
        raise ValueError(f"--webui {webui}: not a text-generation-webui folder (no server.py in it)")
    return webui / "user_data" / "models" if (webui / "user_data").is_dir() else webui / "models"
