"""Command line of the bundle: `python -m training COMMAND --help` explains each command.

Each command lives in a module (or package) named after it, and no module is named after a command it
does not run (tests/test_names.py; `render` is what templates.py does). That module exposes
`add_arguments(parser)` and `run(args) -> int`; an artefact command's `run` builds its one settings
object from the arguments (`...Settings.from_args`). The webui extension runs `export-gguf` through
this table too: install.py copies this file beside it. Only the module of the command that runs is
imported, so `render`, `memory` and `validate-data` work without torch installed.

Exit codes: 0 done, 1 refused or failed (the message says what, where and how to fix it),
2 usage, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM). An interrupted command leaves
nothing half-written; `train` saves a checkpoint first (training/trainer/interrupt.py).

Errors are printed as `error: ...`, never as a traceback: our refusals as they are, a failure
of the file system with its file, the operation and the likely cause (training/files.py:
user_message). Only a bug of ours prints a traceback, and says that it is one.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import traceback

# command -> (module, one-line help)
COMMANDS = {
    "render": ("training.templates", "print the exact prompt the webui builds for a conversation"),
    "train": ("training.train", "train one LoRA adapter with QLoRA from a recipe YAML"),
    "fuse": ("training.adapters.fuse", "fuse several LoRA adapters into one (exact by default)"),
    "merge": ("training.adapters.merge", "fold an adapter into a 16-bit copy of its base model"),
    "build-llama-cpp": ("training.adapters.gguf.llamacpp", "build llama.cpp's llama-quantize and llama-server"),
    "export-gguf": ("training.adapters.gguf.export", "export an adapter merged into its base as a GGUF file"),
    "evaluate": ("training.evaluate.evaluate", "compare the base model and adapters on held-out data"),
    "memory": ("training.memory.report", "estimate memory for inference and training from a model config"),
    "fetch-demo-model": ("training.demo.model", "write the CPU demo model (Gemma-3-270M) as an HF folder"),
    "demo": ("training.demo.demo", "the CPU demo: demo model, adapters, evaluation, webui install"),
    "pipeline": ("training.pipeline.pipeline",
                 "one family end to end: plan, train both adapters, fuse, evaluate, install"),
    "compare": ("training.evaluate.compare", "one report across families from their pipeline runs, no retraining"),
    "validate-data": ("training.datasets.validate", "check the shipped datasets (format, duplicates, citations)"),
    "derive-questions": ("training.datasets.derive", "add article-named questions to a leyes-ec dataset folder"),
    "corpus": ("training.datasets.corpus.build", "build the law corpus (one JSONL row per article) from a norm's PDF"),
    "retrieve": ("training.retrieval.retrieve", "the law articles (corpus) that answer a Spanish legal question"),
}

# Inputs read before a command's module is imported: they are light to check, the module is not
# (training.train loads torch, ~5 s and ~500 MB), so a bad recipe is refused at once.
EARLY_CHECKS = {"train": "training.config:check_recipe_arguments"}


def check_early(argv: list[str]) -> None:
    """Run the command's early check, if it has one (not for --help); raises ValueError on bad input."""
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    if command not in EARLY_CHECKS or {"-h", "--help"} & set(argv):
        return
    module_name, _, function = EARLY_CHECKS[command].partition(":")
    getattr(importlib.import_module(module_name), function)(argv[argv.index(command) + 1:])


def build_parser(command: str | None) -> argparse.ArgumentParser:
    """The parser of every command; only `command`'s module is imported to add its arguments."""
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="spanish_ft: train, fuse, merge and evaluate Spanish LoRA adapters for text-generation-webui.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            command_parser.set_defaults(module=importlib.import_module(module_name))
            command_parser.get_default("module").add_arguments(command_parser)
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    return build_parser(command if command in COMMANDS else None).parse_args(argv)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that cleanup (temporary folders, locks) runs."""

    exit_code = 128 + signal.SIGTERM.value


def _terminate(signum, frame):
    raise Terminated()


def report_error(err: Exception) -> int:
    """Print `err` for the user (exit 1): its message, or for a bug of ours the traceback named as one."""
    from training.files import user_message  # light: no torch

    message = user_message(err)
    if message is None:
        traceback.print_exception(err)
        message = (f"this is a bug in spanish_ft ({type(err).__name__}: {err}), not a problem with your input: "
                   "please report it with the traceback above")
    print(f"error: {message}", file=sys.stderr)
    return 1


def _not_a_hub_kernel_notice(record: logging.LogRecord) -> bool:
    """bitsandbytes >= 0.50 on a CPU with AVX512-BF16, where the `kernels` package is installed,
    asks the Hugging Face Hub for a CPU 4-bit kernel when imported; offline, or for a publisher it
    cannot verify, it warns and keeps its own kernel (what the bundle measures and tests). The
    warning proposes trust_remote_code, which the bundle never sets: it is dropped."""
    return "kernels-community" not in record.getMessage()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_not_a_hub_kernel_notice)
    try:
        check_early(argv)
        args = parse_args(argv)  # imports the command's module: a missing package is reported, not a traceback
    except Exception as err:
        return report_error(err)
    if args.command is None:
        build_parser(None).print_help()
        return 2
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.module.run(args) or 0
    except KeyboardInterrupt as err:  # Ctrl-C, SIGTERM, or training's checkpoint-then-stop
        print(f"interrupted: {str(err) or 'nothing half-written was left behind'}", file=sys.stderr)
        return getattr(err, "exit_code", 130)
    except Exception as err:  # refusals, bad input, files it cannot read or write; a bug is named as one
        return report_error(err)
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
