"""Fixtures of the adversarial tests (helpers: harness.py)."""

from __future__ import annotations

import pytest
from harness import fingerprint, make_adapter, user_folder, write_recipe, write_rows


@pytest.fixture
def run_setup(tiny_model_dirs, tmp_path) -> dict:
    """A tiny training recipe writing tmp_path/adapter, beside a user's thesis folder and its fingerprint."""
    thesis = user_folder(tmp_path / "tesis")
    rows = write_rows(tmp_path / "rows.jsonl", 8)
    out = tmp_path / "adapter"
    recipe = write_recipe(tmp_path / "tiny.yaml", tiny_model_dirs["llama2"], rows, out)
    return {"thesis": thesis, "before": fingerprint(thesis), "recipe": recipe, "out": out,
            "work": tmp_path / "adapter.work"}


@pytest.fixture(scope="module")
def kit(tiny_model_dirs, tmp_path_factory) -> dict:
    """The tiny llama2 base, two adapters, held-out rows and training rows, outside each test's tmp_path."""
    root = tmp_path_factory.mktemp("kit")
    base = tiny_model_dirs["llama2"]
    return {"base": base, "a": make_adapter(base, root / "a", seed=1), "b": make_adapter(base, root / "b", seed=2),
            "test": write_rows(root / "held-out" / "test.jsonl"), "train": write_rows(root / "train.jsonl", 8)}
