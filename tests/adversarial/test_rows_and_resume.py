"""Text that is not text, and resume with another recipe (issue 26, classes 6 and 7).

Rows: a lone surrogate escape, a key given twice (at the top or deep in a conversation), an
integer too long to read, nesting too deep, a CSV header naming a column twice and a Parquet
string that is not UTF-8 are refused by train, evaluate and validate-data with the file, the
line and the field named; what was accepted before (NaN in an unread field, CRLF, a BOM, an
escaped emoji pair, trailing empty CSV columns) still is.

Resume: a checkpoint records its recipe; resuming with a key that shapes the training changed
(rank, target modules, alpha, learning rate, max_tokens, the data's content) is refused before
anything loads, naming every such key, while the keys that may change (length, logging, save
steps, the data file's path) resume as before. Nothing around the run changes on a refusal.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from harness import FAST, ROOT, ROWS, TEMPLATE, fingerprint, refused, run_cli, user_folder, write_recipe, write_rows

from training.data.conversations import to_conversation
from training.data.read import read_source
from training.trainer.resume import RECIPE_NAME

GOOD = json.dumps(ROWS[0], ensure_ascii=False)
LONE = r'{"instruction": "Traduce: \udc80 hola", "input": "", "output": "Hola."}'
TWICE = r'{"instruction": "Suma 2 y 2.", "input": "", "output": "4", "output": "5"}'
DEEP_TWICE = (r'{"messages": [{"role": "user", "content": "¿Y?"}, '
              r'{"role": "assistant", "content": "Sí.", "content": "No."}]}')
LONG_NUMBER = '{"instruction": "Hola", "input": "", "output": "Adiós", "puntaje": ' + "7" * 5000 + "}"
DEEP = '{"instruction": "Hola", "output": "Adiós", "extra": ' + "[" * 5000 + "]" * 5000 + "}"


def data_file(folder: Path, name: str, lines: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if path.suffix == ".json":
        path.write_text("[\n" + ",\n".join(lines) + "\n]\n", encoding="utf-8")
    else:
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def command(name: str, data: Path, base: Path, run: Path, data_format: str = "alpaca") -> list[str]:
    """The command reading `data`; what it would write goes to `run`."""
    if name == "train":
        run.mkdir(exist_ok=True)
        recipe = write_recipe(run / "tiny.yaml", base, data, run / "adapter")
        return ["train", recipe, *FAST, f"dataset.format={data_format}"]
    return ["evaluate", "--base", base, "--template", ROOT / TEMPLATE, "--data", data, "--report", run / "report",
            "--format", data_format, "--max-new-tokens", "2"]


@pytest.fixture
def place(tiny_model_dirs, tmp_path) -> dict:
    return {"data": tmp_path / "datos", "run": tmp_path / "run", "base": tiny_model_dirs["llama2"]}


@pytest.mark.parametrize("name", ["train", "evaluate"])
@pytest.mark.parametrize("suffix, where", [(".jsonl", "line 2"), (".json", "row 2 (line 3)")])
def test_a_lone_surrogate_is_named_with_its_file_line_and_field(place, capsys, name, suffix, where):
    data = data_file(place["data"], f"rows{suffix}", [GOOD, LONE])
    err = refused(command(name, data, place["base"], place["run"]), capsys, place["data"], data,
                  f"{data}, {where}: field 'instruction': holds a lone surrogate \\udc80 (at character 10)")
    assert "TypeError" not in err


@pytest.mark.parametrize("name", ["train", "evaluate"])
def test_a_key_given_twice_is_refused_not_trained_on_its_last_value(place, capsys, name):
    data = data_file(place["data"], "rows.jsonl", [GOOD, GOOD, TWICE])
    refused(command(name, data, place["base"], place["run"]), capsys, place["data"], data,
            f"{data}, line 3: field 'output': given more than once in one object")


def test_a_key_given_twice_deep_in_a_conversation_is_named_by_its_path(place, capsys):
    data = data_file(place["data"], "chats.json", [json.dumps({"messages": [
        {"role": "user", "content": "¿Capital?"}, {"role": "assistant", "content": "Quito."}]}), DEEP_TWICE])
    refused(command("train", data, place["base"], place["run"], "messages"), capsys, place["data"], data,
            f"{data}, row 2 (line 3): field 'messages[2].content': given more than once")


@pytest.mark.parametrize("line, said", [(LONG_NUMBER, "field 'puntaje': a whole number of 5000 digits"),
                                        (DEEP, "nested deeper than the JSON reader goes")])
def test_numbers_too_long_and_nesting_too_deep_are_rows_named_not_crashes(place, capsys, line, said):
    data = data_file(place["data"], "rows.jsonl", [GOOD, line])
    err = refused(command("train", data, place["base"], place["run"]), capsys, place["data"], data,
                  f"{data}, line 2: ", said)
    assert len(err) < 5000


def test_a_csv_header_naming_a_column_twice_is_refused(place, capsys):
    data = place["data"] / "rows.csv"
    data.parent.mkdir()
    data.write_text("instruction,input,output,output\r\nHola,,Adiós,Chao\r\n", encoding="utf-8")
    refused(command("train", data, place["base"], place["run"]), capsys, place["data"], data,
            f"{data}, line 1: the header names column 'output' more than once")


def test_a_parquet_string_that_is_not_utf8_names_its_row_and_column(place, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = place["data"] / "rows.parquet"
    data.parent.mkdir()
    outputs = pa.array([b"Quito.", b"Adi\xf3s"], type=pa.binary()).cast(pa.string(), safe=False)
    pq.write_table(pa.table({"instruction": ["¿Capital?", "Despídete."], "input": ["", ""], "output": outputs}), data)
    refused(command("train", data, place["base"], place["run"]), capsys, place["data"], data,
            f"{data}, row 2: column 'output': not UTF-8 text")


def leyes_folder(root: Path, extra: list[str]) -> Path:
    """A leyes-ec dataset folder whose train.jsonl ends with the `extra` lines."""
    def row(n: int) -> str:
        return json.dumps({"id": f"ley-{n}", "instruction": f"¿Qué dice el artículo {n}?", "input": "",
                           "output": f"Según el artículo {n} del Código Civil, algo.",
                           "fuente": {"norma": "Código Civil", "articulo": str(n)}}, ensure_ascii=False)

    folder = root / "leyes-ec"
    data_file(folder, "train.jsonl", [row(n) for n in range(1, 10)] + extra)
    data_file(folder, "test.jsonl", [row(20)])
    return folder


def test_validate_data_names_lone_surrogates_and_keys_given_twice(tmp_path, capsys):
    fuente = '"fuente": {"norma": "Código Civil", "articulo": "30", "articulo": "31"}'
    folder = leyes_folder(tmp_path, [r'{"id": "ley-x\ud800", "instruction": "a", "input": "", "output": "b"}',
                                     '{"id": "ley-y", "instruction": "¿Qué dice el artículo 30?", "input": "", '
                                     f'"output": "Según el artículo 30 del Código Civil.", {fuente}}}'])
    path = folder / "train.jsonl"
    refused(["validate-data", folder], capsys, folder, path,
            f"{path}:10: field 'id': holds a lone surrogate \\ud800",
            f"{path}:11: field 'fuente.articulo': given more than once")


@pytest.mark.parametrize("suffix, text", [
    (".jsonl", GOOD.replace('"input": ""', '"input": "", "puntaje": NaN') + "\r\n"),  # NaN in a field not read
    (".jsonl", "\ufeff" + GOOD.replace("Ecuador", r"Ecuador \ud83c\uddea\ud83c\udde8 \u0007") + "\r\n"),
    (".json", "\ufeff[" + GOOD + ",\r\n" + GOOD.replace(": ", ":\t") + "]"),
    (".csv", "instruction,input,output,,\r\n¿Capital?,,Quito.,,\r\n"),  # trailing empty columns of a spreadsheet
])
def test_what_was_accepted_before_still_is(tmp_path, suffix, text):
    path = tmp_path / f"rows{suffix}"
    path.write_text(text, encoding="utf-8", newline="")
    for _, row in read_source(str(path)).rows:
        assert isinstance(row, dict), row
        to_conversation(row, "alpaca")


# ---- resume with another recipe -------------------------------------------------------------------

TWO_STEPS = [*FAST, "training.max_steps=2", "training.save_steps=2", "training.keep_checkpoints=true"]


@pytest.fixture(scope="module")
def trained(tiny_model_dirs, tmp_path_factory) -> Path:
    """A folder with a recipe, its rows, the adapter of a 2-step run and its work folder with checkpoint-2."""
    root = tmp_path_factory.mktemp("trained")
    rows = write_rows(root / "rows.jsonl", 8)
    recipe = write_recipe(root / "tiny.yaml", tiny_model_dirs["llama2"], rows, root / "adapter")
    done = run_cli("train", recipe, *TWO_STEPS)
    assert done.returncode == 0, done.stderr[-3000:]
    return root


@pytest.fixture
def resumable(trained, tmp_path) -> dict:
    """A copy of `trained` (paths rewritten) beside a user's thesis, ready for `resume=true --replace`."""
    shutil.copytree(trained, tmp_path, dirs_exist_ok=True)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(recipe.read_text(encoding="utf-8").replace(str(trained), str(tmp_path)), encoding="utf-8")
    user_folder(tmp_path / "tesis")
    checkpoint = tmp_path / "adapter.work" / "checkpoint-2"
    return {"root": tmp_path, "recipe": recipe, "rows": tmp_path / "rows.jsonl", "checkpoint": checkpoint,
            "argv": ["train", "--replace", recipe, *TWO_STEPS, "training.max_steps=3", "resume=true"]}


