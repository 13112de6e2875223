"""Training rows -> conversations -> token ids and labels, with a count of what was kept.

Formats (extra fields such as `id`, `category`, `fuente` are ignored):
- alpaca:   {"instruction", "input" (optional), "output"}; a non-empty input follows the
            instruction after a blank line; one user turn and one answer.
- messages: {"messages": [{"role": system|user|assistant, "content"}, ...]}
- sharegpt: {"conversations": [{"from": human|gpt|system, "value"}, ...]}
- text:     {"text"}; the whole text is trained.
Conversations are rendered with the recipe's instruction template (the webui's prompt) and
every assistant turn is trained. A bad row is named with its file and place; with
`on_error: raise` all of them are listed and training stops, with `skip` they are counted.
Rows longer than `max_tokens` are dropped and counted, never cut.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from training.config import DataSettings
from training.encode import BoundaryError, Encoded, encode_segments, encode_text
from training.rows import DataError, RowError, read_source
from training.templates import InstructionTemplate

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
MESSAGE_ROLES = {"user": "user", "assistant": "assistant", "system": "system"}
MAX_LISTED = 20  # bad rows printed in full; the rest are counted


@dataclass
class SplitReport:
    source: str
    sha256: str
    hashed: str
    rows_read: int = 0
    rows_kept: int = 0
    rows_skipped: int = 0
    rows_dropped: int = 0  # longer than max_tokens
    problems: list[str] = field(default_factory=list)


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
            raise RowError(f"{where}.{role_key} is {found!r}; allowed: {', '.join(roles)}")
        role = roles[turn[role_key]]
        content = _field(turn, text_key, "answer" if role == "assistant" else "", where=f"{where}.")
        messages.append({"role": role, "content": content})
    if not any(message["role"] == "assistant" for message in messages):
        raise RowError(f"'{key}' has no assistant turn to learn from")
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


def encode_row(row: object, data_format: str, tokenizer, template: InstructionTemplate) -> Encoded:
    conversation = to_conversation(row, data_format)
    if isinstance(conversation, str):
        return encode_text(tokenizer, conversation)
    encoded = encode_segments(tokenizer, template.split(conversation))
    if encoded.trained_tokens == 0:
        raise RowError("no answer token left to learn after masking the prompt")
    return encoded


def load_split(source_name: str, settings: DataSettings, tokenizer, template) -> tuple[list[Encoded], SplitReport]:
    """Encode every usable row of one source; raise DataError per `settings.on_error`."""
    source = read_source(source_name, settings.split)
    report = SplitReport(source=source_name, sha256=source.sha256, hashed=source.hashed)
    kept: list[Encoded] = []
    for where, row in source.rows:
        report.rows_read += 1
        try:
            if isinstance(row, RowError):
                raise row
            encoded = encode_row(row, settings.format, tokenizer, template)
        except (RowError, BoundaryError) as err:
            report.problems.append(f"{source_name}, {where}: {err}")
            continue
        if len(encoded.input_ids) > settings.max_tokens:
            report.rows_dropped += 1
            continue
        kept.append(encoded)
    report.rows_kept, report.rows_skipped = len(kept), len(report.problems)
    if report.problems and settings.on_error == "raise":
        raise DataError(_problem_listing(report) + "\nfix these rows, or set dataset.on_error=skip to leave them out")
    if not kept:
        raise DataError(
            f"{source_name}: no row left to train on: {report.rows_read} read, {report.rows_skipped} bad, "
            f"{report.rows_dropped} longer than dataset.max_tokens={settings.max_tokens} (raise it to keep them)"
        )
    return kept, report


def _problem_listing(report: SplitReport) -> str:
    shown = report.problems[:MAX_LISTED]
    more = len(report.problems) - len(shown)
    tail = f"\n  ... and {more} more" if more else ""
    return f"{report.source}: {len(report.problems)} bad row(s):\n" + "\n".join(f"  {p}" for p in shown) + tail


def split_eval(rows: list[Encoded], fraction: float, seed: int) -> tuple[list[Encoded], list[Encoded]]:
    """Hold out a seeded random share of the rows; both parts keep at least one row."""
    if len(rows) < 2:
        raise DataError(f"dataset.eval_fraction={fraction} needs at least 2 usable train rows, found {len(rows)}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    count = min(len(rows) - 1, max(1, round(len(rows) * fraction)))
    held = set(order[:count])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def sample_replay(settings: DataSettings, tokenizer, template, seed: int) -> tuple[list[Encoded], dict]:
    """A seeded sample of `dataset.replay.rows` rows of another task, encoded like the train rows."""
    replay = settings.replay
    own = replace(settings, train=replay.train, format=replay.format, replay=None)
    rows, report = load_split(replay.train, own, tokenizer, template)
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    picked = [rows[i] for i in sorted(order[: replay.rows])]
    record = {
        "train": replay.train,
        "format": replay.format,
        "sha256": report.sha256,
        "rows_available": len(rows),
        "rows": len(picked),
        "tokens": sum(len(r.input_ids) for r in picked),
        "answer_tokens": sum(r.trained_tokens for r in picked),
    }
    return picked, record


def as_dataset(rows: list[Encoded]):
    """A datasets.Dataset with the `input_ids` and `labels` columns the trainer reads."""
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": [r.input_ids for r in rows], "labels": [r.labels for r in rows]})


@dataclass(frozen=True)
class PreparedData:
    train: object  # datasets.Dataset
    eval: object | None
    record: dict  # the training record's `dataset` entry
    notes: list[str]  # what was skipped, for the log


def prepare_data(settings: DataSettings, tokenizer, template, seed: int) -> PreparedData:
    """Train and eval datasets (eval from `dataset.eval` or a held-out share of train) and their record."""
    train_rows, train_report = load_split(settings.train, settings, tokenizer, template)
    eval_rows, eval_report = [], None
    if settings.eval is not None:
        eval_rows, eval_report = load_split(settings.eval, settings, tokenizer, template)
    elif settings.eval_fraction > 0:
        train_rows, eval_rows = split_eval(train_rows, settings.eval_fraction, seed)
    replay_record = None
    if settings.replay is not None:  # after the eval split: evaluation stays on this task's own rows
        replay_rows, replay_record = sample_replay(settings, tokenizer, template, seed)
        train_rows = train_rows + replay_rows
    record = {
        "train": settings.train,
        "format": settings.format,
        "sha256": train_report.sha256,
        "sha256_of": train_report.hashed,
        "rows_read": train_report.rows_read,
        "rows_kept": len(train_rows),
        "rows_skipped": train_report.rows_skipped,
        "rows_dropped": train_report.rows_dropped,
        "rows_eval": len(eval_rows),
        "max_tokens": settings.max_tokens,
        "tokens": sum(len(r.input_ids) for r in train_rows),
        "answer_tokens": sum(r.trained_tokens for r in train_rows),
    }
    if eval_report is not None:
        record.update(eval=settings.eval, eval_sha256=eval_report.sha256)
    if replay_record is not None:
        record["replay"] = replay_record
    notes = [_problem_listing(r) for r in (train_report, eval_report) if r is not None and r.problems]
    notes += [
        f"{r.source}: {r.rows_dropped} row(s) longer than dataset.max_tokens={settings.max_tokens} dropped"
        for r in (train_report, eval_report)
        if r is not None and r.rows_dropped
    ]
    return PreparedData(as_dataset(train_rows), as_dataset(eval_rows) if eval_rows else None, record, notes)
