"""The trainer callback that reports a run's progress to the store and stops it when cancelled.

Every optimizer step it writes the step (runs.step, runs.total_steps, heartbeat) and these
`run_metrics` rows: loss, learning_rate, grad_norm, epoch (split "train"), eval_loss at each
evaluation (split "eval"), tokens_per_second and eta_seconds (split "progress"). The UI and
`tuneloop runs` read them live (WAL). It also checks `runs.cancel_requested` after each step and
asks the trainer to stop, so a cancel ends the run at a step boundary.

A run may train in phases (SFT, then KTO or DPO), each with its own trainer and the same callback:
`step_offset` (steps of the phases before) and `steps_after` (planned steps of the phases after)
make the reported step and total run continuously over the whole run, so the UI shows one
progress bar and one loss curve.

Used by training.recipe and training.preference; only the main process of a multi-GPU run
writes, and the cancel flag is shared across processes so all of them stop at the same step.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from transformers import TrainerCallback

from store import runs
from store.db import open_db
from training.evalplan import evaluation_seconds_left

log = logging.getLogger("tuneloop.train")

# Trainer summary keys that are not training curves.
SKIP_KEYS = {"total_flos", "train_runtime", "train_samples_per_second", "train_steps_per_second",
             "eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "num_input_tokens_seen",
             "train_tokens_per_second", "num_tokens"}  # num_tokens: TRL's running token count


class StoreProgressCallback(TrainerCallback):
    """Writes step, loss, eval loss, learning rate, grad norm, tokens/s and ETA to the store."""

    def __init__(self, db_path: Path | str, run_id: int, *, check_cancel=None):
        self.db_path = db_path
        self.run_id = run_id
        self.cancelled = False
        self._check_cancel = check_cancel  # extra cancel source (e.g. a SIGTERM flag)
        self._db = None
        self.step_offset = 0
        """Optimizer steps the earlier phases of this run took; reported steps continue after them."""
        self.steps_after = 0
        """Optimizer steps the later phases of this run will take; the reported total includes them."""
        self._train_seconds = 0.0  # all phases
        self._tokens = 0  # all phases
        self._tokens_before = 0  # of the phases before this one
        self._tokens_start = 0  # the trainer's token count when this phase began
        self._last = None
        self._plan = None  # this phase's evaluation plan (training.evalplan), when it has held-out evaluations
        self._eval_seconds: list[float] = []  # measured in-run evaluations

    def plan_evaluations(self, plan) -> None:
        """The recipe's evaluation plan: the time left counts the evaluations still to come."""
        self._plan = plan

    # --- helpers ---
    @property
    def db(self):
        if self._db is None:
            self._db = open_db(self.db_path)
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # The three places the run meets the store; training.remote_run's callback reports them on stdout instead.
    def report_progress(self, *, step: int, total_steps: int | None = None) -> None:
        runs.update_progress(self.db, self.run_id, step=step, total_steps=total_steps)

    def report_metrics(self, step: int, values: dict, *, split: str) -> None:
        runs.add_metrics(self.db, self.run_id, step, values, split=split)

    def cancel_asked(self) -> bool:
        return runs.is_cancel_requested(self.db, self.run_id)

    def _step(self, state) -> int:
        return self.step_offset + state.global_step

    def _total(self, state) -> int:
        return self.step_offset + state.max_steps + self.steps_after

    def _cancel_requested(self, args, state) -> bool:
        wanted = False
        if state.is_world_process_zero:
            wanted = self.cancel_asked() or bool(self._check_cancel and self._check_cancel())
        return _any_process(wanted, args)

    # --- events ---
    def on_train_begin(self, args, state, control, **kwargs):
        self._tokens_start = state.num_input_tokens_seen or 0
        self._tokens_before = self._tokens
        self._last = time.monotonic()
        if state.is_world_process_zero:
            self.report_progress(step=self._step(state), total_steps=self._total(state))
            log.info("training: %d optimizer steps", state.max_steps)
        if self._cancel_requested(args, state):
            self.cancelled = True
            control.should_training_stop = True

    def on_step_end(self, args, state, control, **kwargs):
        now = time.monotonic()
        self._train_seconds += now - (self._last or now)
        self._last = now
        self._tokens = self._tokens_before + (state.num_input_tokens_seen or 0) - self._tokens_start
        step, total = self._step(state), self._total(state)
        step_seconds = self._train_seconds / max(step, 1)
        evals_left = evaluation_seconds_left(
            self._plan, step=state.global_step, total_steps=state.max_steps,
            seconds_each=sum(self._eval_seconds) / len(self._eval_seconds) if self._eval_seconds else None)
        progress = {
            # The same figure as RunMetrics.tokens_per_second: trained tokens per second of training time.
            "tokens_per_second": self._tokens / self._train_seconds if self._train_seconds > 0 else 0.0,
            "eta_seconds": step_seconds * max(total - step, 0) + evals_left,  # evaluations still to come included
            "step_seconds": step_seconds,
        }
        if state.is_world_process_zero:
            self.report_progress(step=step, total_steps=total)
            self.report_metrics(step, progress, split="progress")
        if self._cancel_requested(args, state):
            self.cancelled = True
            control.should_training_stop = True
            log.info("cancel requested: stopping after step %d", step)

    def on_evaluate(self, args, state, control, **kwargs):
        # Evaluation time is not training time: restart the step clock after it.
        self._last = time.monotonic()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        if "eval_runtime" in logs and state.global_step < state.max_steps:  # an in-run evaluation's duration
            self._eval_seconds.append(float(logs["eval_runtime"]))
        if not state.is_world_process_zero:
            return
        train = {k: v for k, v in logs.items() if k not in SKIP_KEYS and not k.startswith("eval_") and _finite(v)}
        evals = {k: v for k, v in logs.items() if k.startswith("eval_") and k not in SKIP_KEYS and _finite(v)}
        step = self._step(state)
        if train:
            self.report_metrics(step, train, split="train")
        if evals:
            self.report_metrics(step, evals, split="eval")
        shown = " ".join(f"{k}={_fmt(v)}" for k, v in {**train, **evals}.items())
        log.info("step %d/%d %s", step, self._total(state), shown)

    def on_train_end(self, args, state, control, **kwargs):
        self._plan, self._eval_seconds = None, []  # a later phase (KTO, DPO) has no held-out evaluations
        if state.is_world_process_zero:
            self.report_progress(step=self._step(state))


def _any_process(flag: bool, args) -> bool:
    """True on every process when any process says True (so all of a multi-GPU run stop together)."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return flag
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    import torch

    t = torch.tensor([1.0 if flag else 0.0], device=args.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _fmt(v: float) -> str:
    return f"{v:.4g}"
