"""Ctrl-C (SIGINT) or SIGTERM during training: a checkpoint at the current step, then a clean stop.

The first signal is noted; at the end of the step in progress the trainer saves a checkpoint
(`control.should_save`) and stops (`control.should_training_stop`). `train` then raises
TrainingInterrupted, and `python -m training train` exits 130 (SIGINT) or 143 (SIGTERM), the codes
a shell gives those signals; `resume=true` continues from that checkpoint. A second signal stops at
once, without one. Under DDP the processes agree on the signal at every step end (an all-reduce of
one number), so they all stop at the same step and save the same checkpoint together.
The handlers are active only while the trainer runs its steps; before that (loading), a signal
stops the command at once, and nothing has been written yet.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from transformers import TrainerCallback

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by a signal; `exit_code` is 128 + the signal's number, `str()` says what was saved."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class CheckpointOnSignal(TrainerCallback):
    """Turns SIGINT/SIGTERM into a checkpoint at the next step end and a stop (see the module docstring)."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def on_train_begin(self, args, state, control, **kwargs):
        if threading.current_thread() is threading.main_thread():  # Python delivers signals there only
            self._previous = {sig: signal.signal(sig, self._note) for sig in SIGNALS}

    def on_step_end(self, args, state, control, **kwargs):
        if self._agreed_signal(args):
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        self.restore()

    def restore(self) -> None:
        """Put back the handlers that were there before training (also after an exception)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _note(self, signum, frame) -> None:
        if self.signum is not None:
            self.restore()
            raise TrainingInterrupted(signum, "stopped at once by a second signal, without a checkpoint")
        self.signum = signum
        print(f"\n{signal.Signals(signum).name} received: saving a checkpoint at the end of this step, then "
              "stopping (send it again to stop at once, without a checkpoint)", file=sys.stderr, flush=True)

    def _agreed_signal(self, args) -> bool:
        """Whether any process got a signal; under DDP all processes learn it at the same step."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            import torch

            seen = torch.tensor([self.signum or 0], device=args.device)
            dist.all_reduce(seen, op=dist.ReduceOp.MAX)
            self.signum = int(seen.item()) or None
        return self.signum is not None

    def outcome(self, state, work_dir: Path, recipe: str) -> TrainingInterrupted | None:
        """The exception that reports the stop and its checkpoint, or None when no signal came."""
        if self.signum is None:
            return None
        name, step = signal.Signals(self.signum).name, state.global_step
        checkpoint = Path(work_dir) / f"checkpoint-{step}"
        if (checkpoint / "trainer_state.json").is_file():
            return TrainingInterrupted(self.signum, (
                f"stopped by {name} at step {step}: checkpoint saved in {checkpoint}; continue with "
                f"python -m training train {recipe} [the same overrides] resume=true"))
        newest = sorted(Path(work_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
        return TrainingInterrupted(self.signum, (
            f"stopped by {name} after step {step}, when the training steps were already over, so no checkpoint "
            f"was saved at that step; newest checkpoint: {newest[-1] if newest else 'none'}"))
