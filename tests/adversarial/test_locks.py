"""Locks: one training run per work folder. A second run into the same output refuses and names the
holder's pid; a lock left by a process that is gone is named and taken over; a lock from another
machine is named with the file to delete. Nothing of the user's changes in any case."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys

from harness import FAST, Training, assert_refused, fingerprint, run_cli

from training.__main__ import main
from training.files import LOCK_NAME, OUTPUT_MARKER


def held_lock(work, pid: int, host: str | None = None):
    """A work folder of ours whose lock names `pid` on `host` (this machine by default)."""
    work.mkdir()
    (work / OUTPUT_MARKER).write_text(json.dumps({"made_by": "spanish_ft", "what": "training work folder"}))
    lock = work / LOCK_NAME
    lock.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": "2025-01-01T00:00:00",
                                "command": "python -m training train other.yaml"}))
    return lock


def test_a_lock_held_by_a_live_process_refuses_and_names_its_pid(run_setup, capsys):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        held_lock(run_setup["work"], holder.pid)
        before = fingerprint(run_setup["work"].parent)
        code = main(["train", str(run_setup["recipe"]), *FAST, "training.max_steps=2"])
        err = capsys.readouterr().err
        assert_refused(code, err, run_setup["work"])
        assert f"pid {holder.pid}" in err and "in use by another run" in err
        assert fingerprint(run_setup["work"].parent) == before
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_named_and_taken_over(run_setup, capsys):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    lock = held_lock(run_setup["work"], gone.pid)
    code = main(["train", str(run_setup["recipe"]), *FAST, "training.max_steps=2"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"{lock}: taking over a stale lock (pid {gone.pid}" in err and "no longer running" in err
    assert not lock.exists()  # released at the end
    assert json.loads((run_setup["out"] / "spanish_ft_record.json").read_text())["metrics"]["steps"] == 2
    assert fingerprint(run_setup["thesis"]) == run_setup["before"]


def test_a_lock_from_another_machine_is_named_with_the_file_to_delete(run_setup, capsys):
    lock = held_lock(run_setup["work"], 4242, host="otra-maquina")
    before = fingerprint(run_setup["work"].parent)
    code = main(["train", str(run_setup["recipe"]), *FAST, "training.max_steps=2"])
    err = capsys.readouterr().err
    assert_refused(code, err, lock)
    assert "pid 4242 on another machine, otra-maquina" in err and f"delete {lock}" in err
    assert fingerprint(run_setup["work"].parent) == before


def test_two_real_trainings_into_one_output(run_setup):
    first = Training(run_setup["recipe"], *FAST, "training.max_steps=100000", "training.save_steps=100000")
    try:
        first.wait_for_step(1, 100000)
        lock = json.loads((run_setup["work"] / LOCK_NAME).read_text())
        assert lock["pid"] == first.process.pid and lock["host"] == socket.gethostname()
        second = run_cli("train", run_setup["recipe"], *FAST, "training.max_steps=2")
        assert_refused(second.returncode, second.stderr, run_setup["work"])
        assert f"pid {first.process.pid}" in second.stderr and "data:" not in second.stdout
        first.process.send_signal(signal.SIGINT)
        assert first.finish() == 130, first.stderr[-3000:]
    finally:
        first.stop()
    assert not (run_setup["work"] / LOCK_NAME).exists()
    assert not run_setup["out"].exists()
    assert fingerprint(run_setup["thesis"]) == run_setup["before"]
