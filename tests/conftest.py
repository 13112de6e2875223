"""Shared fixtures: tiny models of each family saved once per test session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiny import FAMILIES, build_model_dir


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict[str, Path]:
    """{family: folder} with a tiny random model and tokenizer for each family."""
    base = tmp_path_factory.mktemp("tiny-models")
    return {family: build_model_dir(family, base / family) for family in FAMILIES}


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: on two shared cores, torch's default of one thread per core
    oversubscribes and tiny-model steps run ~8x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
