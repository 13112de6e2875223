"""Data files that lose their place: every command that reads rows (train, evaluate, validate-data)
names the file and the line of each problem, calls an empty file empty, reads a UTF-8 byte order
mark as nothing, and refuses a conversation whose first answer follows no question. The folder
holding the data is byte-for-byte what it was after every refusal."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from harness import ROOT, ROWS, TEMPLATE, refused, write_recipe

from training.__main__ import main
from training.data.read import read_source

BOM = b"\xef\xbb\xbf"
GOOD, NO_OUTPUT = ROWS[0], {"instruction": "Resume el texto.", "input": ""}
MESSAGES = [{"role": "system", "content": "Responde en español."}, {"role": "user", "content": "¿Capital de Ecuador?"},
            {"role": "assistant", "content": "Quito."}]
ANSWER_FIRST = [{"role": "system", "content": "Responde en español."}, {"role": "assistant", "content": "Quito."},
                {"role": "user", "content": "Gracias."}, {"role": "assistant", "content": "De nada."}]


def as_row(messages: list[dict], data_format: str) -> dict:
    if data_format == "messages":
        return {"messages": messages}
    speaker = {"system": "system", "user": "human", "assistant": "gpt"}
    return {"conversations": [{"from": speaker[m["role"]], "value": m["content"]} for m in messages]}


def write_file(path: Path, rows: list[dict], bom: bool = False) -> Path:
    """Rows as JSONL, a JSON array (one element per line from line 2) or CSV, by the file's suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["instruction", "input", "output"])
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".json":
        path.write_text("[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n]\n", "utf-8")
    else:
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    if bom:
        path.write_bytes(BOM + path.read_bytes())
    return path


# where the second row of each file type is (the first is on line 1, or line 2 after a header or '[')
SECOND_ROW = {".jsonl": "line 2", ".csv": "row 2 (line 3)", ".json": "row 2 (line 3)"}
FIRST_ROW = {".jsonl": "line 1", ".csv": "row 1 (line 2)", ".json": "row 1 (line 2)"}


def command(name: str, data: Path, base: Path, run: Path, data_format: str = "alpaca") -> list[str]:
    """The command line reading `data`; what it would write goes to `run`, away from the data's folder."""
    if name == "train":
        run.mkdir(exist_ok=True)
        recipe = write_recipe(run / "tiny.yaml", base, data, run / "adapter")
        return ["train", str(recipe), f"dataset.format={data_format}", "training.report_to=none"]
    return ["evaluate", "--base", str(base), "--template", str(ROOT / TEMPLATE), "--data", str(data),
            "--report", str(run / "report"), "--format", data_format, "--max-new-tokens", "2"]


@pytest.fixture
def place(tiny_model_dirs, tmp_path) -> dict:
    """The data folder to protect, the folder a run would write to, and the tiny base model."""
    return {"data": tmp_path / "datos", "run": tmp_path / "run", "base": tiny_model_dirs["llama2"]}


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_a_bom_is_read_as_nothing(tmp_path, suffix):
    path = write_file(tmp_path / f"rows{suffix}", [GOOD], bom=True)
    [(where, row)] = read_source(str(path)).rows
    assert where == FIRST_ROW[suffix] and row == GOOD


@pytest.mark.parametrize("name", ["train", "evaluate"])
@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_a_bom_does_not_hide_the_first_row(place, capsys, name, suffix):
    data = write_file(place["data"] / f"rows{suffix}", [GOOD, dict(NO_OUTPUT, output="")], bom=True)
    err = refused(command(name, data, place["base"], place["run"]), capsys, place["data"], data,
                  f"{data}, {SECOND_ROW[suffix]}: empty answer in 'output'", "1 bad row(s)")
    assert FIRST_ROW[suffix] not in err


def ley_row(n: int) -> dict:
    return {"id": f"ley-{n:04d}", "instruction": f"¿Qué dice el artículo {n}?", "input": "",
            "output": f"Según el artículo {n} del Código Civil, dispone algo.",
            "fuente": {"norma": "Código Civil", "articulo": str(n)}}


def leyes_folder(root: Path, train: bytes | None = None) -> Path:
    """A valid leyes-ec dataset folder; `train` replaces train.jsonl's bytes."""
    folder = root / "leyes-ec"
    write_file(folder / "train.jsonl", [ley_row(n) for n in range(1, 10)])
    write_file(folder / "test.jsonl", [ley_row(10)])
    if train is not None:
        (folder / "train.jsonl").write_bytes(train)
    return folder


def test_validate_data_reads_a_bom_as_nothing(tmp_path, capsys):
    folder = leyes_folder(tmp_path)
    (folder / "train.jsonl").write_bytes(BOM + (folder / "train.jsonl").read_bytes())
    assert main(["validate-data", str(folder)]) == 0, capsys.readouterr().err
    assert "1 dataset(s), 0 error(s)" in capsys.readouterr().out


EMPTY = {"0 bytes": b"", "only blank lines": b"\n  \n\r\n\t\n"}


