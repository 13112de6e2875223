"""What the adversarial tests share: a user's folder to protect, its fingerprint, the command line,
tiny adapters and a tiny training recipe (test helper, not shipped).

Every case checks the same four things: the exit code, that the message names the culprit path,
that the output is not a bare traceback, and that every file around the output is byte-for-byte
what it was (`fingerprint` before and after).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = "instruction-templates/spanish_ft-Llama-2-chat.yaml"
FAST = ["training.batch_size=4", "training.grad_accumulation=1", "training.learning_rate=0.003",
        "training.scheduler=constant", "training.warmup_ratio=0", "training.logging_steps=1", "lora.rank=4",
        "training.report_to=none", "dataset.max_tokens=128"]
ROWS = [{"instruction": "¿Cuál es la capital de Ecuador?", "input": "", "output": "La capital de Ecuador es Quito."},
        {"instruction": "Calcula 12 más 30.", "input": "", "output": "El resultado es 42."}]


def write(path: Path, data: str | bytes) -> Path:
    """Write `data` (text as UTF-8) to `path`, making its folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def user_folder(path: Path) -> Path:
    """A folder of someone's own work: a thesis, its figures, notes (nothing spanish_ft made)."""
    (path / "figuras").mkdir(parents=True)
    (path / "tesis.tex").write_text("\\chapter{Introducción}\nMi tesis.\n", encoding="utf-8")
    (path / "figuras" / "grafico.png").write_bytes(bytes(range(256)) * 4)
    (path / "notas.txt").write_text("no borrar\n", encoding="utf-8")
    return path


def fingerprint(root: Path) -> dict[str, str]:
    """{relative path: sha256 | 'dir' | 'link -> target'} of everything under root, links not followed."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            key = str(path.relative_to(root))
            if path.is_symlink():
                found[key] = f"link -> {os.readlink(path)}"
            elif path.is_dir():
                found[key] = "dir"
            else:
                found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def cli_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}


def run_cli(*args, env: dict | None = None, timeout: float = 300, prefix: list[str] = (),
            **options) -> subprocess.CompletedProcess:
    """`python -m training ARGS` in a fresh process, as a user would run it (after `prefix`, if any)."""
    command = [*prefix, sys.executable, "-m", "training", *map(str, args)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=env or cli_env(), **options)


def assert_refused(code: int, stderr: str, culprit: Path, expected_code: int = 1) -> None:
    """The exit code, the culprit named, and a message rather than a traceback."""
    assert code == expected_code, stderr[-3000:]
    assert str(culprit) in stderr, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "error: " in stderr or "interrupted: " in stderr, stderr[-3000:]


def make_adapter(base: Path, out: Path, seed: int = 1) -> Path:
    """A real PEFT LoRA adapter on the tiny llama2 base, with a spanish_ft record (base, family, template)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=2, target_modules=["q_proj"]))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)
    model.save_pretrained(out)
    record = {"format": 1, "kind": "trained", "name": out.name, "family": "llama2",
              "base_model": {"name_or_path": str(base)},
              "template": {"name": "spanish_ft-Llama-2-chat", "file": TEMPLATE, "sha256": "0" * 64}}
    (out / "spanish_ft_record.json").write_text(json.dumps(record), encoding="utf-8")
    return out


def write_rows(path: Path, copies: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in ROWS * copies), encoding="utf-8")
    return path


def write_recipe(path: Path, base: Path, train_rows: Path, output_dir: Path, **keys) -> Path:
    """A tiny llama2 training recipe (run it with FAST and training.max_steps=N)."""
    recipe = {"name": "tiny", "family": "llama2", "base_model": str(base),
              "dataset": {"train": str(train_rows), "max_tokens": 128}, "output_dir": str(output_dir), **keys}
    path.write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
    return path


def read_only_command(folder: Path) -> list[str] | None:
    """A command prefix under which `folder` is read-only for the process, or None when none can be made.

    As a normal user, chmod does it (the caller makes the folder 0555). Root ignores modes, so for root
    the folder is bind-mounted read-only in a private mount namespace (`unshare -m`).
    """
    if os.geteuid() != 0:
        return []
    if shutil.which("unshare") is None:
        return None
    probe = subprocess.run(["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0"', str(folder)],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return None
    return ["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0" && shift && exec "$@"', str(folder), "--"]


class Training:
    """A real `python -m training train` process whose progress bar is watched from a thread."""

    def __init__(self, *args, env: dict | None = None):
        import threading

        command = [sys.executable, "-m", "training", "train", *map(str, args)]
        self.process = subprocess.Popen(command, cwd=ROOT, env=env or cli_env(), stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self.stderr, self.stdout = "", ""
        self._readers = [threading.Thread(target=self._read, args=(name,), daemon=True)
                         for name in ("stderr", "stdout")]
        for reader in self._readers:
            reader.start()

    def _read(self, name: str) -> None:
        stream = getattr(self.process, name)
        while chunk := stream.read(1):
            setattr(self, name, getattr(self, name) + chunk)

    def wait_for_step(self, step: int, max_steps: int, timeout: float = 120) -> None:
        """Until the training bar (of `max_steps`) shows `step` steps done (fails if the process ends first)."""
        import re
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = [int(n) for n in re.findall(rf"\|\s*(\d+)/{max_steps} \[", self.stderr)]
            if done and max(done) >= step:
                return
            if self.process.poll() is not None:
                raise AssertionError(f"training ended (exit {self.process.returncode}) first:\n{self.stderr[-3000:]}")
            time.sleep(0.05)
        raise AssertionError(f"no step {step} within {timeout} s:\n{self.stderr[-3000:]}")

    def finish(self, timeout: float = 120) -> int:
        code = self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=10)
        return code

    def stop(self) -> None:
        """Kill it if it still runs (test cleanup)."""
        if self.process.poll() is None:
            self.process.kill()
            self.finish()


def refused(argv: list, capsys, folder: Path, culprit, *said: str) -> str:
    """Run `python -m training` in-process: exit 1, the culprit and every `said` in the message, `folder` unchanged."""
    from training.__main__ import main

    before = fingerprint(folder)
    code = main([str(arg) for arg in argv])
    err = capsys.readouterr().err
    assert_refused(code, err, culprit)
    for text in said:
        assert text in err, err[-3000:]
    assert fingerprint(folder) == before
    return err
