"""Command line of the bundle: `python -m training COMMAND --help` explains each command.

Each command lives in the module named after what it does; that module exposes
`add_arguments(parser)` and `run(args) -> int`. Modules are imported only when their
command runs, so `render` works without torch installed.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module, one-line help)
COMMANDS = {
    "render": ("training.cli_render", "print the exact prompt the webui builds for a conversation"),
    "train": ("training.train", "train one LoRA adapter with QLoRA from a recipe YAML"),
    "fuse": ("training.fuse", "fuse several LoRA adapters into one (exact by default)"),
    "merge": ("training.merge", "fold an adapter into a 16-bit copy of its base model"),
    "evaluate": ("training.evaluate", "compare the base model and adapters on held-out data"),
    "memory": ("training.memory", "estimate memory for inference and training from a model config"),
    "fetch-demo-model": ("training.demo_model", "write the CPU demo model (SmolLM2-135M) as an HF folder"),
    "demo": ("training.demo", "the CPU demo: demo model, adapters, evaluation, webui install"),
    "validate-data": ("training.validate_data", "check the shipped datasets (format, duplicates, citations)"),
}


class UserError(Exception):
    """An error the user can fix; printed without a traceback."""


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="spanish_ft: train, fuse, merge and evaluate Spanish LoRA adapters for text-generation-webui.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    requested = sys.argv[1] if len(sys.argv) > 1 else None
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == requested:  # import only the module of the command that runs
            module = importlib.import_module(module_name)
            module.add_arguments(command_parser)
            modules[name] = module
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    parser, modules = build_parser()
    args = parser.parse_args()
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return modules[args.command].run(args) or 0
    except (UserError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: nothing half-written was left behind", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
