"""Read a law corpus folder: its manifest (corpus.json) and its rows, checked against the manifest.

A corpus folder holds one `<norm-slug>.jsonl` per norm and `corpus.json`, which names each file
with its sha256, edition, date and counts. `corpus_sha256` (a digest of the manifest's file
digests) keys everything built from the corpus: the retrieval index cache, the validator's report.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from pathlib import Path

from training.files import sha256_file

CORPUS_DIR = Path(__file__).resolve().parents[1] / "leyes-ec" / "corpus"
MANIFEST = "corpus.json"
ROW_FIELDS = ("norma", "articulo", "titulo", "texto", "derogado", "estructura", "reformas", "edicion", "fecha",
              "fuente_sha256")


class CorpusError(ValueError):
    """A corpus folder that cannot be read as built; the message names the file and the fix."""


def norm_slug(norma: str) -> str:
    """'Código del Trabajo' -> 'codigo-del-trabajo': the norm's file name in a corpus folder."""
    folded = "".join(c for c in unicodedata.normalize("NFD", norma) if not unicodedata.combining(c)).lower()
    return re.sub(r"[^a-z0-9]+", "-", folded).strip("-")


def read_manifest(folder: str | Path = CORPUS_DIR) -> dict:
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CorpusError(f"{path}: missing; {folder} is not a law corpus (build one with "
                          "`python -m training corpus build --pdf FILE --norma NAME --edition ...`)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorpusError(f"{path}: unreadable ({err}); rebuild the corpus with `python -m training corpus build`") \
            from None
    normas = manifest.get("normas") if isinstance(manifest, dict) else None
    if not isinstance(normas, dict) or not all(isinstance(entry, dict) and isinstance(entry.get("file"), str)
                                               and isinstance(entry.get("sha256"), str) for entry in normas.values()):
        raise CorpusError(f"{path}: not a spanish_ft corpus manifest (expected 'normas' with a 'file' and 'sha256' "
                          "per norm); rebuild it with `python -m training corpus build`")
    return manifest


def corpus_sha256(manifest: dict) -> str:
    """One digest for the whole corpus: the norms' names and their files' sha256, in order."""
    digest = hashlib.sha256()
    for norma in sorted(manifest["normas"]):
        digest.update(f"{norma}\0{manifest['normas'][norma]['sha256']}\n".encode())
    return digest.hexdigest()


def load_corpus(folder: str | Path = CORPUS_DIR, *, check: bool = True) -> tuple[list[dict], str]:
    """Every article row of the corpus, norm by norm in manifest order, and the corpus sha256.

    With `check`, each file's sha256 must equal the manifest's (a file edited by hand is named)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    rows: list[dict] = []
    for norma, entry in manifest["normas"].items():
        path = folder / entry["file"]
        if Path(entry["file"]).name != entry["file"] or not path.is_file():
            raise CorpusError(f"{path}: listed in {folder / MANIFEST} for {norma} but missing; rebuild that norm")
        if check and sha256_file(path) != entry["sha256"]:
            raise CorpusError(f"{path}: changed since it was built (sha256 differs from {MANIFEST}); rebuild it with "
                              "`python -m training corpus build` rather than editing it")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise CorpusError(f"{path}:{number}: invalid JSON ({err.msg}); rebuild that norm") from None
            if not isinstance(row, dict) or not all(key in row for key in ROW_FIELDS):
                raise CorpusError(f"{path}:{number}: not an article row (needs {', '.join(ROW_FIELDS)})")
            rows.append(row)
    return rows, corpus_sha256(manifest)
