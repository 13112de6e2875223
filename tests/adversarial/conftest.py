"""Fixtures of the adversarial tests (helpers: harness.py)."""

from __future__ import annotations

import pytest
from harness import fingerprint, user_folder, write_recipe, write_rows


@pytest.fixture
def run_setup(tiny_model_dirs, tmp_path) -> dict:
    """A tiny training recipe writing tmp_path/adapter, beside a user's thesis folder and its fingerprint."""
    thesis = user_folder(tmp_path / "tesis")
    rows = write_rows(tmp_path / "rows.jsonl", 8)
    out = tmp_path / "adapter"
    recipe = write_recipe(tmp_path / "tiny.yaml", tiny_model_dirs["llama2"], rows, out)
    return {"thesis": thesis, "before": fingerprint(thesis), "recipe": recipe, "out": out,
            "work": tmp_path / "adapter.work"}
