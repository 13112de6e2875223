"""README's first two commands and .ci/run stay in step."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def first_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    head = text.split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", head, flags=re.DOTALL)]


def test_readme_starts_with_two_commands_setup_demo_then_tests():
    setup, tests = first_commands()
    assert "pip install torch==2.13.0" in setup  # the CPU build on local disk, never a CUDA torch
    assert setup.endswith("-m training demo")
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command_after_the_readme_setup():
    setup, tests = first_commands()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert tests in ci.splitlines()
    install_steps = [step.strip() for step in setup.split("&&")[:-1]]
    for step in install_steps:
        assert step.replace(".venv/bin/pip install ", "") in ci, step
