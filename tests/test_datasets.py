"""training.datasets.validate: the shipped datasets pass, and each kind of mistake is caught."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from training.__main__ import main as cli
from training.datasets.validate import CATEGORIES, DATA_DIR, RESUMIR_PREFIX, shipped_datasets, validate_dataset

REPO = Path(__file__).resolve().parents[1]


def _ley_row(n: int, norma="Código Civil", articulo=None, output=None) -> dict:
    articulo = articulo or str(n)
    return {"id": f"ley-{n:04d}", "instruction": f"¿Qué dice el artículo {articulo} número {n}?", "input": "",
            "output": output or f"Según el artículo {articulo} del {norma}, dispone algo.",
            "fuente": {"norma": norma, "articulo": articulo}}


def _write(directory: Path, split: str, rows: list) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{split}.jsonl"
    lines = [row if isinstance(row, str) else json.dumps(row, ensure_ascii=False) for row in rows]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _leyes(tmp_path: Path, train=None, test=None) -> Path:
    directory = tmp_path / "leyes-ec"
    _write(directory, "train", train if train is not None else [_ley_row(n) for n in range(1, 10)])
    _write(directory, "test", test if test is not None else [_ley_row(10)])
    return directory


def _instrucciones(tmp_path: Path, rows: int = 400, categories=CATEGORIES) -> Path:
    data = []
    for n in range(rows):
        category = categories[n % len(categories)]
        prefix = RESUMIR_PREFIX if category == "resumir" else "Explica"
        data.append({"id": f"ins-{n:04d}", "category": category, "instruction": f"{prefix} tarea {n}",
                     "input": "", "output": f"Respuesta {n}."})
    directory = tmp_path / "instrucciones-es"
    _write(directory, "train", data[: rows * 9 // 10])
    _write(directory, "test", data[rows * 9 // 10:])
    return directory


def _errors(directory: Path) -> str:
    return "\n".join(validate_dataset(directory).errors)


def test_every_shipped_dataset_is_valid():
    datasets = shipped_datasets()
    assert datasets, f"no dataset folders in {DATA_DIR}"
    for directory in datasets:
        report = validate_dataset(directory)
        assert report.errors == [], "\n".join(report.errors)


def test_both_datasets_are_shipped():
    names = {path.name for path in shipped_datasets()}
    assert {"leyes-ec", "instrucciones-es"} <= names, f"shipped: {sorted(names)}"


def test_shipped_leyes_ec_is_large_enough_and_covers_its_norms():
    report = validate_dataset(DATA_DIR / "leyes-ec")
    assert sum(report.rows.values()) >= 300
    norms = {key.split("/", 1)[1] for key in report.groups}
    assert len(norms) >= 5


def test_cli_exits_zero_on_shipped_data_without_importing_torch():
    code = ("import sys, training.__main__ as m; rc = m.main(['validate-data']); "
            "assert 'torch' not in sys.modules, 'validator imported torch'; sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "leyes-ec: train" in done.stdout


def test_small_valid_datasets_pass(tmp_path):
    assert _errors(_leyes(tmp_path)) == ""
    assert _errors(_instrucciones(tmp_path)) == ""


def test_bad_json_is_reported_with_its_line_number(tmp_path):
    rows = [_ley_row(n) for n in range(1, 10)]
    rows[3] = '{"id": "ley-0004", "instruction": '
    errors = _errors(_leyes(tmp_path, train=rows))
    assert "leyes-ec/train.jsonl:4: invalid JSON" in errors


def test_non_utf8_file_is_reported(tmp_path):
    directory = _leyes(tmp_path)
    path = directory / "train.jsonl"
    path.write_bytes(path.read_bytes() + "café".encode("latin-1") + b"\n")
    assert "train.jsonl:10: not valid UTF-8" in _errors(directory)


def test_missing_and_empty_fields_are_named(tmp_path):
    rows = [_ley_row(n) for n in range(1, 10)]
    del rows[1]["output"]
    rows[2]["instruction"] = "   "
    del rows[4]["fuente"]
    errors = _errors(_leyes(tmp_path, train=rows))
    assert "train.jsonl:2: field 'output': missing" in errors
    assert "train.jsonl:3: field 'instruction': empty" in errors
    assert "train.jsonl:5: field 'fuente': missing" in errors


def test_duplicate_question_across_splits_is_leakage(tmp_path):
    leaked = dict(_ley_row(10), instruction="  ¿QUÉ dice el artículo 3   número 3? ", id="ley-0010")
    errors = _errors(_leyes(tmp_path, test=[leaked]))
    assert "test.jsonl:1: field 'instruction': duplicate of" in errors
    assert "train.jsonl:3" in errors


def test_duplicate_id_is_reported(tmp_path):
    errors = _errors(_leyes(tmp_path, test=[dict(_ley_row(10), id="ley-0001")]))
    assert "test.jsonl:1: field 'id': 'ley-0001' already used" in errors


def test_answer_that_does_not_cite_its_source_is_reported(tmp_path):
    rows = [_ley_row(n) for n in range(1, 10)]
    rows[5]["output"] = "Según el artículo 99 del Código Civil, dispone algo."  # wrong article
    rows[6]["output"] = "Según el artículo 7, dispone algo."  # no norm named
    errors = _errors(_leyes(tmp_path, train=rows))
    assert "train.jsonl:6: field 'output': does not cite artículo 6 of Código Civil" in errors
    assert "train.jsonl:7: field 'output': does not cite" in errors


def test_unknown_norm_is_reported_with_the_allowed_names(tmp_path):
    rows = [_ley_row(n) for n in range(1, 10)]
    rows[0] = _ley_row(1, norma="Código de Comercio")
    rows[1] = _ley_row(2, norma="COIP")  # an alias is not the canonical name
    errors = _errors(_leyes(tmp_path, train=rows))
    assert "train.jsonl:1: field 'fuente.norma': 'Código de Comercio' is not a canonical norm" in errors
    assert "train.jsonl:2: field 'fuente.norma': 'COIP'" in errors
    assert "Código Orgánico Integral Penal" in errors


def test_too_small_test_split_is_reported(tmp_path):
    errors = _errors(_leyes(tmp_path, train=[_ley_row(n) for n in range(1, 11)], test=[_ley_row(11)]))
    assert "test split holds 1/11 rows" in errors


def test_missing_split_is_reported(tmp_path):
    directory = _leyes(tmp_path)
    (directory / "test.jsonl").unlink()
    assert "test.jsonl: missing" in _errors(directory)


def test_instrucciones_rules(tmp_path):
    assert "needs at least 400" in _errors(_instrucciones(tmp_path / "few", rows=390))
    assert "no rows for traducir" in _errors(_instrucciones(tmp_path / "cats", categories=CATEGORIES[:-1]))
    directory = _instrucciones(tmp_path / "prefix")
    path = directory / "train.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    rows[1]["instruction"] = "Resume esto por favor"  # row 2 is a 'resumir' row
    rows[2]["category"] = "poesia"
    _write(directory, "train", rows)
    errors = _errors(directory)
    assert "train.jsonl:2: field 'instruction': a 'resumir' row must start with" in errors
    assert "train.jsonl:3: field 'category': 'poesia' is not one of" in errors


def test_cli_exit_code_and_messages_on_bad_data(tmp_path, capsys):
    rows = [_ley_row(n) for n in range(1, 10)]
    rows[0] = "not json"
    directory = _leyes(tmp_path, train=rows)
    assert cli(["validate-data", str(directory)]) == 1
    captured = capsys.readouterr()
    assert "train.jsonl:1: invalid JSON" in captured.err
    assert "1 dataset(s), 1 error(s)" in captured.out


def test_unknown_dataset_folder_is_reported(tmp_path):
    directory = tmp_path / "otra-cosa"
    _write(directory, "train", [_ley_row(1)])
    assert "unknown dataset kind 'otra-cosa'" in _errors(directory)


@pytest.mark.parametrize("split", ["train", "test"])
def test_shipped_leyes_rows_follow_the_row_format(split):
    for line in (DATA_DIR / "leyes-ec" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        assert set(row) - {"derivado_de"} == {"id", "instruction", "input", "output", "fuente"}
        assert row["input"] == "" and row["id"].startswith("ley-")


def _topic_rows(start: int, count: int) -> list[dict]:
    return [{"id": f"ley-{n:04d}", "instruction": f"¿Qué regla hay sobre el tema {n}?", "input": "",
             "output": f"Sí. Según el artículo {n} del Código Civil, rige la regla {n}.",
             "fuente": {"norma": "Código Civil", "articulo": str(n)}} for n in range(start, start + count)]


def test_article_questions_derive_rows_in_their_own_split_once_per_article(tmp_path):

    train, test = _topic_rows(1, 12), _topic_rows(13, 4)
    # a train row on the same article as a test row: the article is asked about once, in test
    train.append({**train[0], "id": "ley-0100", "instruction": "Otra pregunta", "fuente": {"norma": "Código Civil", "articulo": "13"},
                  "output": "Según el artículo 13 del Código Civil, otra regla."})
    directory = _leyes(tmp_path, train=train, test=test)
    assert cli(["derive-questions", str(directory), "--train-every", "1", "--test-every", "2"]) == 0
    rows = {split: [json.loads(line) for line in (directory / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
            for split in ("train", "test")}
    derived = {split: [r for r in rows[split] if "derivado_de" in r] for split in rows}
    assert len(derived["test"]) == 2 and len(derived["train"]) == 12  # test rows 13, 15; every train article but 13
    by_id = {r["id"]: r for split in rows for r in rows[split]}
    for split, new_rows in derived.items():
        ids_in_split = {r["id"] for r in rows[split]}
        for row in new_rows:
            source = by_id[row["derivado_de"]]
            assert row["derivado_de"] in ids_in_split  # never crosses splits
            assert f"artículo {source['fuente']['articulo']} del Código Civil" in row["instruction"]
            assert row["output"] == source["output"].removeprefix("Sí. ") and row["fuente"] == source["fuente"]
    articles = [r["fuente"]["articulo"] for split in derived.values() for r in split]
    assert len(articles) == len(set(articles))
    assert _errors(directory) == ""
    before = {split: (directory / f"{split}.jsonl").read_bytes() for split in rows}
    assert cli(["derive-questions", str(directory), "--train-every", "1", "--test-every", "2"]) == 0  # idempotent
    assert before == {split: (directory / f"{split}.jsonl").read_bytes() for split in rows}


def test_derived_row_that_drifted_from_its_source_is_reported(tmp_path):
    from training.datasets.derivation import derive

    train = _topic_rows(1, 9)
    edited = {"id": "ley-0050", **derive(train[0])}
    edited["output"] = edited["output"].replace("regla 1", "regla inventada")
    crossing = {"id": "ley-0051", **derive(_topic_rows(20, 1)[0])}  # its source lives in the test split
    directory = _leyes(tmp_path, train=train + [edited, crossing], test=_topic_rows(20, 1))
    errors = _errors(directory)
    assert "train.jsonl:10: field 'output': not the answer derived from ley-0001" in errors
    assert "train.jsonl:11: field 'derivado_de': no row 'ley-0020' in the train split" in errors


def test_article_questions_refuse_invalid_data_and_write_nothing(tmp_path, capsys):

    directory = _leyes(tmp_path, train=_topic_rows(1, 9) + ["{not json"], test=_topic_rows(20, 1))
    before = (directory / "train.jsonl").read_bytes()
    assert cli(["derive-questions", str(directory)]) == 1
    assert "train.jsonl:10" in capsys.readouterr().err
    assert (directory / "train.jsonl").read_bytes() == before
