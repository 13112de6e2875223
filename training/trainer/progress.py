"""What a training run shows while it runs: a progress bar with loss, tokens/s and ETA.

transformers' own bar already counts steps and estimates the time left; this one adds the
latest loss and the throughput in (non-padding) tokens per second, and writes each log
line above the bar with the throughput in it. Only the main process draws it.
"""

from __future__ import annotations

import time

from transformers.trainer_callback import ProgressCallback


class TrainingProgress(ProgressCallback):
    """transformers' tqdm bar (steps, ETA) plus loss and tokens/s."""

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        self._started = time.monotonic()
        self._tokens_at_start = state.num_input_tokens_seen  # nonzero when resuming
        self._loss = None

    def tokens_per_second(self, state) -> float:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        return (state.num_input_tokens_seen - self._tokens_at_start) / elapsed

    def on_step_end(self, args, state, control, **kwargs):
        super().on_step_end(args, state, control, **kwargs)
        if self.training_bar is not None:
            postfix = {"tok/s": f"{self.tokens_per_second(state):.0f}"}
            if self._loss is not None:
                postfix["loss"] = f"{self._loss:.4f}"
            self.training_bar.set_postfix(postfix, refresh=False)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        if "loss" in logs:
            self._loss = logs["loss"]
            logs["tokens_per_s"] = round(self.tokens_per_second(state), 1)
        super().on_log(args, state, control, logs=logs, **kwargs)
