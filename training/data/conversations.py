"""Training rows -> conversations (lists of messages) -> encoded rows with answer-only labels.

Formats (extra fields such as `id`, `category`, `fuente` are ignored):
- alpaca:   {"instruction", "input" (optional), "output"}; a non-empty input follows the
            instruction after a blank line; one user turn and one answer.
- messages: {"messages": [{"role": system|user|assistant, "content"}, ...]}
- sharegpt: {"conversations": [{"from": human|gpt|system, "value"}, ...]}
- text:     {"text"}; the whole text is trained.
A conversation needs a user turn before its first answer (an answer to nothing teaches
nothing the webui will ask). Conversations are rendered with the recipe's instruction
template (the webui's prompt) and every assistant turn is trained. Every problem with a row
is a RowError; the caller adds the file and line.
"""

from __future__ import annotations

from training.data.read import RowError
from training.data.tokens import BoundaryError, Encoded, encode_segments, encode_text
from training.safeyaml import shown
from training.templates import InstructionTemplate, TemplateFileError

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
MESSAGE_ROLES = {"user": "user", "assistant": "assistant", "system": "system"}


def to_conversation(row: object, data_format: str) -> list[dict] | str:
    """One row as a list of messages (or a plain text for `text`); RowError says what is wrong."""
    if not isinstance(row, dict):
        raise RowError(f"expected an object with named fields, found {type(row).__name__}")
    if data_format == "text":
        return _field(row, "text", "the text to train on")
    if data_format == "alpaca":
        instruction = _field(row, "instruction", "instruction")
        extra = "" if row.get("input") is None else row["input"]
        if not isinstance(extra, str):
            raise RowError(f"field 'input' must be text, found {type(extra).__name__}")
        prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": _field(row, "output", "answer")}]
    key, role_key, text_key, roles = (
        ("messages", "role", "content", MESSAGE_ROLES)
        if data_format == "messages"
        else ("conversations", "from", "value", SHAREGPT_ROLES)
    )
    turns = row.get(key)
    if not isinstance(turns, list) or not turns:
        raise RowError(
            f"missing field '{key}' (a non-empty list of turns)"
            if turns is None
            else f"field '{key}' must be a non-empty list"
        )
    messages = []
    for number, turn in enumerate(turns, start=1):
        where = f"{key}[{number}]"
        if not isinstance(turn, dict) or turn.get(role_key) not in roles:
            found = turn.get(role_key) if isinstance(turn, dict) else turn
            raise RowError(f"{where}.{role_key} is {shown(found)}; allowed: {', '.join(roles)}")
        role = roles[turn[role_key]]
        content = _field(turn, text_key, "answer" if role == "assistant" else "", where=f"{where}.")
        messages.append({"role": role, "content": content})
    roles_in_order = [message["role"] for message in messages]
    if "assistant" not in roles_in_order:
        raise RowError(f"'{key}' has no assistant turn to learn from")
    first_answer = roles_in_order.index("assistant")
    if "user" not in roles_in_order[:first_answer]:
        raise RowError(f"{key}[{first_answer + 1}] is an assistant answer with no user turn before it; "
                       "a conversation starts with the user's message (after an optional system message)")
    return messages


def _field(row: dict, key: str, what: str, where: str = "") -> str:
    value = row.get(key)
    if value is None:
        raise RowError(f"missing field '{where}{key}'")
    if not isinstance(value, str):
        raise RowError(f"field '{where}{key}' must be text, found {type(value).__name__}")
    if what and not value.strip():
        raise RowError(f"empty {what} in '{where}{key}'")
    return value


def encode_row(row: object, data_format: str, tokenizer, template: InstructionTemplate, ground=None) -> Encoded:
    """Token ids with answer-only labels; RowError for a row that cannot be trained as the webui prompts.

    `ground(row, conversation) -> conversation`, when given, rewrites the conversation first (the law
    articles of dataset.retrieval in the user's turn: training/retrieval/fuentes.py, passed by train.py).
    """
    conversation = to_conversation(row, data_format)
    if isinstance(conversation, str):
        return encode_text(tokenizer, conversation)
    if ground is not None:
        conversation = ground(row, conversation)
    try:
        encoded = encode_segments(tokenizer, template.split(conversation))
    except (BoundaryError, TemplateFileError) as err:  # e.g. a template's raise_exception on this conversation
        raise RowError(str(err)) from err
    if encoded.trained_tokens == 0:
        raise RowError("no answer token left to learn after masking the prompt")
    return encoded
