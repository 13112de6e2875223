"""The loss curve saved with each adapter (loss.png): train loss and eval loss per step."""

from __future__ import annotations

from pathlib import Path


def save_loss_plot(log_history: list[dict], path: Path, title: str) -> None:
    """Plot the train and eval losses of a Trainer's `state.log_history` to a PNG file."""
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    train = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry]
    evaluation = [(entry["step"], entry["eval_loss"]) for entry in log_history if "eval_loss" in entry]
    figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    for points, label, style in ((train, "train", "-"), (evaluation, "eval", "o--")):
        if points:
            steps, losses = zip(*points, strict=True)
            axes.plot(steps, losses, style, label=label)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss (answer tokens)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if train or evaluation:
        axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
