"""The webui-identical prompt renderer: one prompt format, one file.

An instruction template is a webui YAML file (`instruction_template: |-` holding Jinja).
This module renders it exactly as text-generation-webui does in instruct mode
(modules/chat.py: a sandboxed Jinja environment with trim_blocks, lstrip_blocks and
loopcontrols, the same globals, the same keyword arguments, message contents stripped),
and splits a conversation into prompt and answer segments for training, so that the
training text is byte-identical to what the webui sends to the model. The environment is the
webui's with bounds (training/sandbox.py): a template that would render a huge prompt or loop for
too long is refused, naming the template file, instead of exhausting memory; the YAML file and a
CONVERSATION.json are checked against their schemas by training/userdata.py first.

CLI: python -m training render TEMPLATE.yaml CONVERSATION.json [--generation-prompt]
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path

import markupsafe
from jinja2.exceptions import TemplateError
from jinja2.ext import loopcontrols

from training.safeyaml import shown
from training.sandbox import BoundedEnvironment, render_bounded
from training.userdata import UserFileError, read_json, read_yaml

ROLES = ("system", "user", "assistant")
TEMPLATE_MAX_BYTES = 1 << 20  # the webui's own templates are 1 to 3 KB
# the webui reads `instruction_template` and ignores other keys
TEMPLATE_SCHEMA = {"type": "object", "required": ["instruction_template"],
                   "properties": {"instruction_template": {"type": "string"}}}
# CONVERSATION.json of the `render` command (normalize_messages names the message when a role is wrong)
CONVERSATION_SCHEMA = {"type": "array", "items": {"type": "object", "required": ["role", "content"],
                                                  "properties": {"role": {"enum": list(ROLES)},
                                                                 "content": {"type": "string"}}}}

# What the webui passes to an instruction template besides `messages`
# (modules/chat.py generate_chat_prompt, with a fresh UI state and no tools).
# bos/eos are the webui's defaults; our templates spell special tokens literally.
WEBUI_RENDER_KWARGS = {
    "builtin_tools": None,
    "tools": None,
    "tools_in_user_message": False,
    "enable_thinking": True,
    "thinking": True,
    "reasoning_effort": "medium",
    "preserve_thinking": False,
    "thinking_budget": -1,
    "bos_token": "<s>",
    "eos_token": "</s>",
}


class TemplateFileError(ValueError):
    """A template file or a conversation that cannot be rendered; the message names it."""


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _raise_exception(message: str):
    raise ValueError(message)


def _tojson(value, indent=None, ensure_ascii=True):
    return markupsafe.Markup(json.dumps(value, indent=indent, ensure_ascii=ensure_ascii))


def make_webui_environment() -> BoundedEnvironment:
    """A Jinja environment configured as the webui's instruct-mode one, with bounds on size and time."""
    env = BoundedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["strftime_now"] = _strftime_now
    env.globals["raise_exception"] = _raise_exception
    return env


@dataclass(frozen=True)
class Segment:
    """A piece of the rendered conversation; `trained` pieces carry the loss."""

    text: str
    trained: bool


