"""Checkpoints of a training run, so a failed or cancelled run can resume; and the disk budget they are kept within.

    every = save_every(total_steps)              # the recipe saves every `every` steps (about 10 per run)
    latest_checkpoint(run_dir)                   # <run_dir>/trainer/checkpoint-<step>, newest, or None
    enforce_budget(settings)                     # drop the oldest runs' checkpoints beyond the budget

The recipe (HF Trainer, `save_steps`, `save_total_limit=1`) keeps one checkpoint per run: the LoRA
weights, the optimizer and scheduler state, the RNG state and the trainer state (step, data
position), so `trainer.train(resume_from_checkpoint=...)` continues with the same data order and
ends at the same step as an unbroken run. A cancel saves one at the step it stops (`SaveOnStop`).
A completed run's checkpoint is deleted (its adapter is what counts); failed and cancelled runs keep
theirs, newest runs first, within `settings.checkpoint_budget_mb` (0: no checkpoints at all).
"""

from __future__ import annotations

import logging
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("tuneloop.train")

CHECKPOINTS_PER_RUN = 10
TRAINER_DIR = "trainer"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def save_every(total_steps: int) -> int:
    """Steps between checkpoints: about CHECKPOINTS_PER_RUN per run, at least every step."""
    return max(1, math.ceil(total_steps / CHECKPOINTS_PER_RUN))


def latest_checkpoint(run_dir: Path | str | None) -> Path | None:
    """The newest complete checkpoint of a run (one with its trainer_state.json), or None."""
    if not run_dir:
        return None
    root = Path(run_dir) / TRAINER_DIR
    if not root.is_dir():
        return None
    found = []
    for p in root.iterdir():
        m = _CHECKPOINT.match(p.name)
        if m and p.is_dir() and (p / "trainer_state.json").is_file():
            found.append((int(m.group(1)), p))
    return max(found)[1] if found else None


def checkpoint_step(path: Path) -> int:
    return int(_CHECKPOINT.match(path.name).group(1))


@dataclass(frozen=True)
class Kept:
    """One run's kept checkpoints: run id, bytes on disk, where."""

    run_id: int
    size: int
    path: Path


def over_budget(kept: list[Kept], budget_bytes: int) -> list[Kept]:
    """Which to delete so the rest fit the budget: the newest runs (highest ids) are kept first. Pure."""
    total, drop = 0, []
    for k in sorted(kept, key=lambda k: k.run_id, reverse=True):
        if total + k.size <= budget_bytes:
            total += k.size
        else:
            drop.append(k)
    return drop


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def delete_checkpoints(run_dir: Path | str) -> None:
    """Remove a run's checkpoints (its trainer folder); the adapter and log stay."""
    root = Path(run_dir) / TRAINER_DIR
    if root.is_dir():
        shutil.rmtree(root, ignore_errors=True)


def enforce_budget(runs_dir: Path, budget_mb: float, *, finished: dict[int, str]) -> list[int]:
    """Delete checkpoints of completed runs, then the oldest others beyond the budget. Returns the run ids cleared.

    `finished`: run id -> status for runs that ended (running and queued runs are never touched).
    """
    cleared, kept = [], []
    if not runs_dir.is_dir():
        return cleared
    for run_dir in runs_dir.iterdir():
        if not run_dir.name.isdigit() or not (run_dir / TRAINER_DIR).is_dir():
            continue
        run_id = int(run_dir.name)
        status = finished.get(run_id)
        if status is None:
            continue
        if status == "completed":
            delete_checkpoints(run_dir)
            cleared.append(run_id)
        else:
            kept.append(Kept(run_id, dir_size(run_dir / TRAINER_DIR), run_dir))
    for k in over_budget(kept, int(budget_mb * 1024 * 1024)):
        log.info("run %d: checkpoint deleted to stay within the %g MB checkpoint budget", k.run_id, budget_mb)
        delete_checkpoints(k.path)
        cleared.append(k.run_id)
    return cleared


def save_on_stop():
    """A trainer callback that saves a checkpoint at the step a cancel stops the run (placed after the progress
    callback, which asks for the stop). transformers is imported here, so the app can read checkpoints without it."""
    from transformers import TrainerCallback

    class SaveOnStop(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if control.should_training_stop and state.global_step < state.max_steps:
                control.should_save = True

    return SaveOnStop()
