"""Validate the shipped datasets (or any dataset folder) before training on them.

    python -m training validate-data                       # every folder in training/datasets/
    python -m training validate-data training/datasets/leyes-ec

A dataset is a folder named after its kind (`instrucciones-es` or `leyes-ec`) holding
`train.jsonl` and `test.jsonl`: UTF-8 JSON Lines, one alpaca object per line. Every
problem is reported at once as `file:line: field: what is wrong`; the exit code is 1 if
there is any. Imports neither torch nor transformers, so it runs in a second.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from training.datasets.citations import NORMS, cites
from training.datasets.corpus.verify import check_against_corpus
from training.datasets.derivation import derive
from training.safeyaml import shorten, shown
from training.strict_json import RowError, parse_row

DATA_DIR = Path(__file__).resolve().parent
SPLITS = ("train", "test")
MIN_TEST_SHARE = 0.10
CATEGORIES = ("explicar", "resumir", "reescribir", "clasificar", "extraer",
              "listar", "correo", "razonamiento", "aritmetica", "traducir")
RESUMIR_PREFIX = "Resume el siguiente artículo:"
MIN_INSTRUCCIONES_ROWS = 400
KINDS = ("instrucciones-es", "leyes-ec")
UTF8_BOM = b"\xef\xbb\xbf"  # what Notepad and Excel write first; read as nothing


@dataclass
class Report:
    """Result of validating one dataset folder."""

    directory: Path
    errors: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)  # split -> row count
    groups: collections.Counter = field(default_factory=collections.Counter)  # category or norm -> rows
    unsourced: dict[str, int] = field(default_factory=dict)  # norm without text in the corpus -> rows unchecked


def _where(path: Path, line: int) -> str:
    try:
        path = path.resolve().relative_to(Path.cwd())
    except ValueError:
        pass
    return f"{path}:{line}"


def _read_rows(path: Path, report: Report) -> list[tuple[int, dict]]:
    """(line number, object) for every line that is a JSON object; an error for each other line."""
    lines = path.read_bytes().removeprefix(UTF8_BOM).split(b"\n")
    if not any(line.strip() for line in lines):
        report.errors.append(f"{_where(path, 1)}: the file is empty; JSON Lines needs one object per line")
        return []
    rows = []
    for number, raw in enumerate(lines, start=1):
        where = _where(path, number)
        if not raw.strip():
            if number != len(lines):  # only the final newline may leave an empty line
                report.errors.append(f"{where}: empty line; JSON Lines needs one object per line")
            continue
        try:
            row = parse_row(raw.decode("utf-8"))
        except UnicodeDecodeError as err:
            report.errors.append(f"{where}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1}); "
                                 "save the file as UTF-8")
            continue
        except RowError as err:  # not JSON, or not text: a lone surrogate, a key given twice (strict_json)
            report.errors.append(f"{where}: {err}")
            continue
        if not isinstance(row, dict):
            report.errors.append(f"{where}: expected a JSON object, got {type(row).__name__}")
            continue
        rows.append((number, row))
    return rows


def _check_text_fields(row: dict, where: str, kind: str) -> list[str]:
    errors = []
    for key in ("id", "instruction", "input", "output"):
        if not isinstance(row.get(key), str):
            errors.append(f"{where}: field '{key}': missing or not a string")
        elif key != "input" and not row[key].strip():
            errors.append(f"{where}: field '{key}': empty")
    if kind == "instrucciones-es":
        category = row.get("category")
        if category not in CATEGORIES:
            errors.append(f"{where}: field 'category': {shown(category)} is not one of {', '.join(CATEGORIES)}")
        elif category == "resumir" and not str(row.get("instruction", "")).startswith(RESUMIR_PREFIX):
            errors.append(f"{where}: field 'instruction': a 'resumir' row must start with {RESUMIR_PREFIX!r}")
    return errors


def _check_fuente(row: dict, where: str) -> list[str]:
    fuente = row.get("fuente")
    if not isinstance(fuente, dict):
        return [f"{where}: field 'fuente': missing or not an object with 'norma' and 'articulo'"]
    errors = []
    if fuente.get("norma") not in NORMS:
        errors.append(f"{where}: field 'fuente.norma': {shown(fuente.get('norma'))} is not a canonical norm; "
                      f"allowed: {'; '.join(NORMS)}")
    if not isinstance(fuente.get("articulo"), str) or not fuente["articulo"].strip():
        errors.append(f"{where}: field 'fuente.articulo': missing, empty or not a string")
    if not errors and isinstance(row.get("output"), str) and not cites(row["output"], fuente):
        errors.append(f"{where}: field 'output': does not cite artículo {shorten(fuente['articulo'])} "
                      f"of {fuente['norma']} (name the norm next to the article number)")
    return errors


def _normalised(row: dict) -> str:
    return re.sub(r"\s+", " ", f"{row.get('instruction', '')}\n{row.get('input', '')}".lower()).strip()


def validate_dataset(directory: Path) -> Report:
    """Check one dataset folder; the folder name says which rules apply."""
    directory = Path(directory)
    report = Report(directory)
    kind = directory.name
    if kind not in KINDS:
        report.errors.append(f"{directory}: unknown dataset kind {kind!r}; name the folder one of {', '.join(KINDS)}")
        return report
    ids: dict[str, str] = {}
    prompts: dict[str, str] = {}
    read: dict[str, list[tuple[str, dict]]] = {}
    for split in SPLITS:
        path = directory / f"{split}.jsonl"
        if not path.is_file():
            report.errors.append(f"{path}: missing; every dataset needs {' and '.join(s + '.jsonl' for s in SPLITS)}")
            continue
        rows = _read_rows(path, report)
        report.rows[split] = len(rows)
        read[split] = [(_where(path, number), row) for number, row in rows if _well_formed(row)]
        for number, row in rows:
            where = _where(path, number)
            report.errors += _check_text_fields(row, where, kind)
            if kind == "leyes-ec":
                report.errors += _check_fuente(row, where)
            fuente = row.get("fuente") if isinstance(row.get("fuente"), dict) else {}
            group = row.get("category") if kind == "instrucciones-es" else fuente.get("norma")
            report.groups[f"{split}/{shorten(str(group))}"] += 1
            row_id, prompt = row.get("id"), _normalised(row)
            if not isinstance(row_id, str):
                row_id = None  # reported above; a list or an object cannot be compared as an id
            elif row_id in ids:
                report.errors.append(f"{where}: field 'id': {shown(row_id)} already used at {ids[row_id]}")
            if prompt in prompts:
                report.errors.append(f"{where}: field 'instruction': duplicate of {prompts[prompt]} "
                                     "(same instruction and input after lowercasing and collapsing spaces)")
            if row_id is not None:
                ids.setdefault(row_id, where)
            prompts.setdefault(prompt, where)
    if kind == "leyes-ec":
        report.errors += _check_derived(read)
        corpus_errors, report.unsourced = check_against_corpus(read, directory)
        report.errors += corpus_errors
    report.errors += _check_totals(report, kind)
    return report


def _well_formed(row: dict) -> bool:
    """Text fields that are text and a `fuente` object of texts: what the check of derived rows reads."""
    fuente = row.get("fuente", {})
    texts = [row.get(key) for key in ("id", "instruction", "input", "output")]
    return isinstance(fuente, dict) and all(isinstance(text, str) for text in [*texts, *fuente.values()])


def _check_derived(read: dict[str, list[tuple[str, dict]]]) -> list[str]:
    """A row with `derivado_de` (training/datasets/derivation.py) must come, in its own split,
    from that row with the same fuente, its answer being exactly the one derived from the source."""
    errors = []
    for split, rows in read.items():
        by_id = {row.get("id"): row for _, row in rows}
        for where, row in rows:
            if "derivado_de" not in row:
                continue
            if not isinstance(row["derivado_de"], str):
                errors.append(f"{where}: field 'derivado_de': must be the id (text) of the row it derives from")
                continue
            source = by_id.get(row["derivado_de"])
            if source is None:
                errors.append(f"{where}: field 'derivado_de': no row {shown(row['derivado_de'])} in the {split} split "
                              "(a derived row stays in the split of its source)")
                continue
            expected = derive(source)
            if expected is None or expected["output"] != row.get("output") or expected["fuente"] != row.get("fuente"):
                errors.append(f"{where}: field 'output': not the answer derived from {shorten(row['derivado_de'])} "
                              "(re-run python -m training derive-questions)")
    return errors


def _check_totals(report: Report, kind: str) -> list[str]:
    errors = []
    total = sum(report.rows.values())
    if len(report.rows) == len(SPLITS) and total and report.rows["test"] / total < MIN_TEST_SHARE:
        errors.append(f"{report.directory}: test split holds {report.rows['test']}/{total} rows "
                      f"({report.rows['test'] / total:.1%}); it needs at least {MIN_TEST_SHARE:.0%}")
    if kind == "instrucciones-es":
        if total < MIN_INSTRUCCIONES_ROWS:
            errors.append(f"{report.directory}: {total} rows; instrucciones-es needs at least {MIN_INSTRUCCIONES_ROWS}")
        present = {key.split("/", 1)[1] for key in report.groups}
        missing = [c for c in CATEGORIES if c not in present]
        if missing:
            errors.append(f"{report.directory}: field 'category': no rows for {', '.join(missing)}")
    return errors


def shipped_datasets() -> list[Path]:
    """The data folders beside this module (code packages such as corpus/ are not datasets)."""
    return sorted(path for path in DATA_DIR.iterdir()
                  if path.is_dir() and not path.name.startswith((".", "_")) and not (path / "__init__.py").exists())


def print_summary(report: Report) -> None:
    rows = ", ".join(f"{split} {count}" for split, count in report.rows.items())
    print(f"{report.directory.name}: {rows}")
    groups = sorted({key.split("/", 1)[1] for key in report.groups})
    for group in groups:
        counts = ", ".join(f"{split} {report.groups[f'{split}/{group}']}" for split in SPLITS)
        print(f"  {group}: {counts}")
    for norma, count in report.unsourced.items():
        print(f"  not checked against the law corpus (it has no text of {norma}): {count} rows")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", type=Path,
                        help="dataset folders (default: every folder in training/datasets/)")


def run(args: argparse.Namespace) -> int:
    reports = [validate_dataset(path if path.is_dir() else path.parent) for path in (args.paths or shipped_datasets())]
    for report in reports:
        print_summary(report)
    errors = [error for report in reports for error in report.errors]
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    print(f"{len(reports)} dataset(s), {len(errors)} error(s)")
    return 1 if errors else 0
