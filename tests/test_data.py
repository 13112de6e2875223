"""Rows -> conversations -> ids/labels: every format, every file type, bad rows named or counted."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from tiny import build_tokenizer

from training.config import DataSettings
from training.data.conversations import to_conversation
from training.data.prepare import load_split, prepare_data
from training.data.read import DataError, RowError
from training.data.tokens import IGNORE_INDEX
from training.templates import load_template

ROWS = [
    {
        "id": 1,
        "instruction": "¿Cuál es la capital de Ecuador?",
        "input": "",
        "output": "Quito.",
        "category": "geo",
        "fuente": "x",
    },
    {
        "id": 2,
        "instruction": "Resume el siguiente artículo:",
        "input": "El Código del Trabajo regula las relaciones.",
        "output": "Regula el trabajo.",
        "category": "ley",
        "fuente": "y",
    },
    {
        "id": 3,
        "instruction": "Calcula 12 más 30.",
        "input": "",
        "output": "El resultado es 42.",
        "category": "mat",
        "fuente": "z",
    },
]
SETTINGS = DataSettings(
    train="", eval=None, eval_fraction=0.0, format="alpaca", split="train", on_error="raise", max_tokens=512
)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer("falcon")


@pytest.fixture(scope="module")
def template(repo_root):
    return load_template(repo_root / "instruction-templates" / "spanish_ft-Falcon.yaml")


def write_jsonl(path: Path, lines: list) -> Path:
    with open(path, "wb") as handle:
        for line in lines:
            handle.write(line if isinstance(line, bytes) else json.dumps(line, ensure_ascii=False).encode() + b"\n")
    return path


def test_alpaca_appends_a_nonempty_input_after_a_blank_line():
    assert to_conversation(ROWS[0], "alpaca") == [
        {"role": "user", "content": "¿Cuál es la capital de Ecuador?"},
        {"role": "assistant", "content": "Quito."},
    ]
    assert to_conversation(ROWS[1], "alpaca")[0]["content"] == (
        "Resume el siguiente artículo:\n\nEl Código del Trabajo regula las relaciones."
    )


def test_messages_and_sharegpt_give_the_same_conversation():
    messages = [
        {"role": "system", "content": "Sé breve."},
        {"role": "user", "content": "Hola"},
        {"role": "assistant", "content": "Hola."},
        {"role": "user", "content": "¿Y?"},
        {"role": "assistant", "content": "Nada."},
    ]
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    sharegpt = [{"from": names[m["role"]], "value": m["content"]} for m in messages]
    assert to_conversation({"messages": messages}, "messages") == messages
    assert to_conversation({"conversations": sharegpt, "id": 7}, "sharegpt") == messages


@pytest.mark.parametrize(
    "row, data_format, reason",
    [
        ({"messages": [{"role": "user", "content": "Hola"}]}, "messages", "no assistant turn"),
        ({"messages": [{"role": "bot", "content": "Hola"}]}, "messages", "messages[1].role is 'bot'"),
        (
            {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": " "}]},
            "sharegpt",
            "empty answer",
        ),
        ({"conversations": "hola"}, "sharegpt", "must be a non-empty list"),
        ({"text": 5}, "text", "field 'text' must be text"),
        (["not", "an", "object"], "alpaca", "expected an object"),
    ],
)
def test_bad_conversations_say_why(row, data_format, reason):
    with pytest.raises(RowError, match=re.escape(reason)):
        to_conversation(row, data_format)


def test_text_rows_are_trained_whole_and_end_with_eos(tmp_path, tokenizer, template):
    path = write_jsonl(tmp_path / "text.jsonl", [{"text": "La capital de Ecuador es Quito."}])
    [encoded], _ = load_split(str(path), replace(SETTINGS, format="text"), tokenizer, template)
    assert encoded.labels == encoded.input_ids
    assert encoded.input_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(encoded.input_ids[:-1]) == "La capital de Ecuador es Quito."


def test_every_file_type_gives_the_same_examples(tmp_path, tokenizer, template):
    frame = pd.DataFrame(ROWS)
    paths = [
        write_jsonl(tmp_path / "rows.jsonl", ROWS),
        tmp_path / "rows.json",
        tmp_path / "rows.csv",
        tmp_path / "rows.parquet",
    ]
    paths[1].write_text(json.dumps(ROWS, ensure_ascii=False), encoding="utf-8")
    frame.to_csv(paths[2], index=False)
    frame.to_parquet(paths[3])
    results = [load_split(str(path), SETTINGS, tokenizer, template) for path in paths]
    first = results[0][0]
    assert len(first) == len(ROWS)
    for examples, report in results:
        assert examples == first
        assert (report.rows_read, report.rows_kept, report.rows_skipped) == (3, 3, 0)


def test_a_local_dataset_folder_loads_through_datasets(tmp_path, tokenizer, template):
    folder = tmp_path / "my-dataset"
    folder.mkdir()
    pd.DataFrame(ROWS).to_parquet(folder / "train.parquet")
    examples, report = load_split(str(folder), SETTINGS, tokenizer, template)
    assert len(examples) == 3 and report.hashed == "rows"
    assert examples == load_split(str(write_jsonl(tmp_path / "r.jsonl", ROWS)), SETTINGS, tokenizer, template)[0]


BAD_LINES = [
    ROWS[0],
    {"instruction": "Sin respuesta"},  # line 2: missing field
    {"instruction": "Número", "output": 42},  # line 3: wrong type
    {"instruction": "Vacío", "output": "   "},  # line 4: empty answer
    b'{"instruction": "Hola", "output": "Adi\xf3s"}\n',  # line 5: Latin-1, not UTF-8
    b'{"instruction": "roto", "output": \n',  # line 6: invalid JSON
    ROWS[2],
]
REASONS = {
    2: "missing field 'output'",
    3: "field 'output' must be text",
    4: "empty answer",
    5: "not UTF-8",
    6: "invalid JSON",
}


def test_bad_rows_are_all_listed_with_their_lines_when_raising(tmp_path, tokenizer, template):
    path = write_jsonl(tmp_path / "bad.jsonl", BAD_LINES)
    with pytest.raises(DataError) as caught:
        load_split(str(path), SETTINGS, tokenizer, template)
    message = str(caught.value)
    assert "5 bad row(s)" in message and "dataset.on_error=skip" in message
    for line, reason in REASONS.items():
        assert f"bad.jsonl, line {line}: {reason}" in message


def test_bad_rows_are_counted_when_skipping(tmp_path, tokenizer, template):
    path = write_jsonl(tmp_path / "bad.jsonl", BAD_LINES)
    examples, report = load_split(str(path), replace(SETTINGS, on_error="skip"), tokenizer, template)
    assert (report.rows_read, report.rows_kept, report.rows_skipped, len(examples)) == (7, 2, 5, 2)
    assert [p.split(": ", 1)[0].rsplit(", ", 1)[1] for p in report.problems] == [f"line {n}" for n in REASONS]


def test_bad_csv_rows_are_named(tmp_path, tokenizer, template):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"instruction,input,output\nHola,,Adi\xf3s\nSolo instruccion\nBien,,Respuesta.\n")
    examples, report = load_split(str(path), replace(SETTINGS, on_error="skip"), tokenizer, template)
    assert len(examples) == 1
    assert report.problems == [
        f"{path}, row 1 (line 2): not UTF-8 text",
        f"{path}, row 2 (line 3): missing field 'output'",
    ]


def test_long_rows_are_dropped_and_counted_never_cut(tmp_path, tokenizer, template):
    long_row = dict(ROWS[0], output="Quito es la capital. " * 60)
    path = write_jsonl(tmp_path / "long.jsonl", [ROWS[0], long_row, ROWS[2]])
    examples, report = load_split(str(path), replace(SETTINGS, max_tokens=64), tokenizer, template)
    assert (report.rows_kept, report.rows_dropped) == (2, 1)
    assert all(len(e.input_ids) <= 64 for e in examples)
    assert all(e.labels[-1] == tokenizer.eos_token_id for e in examples)  # whole answers, end of turn kept


def test_nothing_left_to_train_on_is_an_error(tmp_path, tokenizer, template):
    path = write_jsonl(tmp_path / "all-bad.jsonl", [{"instruction": "x"}])
    with pytest.raises(DataError, match="no row left to train on: 1 read, 1 bad"):
        load_split(str(path), replace(SETTINGS, on_error="skip"), tokenizer, template)


def test_missing_data_file_names_where_it_looked(tokenizer, template):
    with pytest.raises(DataError, match="training/datasets/nowhere/train.jsonl: data file not found"):
        load_split("training/datasets/nowhere/train.jsonl", SETTINGS, tokenizer, template)


def test_eval_fraction_holds_out_rows_and_records_counts(tmp_path, tokenizer, template):
    path = write_jsonl(tmp_path / "rows.jsonl", ROWS * 4)
    settings = replace(SETTINGS, train=str(path), eval_fraction=0.25)
    first = prepare_data(settings, tokenizer, template, seed=3)
    again = prepare_data(settings, tokenizer, template, seed=3)
    assert (len(first.train), len(first.eval)) == (9, 3)
    assert first.train["input_ids"] == again.train["input_ids"]
    assert first.record["rows_kept"] == 9 and first.record["rows_eval"] == 3 and first.record["sha256_of"] == "file"
    labels = [label for row in first.train["labels"] for label in row[1:]]
    assert first.record["answer_tokens"] == sum(label != IGNORE_INDEX for label in labels)
