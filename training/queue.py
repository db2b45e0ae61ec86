"""The run queue: queue planned runs, start them one at a time, cancel, reconcile lost ones, report progress.

    run_id = start_run(settings, dataset="support@2", preset="quick", lora_rank=8)   # planned, queued, started
    progress(settings, run_id)        # RunProgress: status, step/total, loss, held-out loss, lr, tok/s, ETA
    cancel(settings, run_id, keep_checkpoint=True)
    startup(settings)                 # on app/CLI start: fail runs whose process is gone, start queued ones

At most `settings.train_concurrency` runs (default 1) train at once; the others wait as queued and
start in order, kicked by the worker that finishes a run and by every `startup`. Planning is
training.planning's; starting the process is training.launch's.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlite_utils import Database

from store import runs
from store.adapters import get_adapter
from store.db import connect
from store.settings import Settings
from training.config import RunConfig
from training.launch import launch, log_tail, process_alive
from training.planning import plan_run
from training.results import RunMetrics

LOST_PROCESS = "process ended without finishing (killed or out of memory)"
# A run marked running without a pid for this long lost its launcher before the process started.
LAUNCH_GRACE_S = 120


@dataclass
class RunProgress:
    """A run's state for display (CLI lines, the Train tab, `--json`)."""

    id: int
    status: str
    method: str | None
    dataset: str | None
    base_model: str | None
    from_adapter: str | None
    preset: str | None
    step: int
    total_steps: int | None
    loss: float | None
    """Training loss at the latest logged step."""
    eval_loss: float | None
    """Held-out loss at the latest evaluation."""
    learning_rate: float | None
    grad_norm: float | None
    tokens_per_second: float | None
    eta_seconds: float | None
    adapter: str | None
    cancel_requested: bool
    error: str | None
    log_tail: str | None
    metrics: RunMetrics | None
    """The finished run's results (None while it runs)."""
    run_dir: str | None
    excluded_conversations: int
    """Conversations held out of training because they are eval items (planning's overlap rule)."""
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    resume_step: int | None = None
    """The step a failed or cancelled run can resume from (its last checkpoint); None when it cannot."""
    step_seconds: float | None = None
    """Mean seconds of training per optimizer step so far (evaluation time excluded)."""
    ray_job: str | None = None
    """The Ray job the run runs as, on the cluster at TUNELOOP_RAY_ADDRESS; None for a local run."""

    def to_json(self) -> dict:
        return asdict(self)