@pytest.mark.parametrize("name", ["train", "evaluate"])
@pytest.mark.parametrize("kind", EMPTY)
def test_an_empty_file_is_called_empty(place, capsys, name, kind):
    data = place["data"] / "rows.jsonl"
    data.parent.mkdir()
    data.write_bytes(EMPTY[kind])
    err = refused(command(name, data, place["base"], place["run"]), capsys, place["data"], data,
                  f"{data}: the file is empty ({kind})")
    assert "masked out" not in err


@pytest.mark.parametrize("kind", EMPTY)
def test_validate_data_calls_an_empty_file_empty(tmp_path, capsys, kind):
    folder = leyes_folder(tmp_path, train=EMPTY[kind])
    refused(["validate-data", str(folder)], capsys, folder, folder / "train.jsonl",
            f"{folder / 'train.jsonl'}:1: the file is empty")


def test_a_csv_with_only_a_header_has_no_rows(place, capsys):
    data = write_file(place["data"] / "rows.csv", [])
    refused(command("train", data, place["base"], place["run"]), capsys, place["data"], data, f"{data}: no rows")


def test_evaluate_names_every_row_missing_a_field(place, capsys):
    data = write_file(place["data"] / "test.jsonl", [GOOD, NO_OUTPUT, {"output": "Sí."}])
    refused(command("evaluate", data, place["base"], place["run"]), capsys, place["data"], data,
            f"{data}, line 2: missing field 'output'", f"{data}, line 3: missing field 'instruction'",
            "2 bad row(s)")


@pytest.mark.parametrize("name", ["train", "evaluate"])
@pytest.mark.parametrize("data_format", ["messages", "sharegpt"])
def test_a_conversation_must_ask_before_its_first_answer(place, capsys, name, data_format):
    key = "messages" if data_format == "messages" else "conversations"
    data = write_file(place["data"] / "chats.jsonl", [as_row(MESSAGES, data_format), as_row(ANSWER_FIRST, data_format)])
    refused(command(name, data, place["base"], place["run"], data_format), capsys, place["data"], data,
            f"{data}, line 2: {key}[2] is an assistant answer with no user turn before it")


LATIN1 = json.dumps({"instruction": "café", "input": "", "output": "Sí."}, ensure_ascii=False).encode("latin-1")


@pytest.mark.parametrize("name", ["train", "evaluate"])
def test_a_line_that_is_not_utf8_is_named(place, capsys, name):
    data = place["data"] / "rows.jsonl"
    data.parent.mkdir()
    data.write_bytes(json.dumps(GOOD).encode() + b"\n" + LATIN1 + b"\n")
    refused(command(name, data, place["base"], place["run"]), capsys, place["data"], data,
            f"{data}, line 2: not UTF-8 text (bad byte 0xe9")


def test_validate_data_names_each_line_that_is_not_utf8(tmp_path, capsys):
    rows = b"".join(json.dumps(ley_row(n), ensure_ascii=False).encode() + b"\n" for n in range(1, 10))
    folder = leyes_folder(tmp_path, train=LATIN1 + b"\n" + rows + LATIN1 + b"\n")
    path = folder / "train.jsonl"
    refused(["validate-data", str(folder)], capsys, folder, path, f"{path}:1: not valid UTF-8 (byte 0xe9",
            f"{path}:11: not valid UTF-8 (byte 0xe9")


@pytest.mark.parametrize("name", ["train", "evaluate"])
def test_a_json_array_element_that_is_not_an_object_is_named_with_its_line(place, capsys, name):
    data = place["data"] / "rows.json"
    data.parent.mkdir()
    data.write_text(f"[\n{json.dumps(GOOD)},\n\n  42\n]\n", encoding="utf-8")
    refused(command(name, data, place["base"], place["run"]), capsys, place["data"], data,
            f"{data}, row 2 (line 4): expected an object with named fields, found int")


def test_a_huge_broken_line_is_named_not_echoed(place, capsys):
    data = place["data"] / "rows.jsonl"
    data.parent.mkdir()
    data.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"instruction": "' + b"x" * 20_000_000 + b"\n")
    err = refused(command("train", data, place["base"], place["run"]), capsys, place["data"], data,
                  f"{data}, line 2: invalid JSON: ")
    assert len(err) < 5000


def test_a_csv_cell_over_the_csv_limit_is_named(place, capsys):
    data = write_file(place["data"] / "rows.csv", [GOOD, dict(GOOD, input="x" * 300_000)])
    err = refused(command("train", data, place["base"], place["run"]), capsys, place["data"], data,
                  f"{data}, line 3: unreadable CSV: field larger than field limit")
    assert len(err) < 5000


def test_a_huge_role_is_shortened_in_the_message(place, capsys):
    huge = [{"role": "x" * 10_000_000, "content": "hola"}, *MESSAGES[1:]]
    data = write_file(place["data"] / "chats.jsonl", [{"messages": MESSAGES}, {"messages": huge}])
    err = refused(command("train", data, place["base"], place["run"], "messages"), capsys, place["data"], data,
                  f"{data}, line 2: messages[1].role is 'xxx", "characters cut")
    assert len(err) < 5000