def test_every_checkpoint_records_its_recipe_and_the_content_of_its_files(resumable):
    recorded = json.loads((resumable["checkpoint"] / RECIPE_NAME).read_text(encoding="utf-8"))
    assert recorded["recipe"]["lora"]["rank"] == 4 and recorded["recipe"]["dataset"]["max_tokens"] == 128
    assert recorded["contents"]["dataset.train"].startswith("sha256:")
    assert recorded["contents"]["template"].startswith("sha256:")


def test_another_rank_is_refused_naming_the_key_not_a_size_mismatch(resumable, capsys):
    err = refused([*resumable["argv"], "lora.rank=8"], capsys, resumable["root"], resumable["checkpoint"],
                  "lora.rank: 4 in the checkpoint, 8 now")
    assert "size mismatch" not in err and "lora.alpha" not in err


def test_other_target_modules_are_refused_not_mixed_into_the_adapter(resumable, capsys):
    refused([*resumable["argv"], "lora.target_modules=[q_proj, v_proj]"], capsys, resumable["root"],
            resumable["checkpoint"], "lora.target_modules: [", "'q_proj', 'v_proj'] now")


def test_every_changed_key_is_named_at_once(resumable, capsys):
    err = refused([*resumable["argv"], "lora.alpha=64", "training.learning_rate=0.1", "dataset.max_tokens=64",
                   "training.seed=7"], capsys, resumable["root"], resumable["checkpoint"],
                  "lora.alpha: 32 in the checkpoint, 64 now",
                  "training.learning_rate: 0.003 in the checkpoint, 0.1 now",
                  "dataset.max_tokens: 128 in the checkpoint, 64 now", "training.seed: 42 in the checkpoint, 7 now")
    assert "training.max_steps" not in err  # the length of the training may change