def submit(settings: Settings, config: RunConfig, *, start: bool = True) -> int:
    """Queue a validated run (config saved in the row and in its folder); start it if a slot is free."""
    if settings.ray_address:  # refuse before anything is queued when the cluster cannot take it
        from training.ray_backend import preflight

        preflight(settings)
    with connect(settings.db_path) as db:
        parent_id = get_adapter(db, config.from_adapter)["id"] if config.from_adapter else None
        run_id = runs.create_run(db, config=config.to_dict(), method=config.method,
                                 dataset_version_id=config.dataset_version_id, base_model=config.base_model,
                                 parent_adapter_id=parent_id, runs_dir=settings.runs_dir,
                                 name=config.adapter_name)
        run_dir = Path(runs.get_run(db, run_id)["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(config.to_json())
    if start:
        startup(settings)
    return run_id


def start_run(settings: Settings, *, dataset: str, start: bool = True, **options) -> int:
    """Plan, validate and queue a run in one call (what the CLI and the UI use). Returns the run id."""
    return submit(settings, plan_run(settings, dataset=dataset, **options), start=start)


def startup(settings: Settings) -> list[int]:
    """What every app or CLI start does: reconcile lost runs, then start queued runs in free slots."""
    reconcile(settings)
    return kick(settings)


def kick(settings: Settings) -> list[int]:
    """Start queued runs, oldest first, while fewer than `train_concurrency` run. Returns the started ids."""
    started = []
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    with connect(settings.db_path) as db:
        while True:
            with runs.write_lock(db):
                run = runs.claim_next_queued(db, max_running=settings.train_concurrency)
                if run is None:
                    break
                try:
                    proc = launch(settings, run) if not settings.ray_address else _launch_on_ray(settings, run)
                except OSError as exc:
                    runs.mark_failed(db, run["id"], f"could not start the training process: {exc}")
                    continue
                runs.set_pid(db, run["id"], proc.pid)
            started.append(run["id"])
    return started


def _launch_on_ray(settings: Settings, run: dict):
    """A Ray job and its local follower process (training.ray_backend), instead of a local training process."""
    from training.ray_backend import launch as launch_ray_job

    return launch_ray_job(settings, run)


def cancel(settings: Settings, run_id: int, *, keep_checkpoint: bool = False) -> str:
    """Cancel a queued run at once or a running one at its next step (keeping the adapter so far if asked).

    Returns the status after the call: 'cancelled' for a queued run, 'running' while a running one stops.
    """
    with connect(settings.db_path) as db:
        return runs.request_cancel(db, run_id, keep_checkpoint=keep_checkpoint)


def reconcile(settings: Settings) -> list[int]:
    """Mark failed every run marked running whose process is gone, with the log tail. Returns their ids."""
    failed = []
    with connect(settings.db_path) as db:
        for run in runs.list_runs(db, status="running"):
            if run["pid"] is None:
                if _age_s(run["started_at"]) < LAUNCH_GRACE_S:
                    continue
            elif process_alive(run["pid"]):
                continue
            with runs.write_lock(db):
                if runs.get_run(db, run["id"])["status"] != "running":
                    continue  # it finished in the meantime
                runs.mark_failed(db, run["id"], LOST_PROCESS, log_tail=log_tail(run["run_dir"]))
            failed.append(run["id"])
    return failed


def progress(settings: Settings, run_id: int) -> RunProgress:
    """A run's state for display: status, step/total, loss, eval loss, lr, tok/s, ETA, adapter, error."""
    with connect(settings.db_path) as db:
        return describe(db, runs.get_run(db, run_id))


def describe(db: Database, run: dict) -> RunProgress:
    latest = runs.latest_metrics(db, run["id"])

    def value(name):
        return latest[name]["value"] if name in latest else None

    adapter = None
    if run.get("adapter_id"):
        adapter = get_adapter(db, run["adapter_id"])["name"]
    return RunProgress(
        id=run["id"], status=run["status"], method=run["method"],
        dataset=run["config"].get("dataset"), base_model=run["base_model"],
        from_adapter=run["config"].get("from_adapter"), preset=run["config"].get("preset"),
        step=run["step"], total_steps=run["total_steps"],
        loss=value("loss"), eval_loss=value("eval_loss"), learning_rate=value("learning_rate"),
        grad_norm=value("grad_norm"), tokens_per_second=value("tokens_per_second"),
        eta_seconds=value("eta_seconds") if run["status"] == "running" else None,
        adapter=adapter, cancel_requested=bool(run["cancel_requested"]),
        error=run["error"], log_tail=run["log_tail"] if run["status"] == "failed" else None,
        metrics=RunMetrics.from_dict(run["metrics"]) if run["metrics"] else None, run_dir=run["run_dir"],
        excluded_conversations=len(run["config"].get("excluded_conversation_ids") or ()), created_at=run["created_at"], started_at=run["started_at"], finished_at=run["finished_at"],
        resume_step=resumable_step(run), step_seconds=value("step_seconds"), ray_job=run.get("ray_job"),
    )


class ResumeRefused(ValueError):
    """A run that cannot resume, and why (in words no door's controls)."""


def resume_problem(run: dict, checkpoint_step: int | None) -> str | None:
    """Why run `run` cannot resume from its checkpoint, or None when it can. Pure."""
    if run["status"] not in ("failed", "cancelled"):
        return f"run {run['id']} is {run['status']}; only a failed or cancelled run can resume"
    if run["method"] != "sft":
        return (f"run {run['id']} is a {run['method']} run; only SFT runs keep checkpoints (a preference round is "
                "short: start it again)")
    if run.get("adapter_id"):
        return (f"run {run['id']} already kept a partial adapter; continue training from that adapter in a new run "
                "instead")
    if checkpoint_step is None:
        return (f"run {run['id']} has no checkpoint to resume from (it stopped before its first one, or the "
                "checkpoint budget removed it)")
    return None


def resumable_step(run: dict) -> int | None:
    """The step run `run` would resume from, or None when it cannot resume."""
    from training.checkpoints import checkpoint_step, latest_checkpoint

    if run["status"] not in ("failed", "cancelled"):
        return None
    ckpt = latest_checkpoint(run.get("run_dir"))
    step = checkpoint_step(ckpt) if ckpt else None
    return step if resume_problem(run, step) is None else None


def resume(settings: Settings, run_id: int, *, start: bool = True) -> int:
    """Queue a failed or cancelled SFT run again, to continue from its last checkpoint. Returns that step.

    The run keeps its id, config and folder; it ends at the same step count as if it had never stopped.
    Raises ResumeRefused (why) or store.runs.RunNotFound.
    """
    from training.checkpoints import checkpoint_step, latest_checkpoint

    with connect(settings.db_path) as db:
        run = runs.get_run(db, run_id)
        ckpt = latest_checkpoint(run.get("run_dir"))
        step = checkpoint_step(ckpt) if ckpt else None
        problem = resume_problem(run, step)
        if problem:
            raise ResumeRefused(problem)
        runs.requeue(db, run_id)
    if start:
        startup(settings)
    return step


def wait(settings: Settings, run_id: int, *, poll_s: float = 1.0, timeout_s: float | None = None,
         on_progress=None) -> RunProgress:
    """Follow a run until it ends (calling `on_progress(info)` when it changes); returns the final info."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    last = None
    while True:
        reconcile(settings)
        info = progress(settings, run_id)
        key = (info.status, info.step, info.loss, info.eval_loss)
        if on_progress and key != last:
            on_progress(info)
        last = key
        if info.status in runs.FINISHED:
            return info
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} still {info.status} after {timeout_s} s")
        time.sleep(poll_s)


def _age_s(stamp: str | None) -> float:
    if not stamp:
        return float("inf")
    from datetime import datetime, timezone

    return (datetime.now(timezone.utc) - datetime.fromisoformat(stamp)).total_seconds()
