"""Interruptions: Ctrl-C (SIGINT) or SIGTERM sent to a real `python -m training train` saves a
checkpoint at the current step, exits 130 or 143 with the checkpoint named, and `resume=true`
continues from that very step; nothing of the user's beside the run changes."""

from __future__ import annotations

import json
import re
import signal

from harness import FAST, Training, fingerprint, run_cli

MAX_STEPS = 100000
LONG = [*FAST, f"training.max_steps={MAX_STEPS}", f"training.save_steps={MAX_STEPS}"]


def interrupt(setup: dict, signum: int) -> tuple[int, str, int]:
    """Start a long training, send `signum` after two steps; (exit code, stderr, checkpoint step)."""
    training = Training(setup["recipe"], *LONG)
    try:
        training.wait_for_step(2, MAX_STEPS)
        training.process.send_signal(signum)
        code = training.finish()
    finally:
        training.stop()
    found = re.search(r"checkpoint saved in (\S+)/checkpoint-(\d+);", training.stderr)
    assert found, training.stderr[-3000:]
    return code, training.stderr, int(found.group(2))


def test_ctrl_c_saves_a_checkpoint_and_resume_continues_from_it(run_setup):
    code, stderr, step = interrupt(run_setup, signal.SIGINT)
    assert code == 130, stderr[-3000:]
    assert f"stopped by SIGINT at step {step}" in stderr and "resume=true" in stderr
    assert str(run_setup["work"] / f"checkpoint-{step}") in stderr and "Traceback" not in stderr
    checkpoint = run_setup["work"] / f"checkpoint-{step}"
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == step
    assert (checkpoint / "optimizer.pt").is_file()
    assert not run_setup["out"].exists()  # no half adapter
    assert not (run_setup["work"] / "spanish_ft.lock").exists()  # the lock went with the run

    resumed = run_cli("train", run_setup["recipe"], *FAST, f"training.max_steps={step + 2}", "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((run_setup["out"] / "spanish_ft_record.json").read_text())["metrics"]
    assert metrics["resumed_from"] == f"checkpoint-{step}" and metrics["steps"] == step + 2
    assert fingerprint(run_setup["thesis"]) == run_setup["before"]


def test_sigterm_saves_a_checkpoint_and_exits_143(run_setup):
    code, stderr, step = interrupt(run_setup, signal.SIGTERM)
    assert code == 143, stderr[-3000:]
    assert f"stopped by SIGTERM at step {step}" in stderr and "Traceback" not in stderr
    assert (run_setup["work"] / f"checkpoint-{step}" / "trainer_state.json").is_file()
    assert not run_setup["out"].exists() and not (run_setup["work"] / "spanish_ft.lock").exists()
    assert fingerprint(run_setup["thesis"]) == run_setup["before"]


def test_a_rerun_without_resume_is_refused_and_names_the_checkpoint(run_setup):
    code, stderr, step = interrupt(run_setup, signal.SIGINT)
    assert code == 130, stderr[-3000:]
    again = run_cli("train", run_setup["recipe"], *FAST, "training.max_steps=3")
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert f"checkpoint-{step}" in again.stderr and "resume=true" in again.stderr
    assert str(run_setup["work"]) in again.stderr
    assert "data:" not in again.stdout  # refused before the data was read
    assert fingerprint(run_setup["thesis"]) == run_setup["before"]
