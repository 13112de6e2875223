"""Prepared splits: rows read, encoded and counted, with the dataset part of the training record.

Each row goes through training/data/conversations.py. A bad row is named with its file and
place; with `on_error: raise` all of them are listed and training stops, with `skip` they are
counted. Rows longer than `max_tokens` are dropped and counted, never cut. `dataset.replay`
mixes rows of an earlier task into the training split.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from datasets import Dataset

from training.config import DataSettings
from training.data.conversations import encode_row
from training.data.read import DataError, RowError, read_source
from training.data.tokens import Encoded

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
    kept: list = field(default_factory=list, repr=False)  # the kept rows as read, in order


def load_split(source_name: str, settings: DataSettings, tokenizer, template,
               ground=None) -> tuple[list[Encoded], SplitReport]:
    """Encode every usable row of one source (`ground`: see encode_row); raise DataError per `settings.on_error`."""
    source = read_source(source_name, settings.split)
    report = SplitReport(source=source_name, sha256=source.sha256, hashed=source.hashed)
    kept: list[Encoded] = []
    for where, row in source.rows:
        report.rows_read += 1
        try:
            if isinstance(row, RowError):
                raise row
            encoded = encode_row(row, settings.format, tokenizer, template, ground)
        except RowError as err:
            report.problems.append(f"{source_name}, {where}: {err}")
            continue
        if len(encoded.input_ids) > settings.max_tokens:
            report.rows_dropped += 1
            continue
        kept.append(encoded)
        report.kept.append(row)
    report.rows_kept, report.rows_skipped = len(kept), len(report.problems)
    if report.problems and settings.on_error == "raise":
        raise DataError(list_problems(source_name, report.problems)
                        + "\nfix these rows, or set dataset.on_error=skip to leave them out")
    if not kept:
        raise DataError(
            f"{source_name}: no row left to train on: {report.rows_read} read, {report.rows_skipped} bad, "
            f"{report.rows_dropped} longer than dataset.max_tokens={settings.max_tokens} (raise it to keep them)"
        )
    return kept, report


def list_problems(source: str, problems: list[str]) -> str:
    """The bad rows of one source, one per line (the first MAX_LISTED; the rest counted)."""
    shown = problems[:MAX_LISTED]
    more = len(problems) - len(shown)
    tail = f"\n  ... and {more} more" if more else ""
    return f"{source}: {len(problems)} bad row(s):\n" + "\n".join(f"  {p}" for p in shown) + tail


def split_eval(rows: list[Encoded], fraction: float, seed: int) -> tuple[list[Encoded], list[Encoded]]:
    """Hold out a seeded random share of the rows; both parts keep at least one row."""
    if len(rows) < 2:
        raise DataError(f"dataset.eval_fraction={fraction} needs at least 2 usable train rows, found {len(rows)}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    count = min(len(rows) - 1, max(1, round(len(rows) * fraction)))
    held = set(order[:count])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def sample_replay(settings: DataSettings, tokenizer, template, seed: int, ground=None) -> tuple[list[Encoded], dict]:
    """A seeded sample of `dataset.replay.rows` rows of another task, encoded like the train rows
    (with `ground`, a Grounder: each with the sources the chat would give it, see Grounder.replayed;
    one that grows past max_tokens with them keeps its plain turn)."""
    replay = settings.replay
    own = replace(settings, train=replay.train, format=replay.format, replay=None)
    rows, report = load_split(replay.train, own, tokenizer, template)
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    chosen = sorted(order[: replay.rows])
    picked = [rows[i] for i in chosen]
    if ground is not None and hasattr(ground, "replayed"):
        for place, i in enumerate(chosen):
            grounded = encode_row(report.kept[i], replay.format, tokenizer, template, ground.replayed)
            kind = ground.last_replay_kind
            if kind != "plain" and len(grounded.input_ids) <= settings.max_tokens:
                picked[place] = grounded
            else:
                kind = "plain"
            ground.replay_kinds[kind] += 1
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


def load_unanswerable(ground, max_tokens: int, tokenizer, template) -> tuple[list[Encoded], int, str]:
    """(encoded rows, how many were longer than max_tokens and dropped, the file's sha256) of
    `dataset.retrieval.unanswerable`: {id, instruction} rows, each with the sources the chat gives it
    and the answer that says they do not settle it (Grounder.unanswerable_row). Bad rows: DataError
    naming each one's file and line."""
    try:
        source = read_source(ground.unanswerable)
    except DataError as err:  # its wording names dataset.train; say which key holds the path
        raise DataError(f"dataset.retrieval.unanswerable: {err}".replace(
            "fix dataset.train / dataset.eval", "fix dataset.retrieval.unanswerable")) from err
    kept, problems, dropped = [], [], 0
    for where, row in source.rows:
        question = row.get("instruction") if isinstance(row, dict) else None
        if isinstance(row, RowError) or not isinstance(question, str) or not question.strip():
            problems.append(f"{where}: " + (str(row) if isinstance(row, RowError) else "needs a non-empty 'instruction'"))
            continue
        key = row["id"] if isinstance(row.get("id"), str) else f"{ground.unanswerable}:{where}"
        try:
            conversation = ground.unanswerable_row(question, key)
        except ValueError as err:  # retrieval refuses it (too long)
            problems.append(f"{where}: {err}")
            continue
        encoded = encode_row({"messages": conversation}, "messages", tokenizer, template)
        if len(encoded.input_ids) > max_tokens:
            dropped += 1
            continue
        kept.append(encoded)
    if problems:
        raise DataError("dataset.retrieval.unanswerable: " + list_problems(ground.unanswerable, problems))
    if not kept:
        raise DataError(f"dataset.retrieval.unanswerable: {ground.unanswerable}: no usable row "
                        f"({dropped} longer than dataset.max_tokens={max_tokens})")
    return kept, dropped, source.sha256


def as_dataset(rows: list[Encoded]):
    """A datasets.Dataset with the `input_ids` and `labels` columns the trainer reads."""
    return Dataset.from_dict({"input_ids": [r.input_ids for r in rows], "labels": [r.labels for r in rows]})


@dataclass(frozen=True)
class PreparedData:
    train: object  # datasets.Dataset
    eval: object | None
    record: dict  # the training record's `dataset` entry
    notes: list[str]  # what was skipped, for the log


def prepare_data(settings: DataSettings, tokenizer, template, seed: int, ground=None) -> PreparedData:
    """Train and eval datasets (eval from `dataset.eval` or a held-out share of train) and their record.

    `ground` (dataset.retrieval, a Grounder; see encode_row) rewrites this task's rows RAFT-style, gives
    the replayed ones the sources the chat would give them and adds the unanswerable questions; its
    `record()` goes into the training record.
    """
    train_rows, train_report = load_split(settings.train, settings, tokenizer, template, ground)
    eval_rows, eval_report = [], None
    if settings.eval is not None:
        eval_rows, eval_report = load_split(settings.eval, settings, tokenizer, template, ground)
    elif settings.eval_fraction > 0:
        train_rows, eval_rows = split_eval(train_rows, settings.eval_fraction, seed)
    replay_record = None
    if settings.replay is not None:  # after the eval split: evaluation stays on this task's own rows
        replay_rows, replay_record = sample_replay(settings, tokenizer, template, seed, ground)
        train_rows = train_rows + replay_rows
    unanswerable_dropped, unanswerable_sha256 = 0, None
    if getattr(ground, "unanswerable", None):  # train split only: they have no reference answer
        unanswerable_rows, unanswerable_dropped, unanswerable_sha256 = load_unanswerable(
            ground, settings.max_tokens, tokenizer, template)
        train_rows = train_rows + unanswerable_rows
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
    if ground is not None:
        record["retrieval"] = ground.record()
        if unanswerable_sha256:
            record["retrieval"]["unanswerable"].update(sha256=unanswerable_sha256, rows_dropped=unanswerable_dropped)
    notes = [list_problems(r.source, r.problems) for r in (train_report, eval_report) if r is not None and r.problems]
    notes += [
        f"{r.source}: {r.rows_dropped} row(s) longer than dataset.max_tokens={settings.max_tokens} dropped"
        for r in (train_report, eval_report)
        if r is not None and r.rows_dropped
    ]
    if unanswerable_dropped:
        notes.append(f"{ground.unanswerable}: {unanswerable_dropped} unanswerable question(s) longer than "
                     f"dataset.max_tokens={settings.max_tokens} with their sources dropped")
    return PreparedData(as_dataset(train_rows), as_dataset(eval_rows) if eval_rows else None, record, notes)