@dataclass(frozen=True)
class InstructionTemplate:
    """One webui instruction template, loaded from its YAML file."""

    path: Path
    source: str
    sha256: str

    @property
    def name(self) -> str:
        """The name the webui shows in its template menu (the file stem)."""
        return self.path.stem

    @cached_property
    def _compiled(self):
        try:
            return make_webui_environment().from_string(self.source)
        except TemplateError as err:
            line = getattr(err, "lineno", None)
            where = f" (line {line} of the template)" if line else ""
            raise TemplateFileError(f"{self.path}: the Jinja template does not compile{where}: {err}") from err
        except (RecursionError, MemoryError) as err:  # expressions nested thousands deep
            raise TemplateFileError(f"{self.path}: the Jinja template is nested too deeply to compile "
                                    f"({type(err).__name__})") from None

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        """Render messages as the webui does in instruct mode."""
        clean = normalize_messages(messages, where=str(self.path))
        try:
            return render_bounded(self._compiled, messages=clean, add_generation_prompt=add_generation_prompt,
                                  **WEBUI_RENDER_KWARGS)
        except (TemplateError, ValueError) as err:  # ValueError: the template's raise_exception
            raise TemplateFileError(f"{self.path}: rendering failed: {err}") from None
        except RecursionError:
            raise TemplateFileError(f"{self.path}: rendering failed: a macro or loop recurses too deeply") from None
        except Exception as err:  # the template's own code failed (1/0, a method on the wrong type, ...)
            raise TemplateFileError(f"{self.path}: rendering failed: {type(err).__name__}: {err}") from None

    def split(self, messages: list[dict]) -> list[Segment]:
        """Split a conversation into prompt and answer segments.

        Every assistant turn is an answer: the text the webui's prompt (all earlier
        messages plus the generation prompt) is followed by when that turn is appended.
        The concatenation of the segments equals `render(messages)`.
        """
        clean = normalize_messages(messages, where=str(self.path))
        segments: list[Segment] = []
        done = ""
        for i, message in enumerate(clean):
            if message["role"] != "assistant":
                continue
            prompt = self.render(clean[:i], add_generation_prompt=True)
            full = self.render(clean[: i + 1])
            if not prompt.startswith(done) or not full.startswith(prompt):
                raise TemplateFileError(
                    f"{self.path}: the template is not prefix-stable at message {i + 1}: the prompt the "
                    "webui sends before an answer must be a prefix of the conversation with that answer"
                )
            segments.append(Segment(prompt[len(done):], trained=False))
            segments.append(Segment(full[len(prompt):], trained=True))
            done = full
        rest = self.render(clean)
        if not rest.startswith(done):
            raise TemplateFileError(f"{self.path}: the template is not prefix-stable at the end of the conversation")
        if len(rest) > len(done):
            segments.append(Segment(rest[len(done):], trained=False))
        return [s for s in segments if s.text]


def load_template(path: str | Path) -> InstructionTemplate:
    """Load a webui instruction template YAML (anchors and aliases refused); errors name the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise TemplateFileError(f"{path}: instruction template not found")
    try:
        data = read_yaml(path, TEMPLATE_SCHEMA, "instruction template (webui format: `instruction_template: |-` "
                                                "followed by the Jinja template)", max_bytes=TEMPLATE_MAX_BYTES)
    except UserFileError as err:
        raise TemplateFileError(str(err)) from None
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    template = InstructionTemplate(path=path, source=data["instruction_template"], sha256=sha256)
    _ = template._compiled  # compile now so a broken template fails at load time
    return template


def normalize_messages(messages: list[dict], where: str = "conversation") -> list[dict]:
    """Validate messages and strip user/assistant text, as the webui does with its history."""
    if not isinstance(messages, list):
        raise TemplateFileError(f"{where}: a conversation must be a list of {{'role', 'content'}} objects")
    clean = []
    for i, message in enumerate(messages, start=1):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise TemplateFileError(f"{where}: message {i} must be an object with a string 'content'")
        role = message.get("role")
        if role not in ROLES:
            raise TemplateFileError(f"{where}: message {i} has role {shown(role)}; allowed: {', '.join(ROLES)}")
        content = message["content"] if role == "system" else message["content"].strip()
        clean.append({"role": role, "content": content})
    return clean


def load_conversation(path: str | Path) -> list[dict]:
    """Read a CONVERSATION.json file (a list of role/content objects)."""
    path = Path(path)
    if not path.is_file():
        raise TemplateFileError(f"{path}: conversation file not found")
    try:
        messages = read_json(path, CONVERSATION_SCHEMA, 'conversation (a list of {"role", "content"} objects)')
    except UserFileError as err:
        raise TemplateFileError(str(err)) from None
    return normalize_messages(messages, where=str(path))


def add_arguments(parser) -> None:
    """`python -m training render`: the exact text the webui builds, written to stdout."""
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
