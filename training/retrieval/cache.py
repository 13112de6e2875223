"""The index is built once per corpus and kept on disk; each process loads it once.

Folder: `<cache>/retrieval/<corpus sha256>/`, where <cache> is $SPANISH_FT_CACHE, else
$XDG_CACHE_HOME/spanish_ft, else ~/.cache/spanish_ft. It holds the two bm25s indexes (articles and
their paragraphs), `articles.json` and `manifest.json` (format, bm25s version, settings digest,
sha256 of every other file). It is written to a temporary sibling and renamed into place, so a
reader sees all of it or none of it.
On load every file is checked against the manifest: a corrupt or partial cache is named in a
warning and rebuilt; an unwritable cache folder is a warning too, and the index is kept in memory.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

from training.datasets.corpus.read import CORPUS_DIR, corpus_sha256, load_corpus, read_manifest
from training.files import sha256_file
from training.retrieval.index import FORMAT, Index, build_index, settings_digest

MANIFEST = "manifest.json"
ARTICLES = "articles.json"
_LOADED: dict[tuple[str, str], Index] = {}  # (cache folder, settings) -> index; one load per process


class CacheWarning(UserWarning):
    """The on-disk index cache was unusable (corrupt, partial, unwritable); it was rebuilt or skipped."""


def cache_root() -> Path:
    if os.environ.get("SPANISH_FT_CACHE"):
        return Path(os.environ["SPANISH_FT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "spanish_ft"


def cache_folder(sha: str, root: str | Path | None = None) -> Path:
    return Path(root if root is not None else cache_root()) / "retrieval" / sha


def _bm25s_version() -> str:
    from bm25s.version import __version__

    return __version__


def save_index(index: Index, folder: Path) -> None:
    """Write the index to `folder` atomically (temporary sibling, then rename); keep a finished one."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        index.bm25.save(str(tmp / "bm25s"), show_progress=False)
        index.passages.save(str(tmp / "passages"), show_progress=False)
        (tmp / ARTICLES).write_text(json.dumps(index.articles, ensure_ascii=False), encoding="utf-8")
        files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest = {"format": FORMAT, "bm25s": _bm25s_version(), "settings": settings_digest(),
                    "corpus_sha256": index.corpus_sha256, "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        if folder.exists():  # stale or corrupt: move it aside first, a rename cannot replace a folder
            aside = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
            os.replace(folder, aside / "old")
            shutil.rmtree(aside, ignore_errors=True)
        os.rename(tmp, folder)
    except OSError:
        if folder.joinpath(MANIFEST).is_file():  # another process finished first: theirs is as good
            return
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_cache(folder: Path, sha: str) -> str | None:
    """None if the cache folder is complete and current; else why not ("missing", "stale", or a fault)."""
    if not folder.is_dir():
        return "missing"
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        built_with = (manifest["format"], manifest["bm25s"], manifest["settings"])
        if built_with != (FORMAT, _bm25s_version(), settings_digest()):
            return "stale"
        if manifest["corpus_sha256"] != sha:
            return f"{folder / MANIFEST} names another corpus"
        for name, digest in manifest["files"].items():
            if sha256_file(folder / name) != digest:
                return f"{folder / name} does not match its sha256 in {MANIFEST}"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{folder} is incomplete or unreadable ({type(err).__name__}: {err})"
    return None


def _read_cache(folder: Path, sha: str) -> Index:
    import bm25s

    bm25 = bm25s.BM25.load(str(folder / "bm25s"), show_progress=False)
    passages = bm25s.BM25.load(str(folder / "passages"), show_progress=False)
    articles = json.loads((folder / ARTICLES).read_text(encoding="utf-8"))
    return Index(bm25, passages, articles, sha)


def load_index(corpus_dir: str | Path = CORPUS_DIR, cache_dir: str | Path | None = None) -> Index:
    """The index of the corpus: from this process's memory, else the disk cache, else built (and cached)."""
    sha = corpus_sha256(read_manifest(corpus_dir))
    folder = cache_folder(sha, cache_dir)
    key = (str(folder.resolve()), settings_digest())
    if key in _LOADED:
        return _LOADED[key]
    problem = check_cache(folder, sha)
    index = None
    if problem is None:
        try:
            index = _read_cache(folder, sha)
        except (OSError, ValueError, KeyError, TypeError) as err:
            problem = f"{folder} could not be read ({type(err).__name__}: {err})"
    if problem not in (None, "missing", "stale"):
        warnings.warn(f"retrieval index cache {folder}: {problem}; rebuilding it", CacheWarning, stacklevel=2)
    if index is None:
        rows, sha = load_corpus(corpus_dir)
        index = build_index(rows, sha)
        try:
            save_index(index, folder)
        except OSError as err:
            warnings.warn(f"could not write the retrieval index cache {folder} ({err}); using it from memory only",
                          CacheWarning, stacklevel=2)
    _LOADED[key] = index
    return index
