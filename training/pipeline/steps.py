"""The adapter steps of a pipeline: each trained from its recipe, or reused, or resumed; then fused.

An adapter folder trained before is reused while its training record still matches what would be
trained now: the same effective recipe (keys that do not change the weights, such as logging,
are ignored), the same training rows (by sha256), and, for a stacked adapter, the same adapter
under it (by the sha256 of its weights). When it no longer matches, it is trained again, and
the reason is printed. An interrupted training (Ctrl-C, SIGTERM, a crash after a checkpoint)
leaves checkpoints in `<adapter>.work`; the next run continues from the newest one. The fused
adapter is reused while its sources are the same files with the same weights.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from training.adapters.folder import adapter_weights_path
from training.adapters.fuse import FuseSettings, fuse_adapters
from training.adapters.record import TrainingRecord, read_record
from training.config import config_from_recipe
from training.files import BUNDLE_ROOT, is_ours, sha256_file
from training.train import train

TASKS = ("instrucciones", "leyes-ec")
FUSED = "fusionado"
# leyes-ec is trained on top of the instrucciones adapter (its recipe's lora.stack_on): in this order
STACKED_ON = {"leyes-ec": "instrucciones"}


def train_adapter(recipe: dict, source: str, overrides: list[str], under: Path | None, say) -> Path:
    """Train one adapter (on top of `under` when given), or reuse or resume the one trained before.

    `recipe`: the recipe as read once from `source` (config.read_recipe), with the pipeline's `overrides`.
    """
    config = config_from_recipe(recipe, source, overrides)
    out_dir = config.output_dir
    task = out_dir.name
    record = read_record(out_dir) if out_dir.is_dir() else None
    stale = record is not None and stale_reason(record, config, under)
    if record is not None and not stale:
        say(f"{out_dir} already trained: reused (delete it to train again)")
        return out_dir
    if stale:
        say(f"{out_dir}: {stale}; training it again")
    work_dir = config.work_dir
    if stale and is_ours(work_dir):
        shutil.rmtree(work_dir, ignore_errors=True)  # its checkpoints belong to the old run
    elif any(work_dir.glob("checkpoint-*")):
        say(f"continuing the interrupted training of {task} from its last checkpoint in {work_dir}")
        config = config_from_recipe(recipe, source, [*overrides, "resume=true"])
    say(f"training {task} with QLoRA: {source} {' '.join(overrides)}")
    return train(config, replace=True)  # the folder under --out is the pipeline's own


# recipe keys that do not change the trained weights: a change there reuses the adapter. Data files
# count by their content (sha256, checked below), not by their path: the datasets moved from
# training/data/ to training/datasets/ without a changed row.
_NO_EFFECT = {"lora": {"stack_on"}, "dataset": {"train"},
              "training": {"gradient_checkpointing", "logging_steps", "report_to", "save_steps", "save_total_limit",
                           "keep_checkpoints"}}


def _effective(config: dict) -> dict:
    out = {section: {k: v for k, v in (config.get(section) or {}).items() if k not in _NO_EFFECT.get(section, ())}
           for section in ("dataset", "lora", "quantization", "training")}
    if isinstance(out["dataset"].get("replay"), dict):
        out["dataset"]["replay"] = {k: v for k, v in out["dataset"]["replay"].items() if k != "train"}
    return out


def _rows_changed(recorded: dict, given: str) -> bool:
    """True when the recorded sha256 of a training file differs from the file's now."""
    path = Path(given) if Path(given).is_file() else BUNDLE_ROOT / given
    if recorded.get("sha256_of", "file") != "file" or not path.is_file():
        return False
    return recorded.get("sha256") != sha256_file(path)


def stale_reason(record: TrainingRecord, config, under: Path | None) -> str | None:
    """Why an adapter trained earlier no longer matches its recipe, or None when it still does."""
    if under is not None and (record.stacked_on or {}).get("weights_sha256") != sha256_file(
            adapter_weights_path(under)):
        return f"it was trained on top of another {under.name}"
    for recorded, given in ((record.dataset, config.data.train),
                            (record.dataset.get("replay"), config.data.replay and config.data.replay.train)):
        if recorded and given and _rows_changed(recorded, given):
            return f"its training rows changed ({given})"
    trained, wanted = _effective(record.config), _effective(config.as_dict())
    # a recipe key added to the schema after that run took its default then: only keys both know count
    changed = sorted(f"{s}.{k}" for s, values in trained.items() for k, v in values.items() if wanted[s].get(k) != v)
    if changed:
        return f"its recipe changed ({', '.join(changed)})"
    return None


def fuse_once(sources: list[Path], out_dir: Path, say) -> Path:
    """Fuse the adapters exactly into `out_dir`, or reuse the fused adapter made from the same ones."""
    if _fused_from(out_dir) == [(str(s), sha256_file(adapter_weights_path(s))) for s in sources]:
        say(f"{out_dir} already fused from the same adapters: reused")
        return out_dir
    result = fuse_adapters(FuseSettings(adapters=sources, out=out_dir, name=out_dir.name, replace=True))
    say(f"fused (exact, rank {result.rank}) -> {out_dir}")
    return out_dir


def _fused_from(out_dir: Path) -> list[tuple[str, str]] | None:
    """(path, weights sha256) of each source the fused adapter in `out_dir` was made from."""
    record = read_record(out_dir) if out_dir.is_dir() else None
    return [(s.get("path"), s.get("sha256")) for s in record.sources] if record else None
