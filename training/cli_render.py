"""`python -m training render`: the exact text the webui builds, written to stdout."""

from __future__ import annotations

import sys

from training.templates import load_conversation, load_template


def add_arguments(parser) -> None:
    parser.add_argument("template", help="instruction template YAML (webui format)")
    parser.add_argument("conversation", help='JSON file: a list of {"role": ..., "content": ...}')
    parser.add_argument(
        "--generation-prompt",
        action="store_true",
        help="render all messages and ask for the next answer, as the webui does before generating",
    )


def run(args) -> int:
    template = load_template(args.template)
    messages = load_conversation(args.conversation)
    sys.stdout.write(template.render(messages, add_generation_prompt=args.generation_prompt))
    sys.stdout.flush()
    return 0