def test_data_edited_in_place_is_refused_by_its_content(resumable, capsys):
    rows = resumable["rows"]
    rows.write_text(rows.read_text(encoding="utf-8").replace("Quito", "Guayaquil"), encoding="utf-8")
    refused(resumable["argv"], capsys, resumable["root"], resumable["checkpoint"],
            "dataset.train: content sha256 ")


def test_an_explicit_checkpoint_path_is_checked_too(resumable, capsys):
    argv = [*resumable["argv"][:-1], f"resume={resumable['checkpoint']}", "quantization.bits=16"]
    refused(argv, capsys, resumable["root"], resumable["checkpoint"], "quantization.bits: 4 in the checkpoint, 16 now")


def test_a_checkpoint_from_before_the_record_is_compared_on_its_peft_config(resumable, capsys):
    (resumable["checkpoint"] / RECIPE_NAME).unlink()
    refused([*resumable["argv"], "lora.rank=2"], capsys, resumable["root"], resumable["checkpoint"],
            "lora.rank: 4 in the checkpoint, 2 now")


@pytest.mark.parametrize("text", ['{"format": 1, "recipe": []}', "\ud800".encode("utf-8", "surrogatepass"), "["])
def test_a_damaged_recipe_record_is_refused_naming_it(resumable, capsys, text):
    path = resumable["checkpoint"] / RECIPE_NAME
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    refused(resumable["argv"], capsys, resumable["root"], path, "delete that checkpoint")


def test_keys_that_may_change_resume_from_the_checkpoint(resumable):
    moved = resumable["root"] / "datos" / "mismas-filas.jsonl"  # the same rows under another path
    moved.parent.mkdir()
    shutil.copy(resumable["rows"], moved)
    thesis = fingerprint(resumable["root"] / "tesis")
    done = run_cli(*resumable["argv"], f"dataset.train={moved}", "training.logging_steps=2", "training.save_steps=5",
                   "training.gradient_checkpointing=true", "lora.save_dtype=bfloat16")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((resumable["root"] / "adapter" / "spanish_ft_record.json").read_text())["metrics"]
    assert metrics["resumed_from"] == "checkpoint-2" and metrics["steps"] == 3
    assert fingerprint(resumable["root"] / "tesis") == thesis
