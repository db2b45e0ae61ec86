"""Training runs and their metrics: one function per query the runner, the trainer and the UI need.

Statuses: queued -> running -> completed | failed | cancelled (a queued run can be cancelled too).
The trainer process writes progress and metrics here while it trains; WAL lets readers follow live.
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlite_utils import Database

from store.db import now, write_transaction

ACTIVE = ("queued", "running")
FINISHED = ("completed", "failed", "cancelled")


class RunNotFound(LookupError):
    pass


# Claiming the next queued run and recording its process happen inside one transaction that holds
# the write lock from the start, so two processes kicking the queue at once never start a run twice.
write_lock = write_transaction


def create_run(db: Database, *, config: dict, method: str, dataset_version_id: int | None, base_model: str,
               parent_adapter_id: int | None, runs_dir: Path | str, name: str | None = None) -> int:
    """Queue a run; its folder is `<runs_dir>/<id>`. Returns the run id."""
    with db.atomic():
        run_id = db["runs"].insert({
            "name": name, "method": method, "status": "queued", "dataset_version_id": dataset_version_id,
            "base_model": base_model, "parent_adapter_id": parent_adapter_id,
            "config": json.dumps(config, sort_keys=True), "created_at": now(),
        }).last_pk
        db["runs"].update(run_id, {"run_dir": str(Path(runs_dir) / str(run_id))})
    return run_id


def get_run(db: Database, run_id: int) -> dict:
    rows = list(db.query("select * from runs where id = ?", [run_id]))
    if not rows:
        raise RunNotFound(f"no run {run_id} (see `tuneloop runs`)")
    return _decode(rows[0])


def list_runs(db: Database, *, status: str | tuple[str, ...] | None = None, limit: int | None = None) -> list[dict]:
    """Runs newest first, each with its adapter's name (when it produced one)."""
    where, args = "", []
    if status:
        statuses = (status,) if isinstance(status, str) else tuple(status)
        where = f"where r.status in ({', '.join('?' * len(statuses))})"
        args = list(statuses)
    sql = f"""select r.*, a.name as adapter_name from runs r left join adapters a on a.id = r.adapter_id
              {where} order by r.id desc limit ?"""
    return [_decode(r) for r in db.query(sql, [*args, -1 if limit is None else limit])]


def claim_next_queued(db: Database, *, max_running: int = 1) -> dict | None:
    """Mark the oldest queued run running, if fewer than `max_running` run; None otherwise.

    Atomic on its own; call it inside `write_lock` to also record the process it starts.
    """
    with write_transaction(db):
        running = db.execute("select count(*) from runs where status = 'running'").fetchone()[0]
        if running >= max_running:
            return None
        row = db.execute("select id from runs where status = 'queued' order by id limit 1").fetchone()
        if row is None:
            return None
        stamp = now()
        db.execute("update runs set status = 'running', started_at = ?, heartbeat_at = ? where id = ?",
                   [stamp, stamp, row[0]])
    return get_run(db, row[0])


def mark_running(db: Database, run_id: int, *, pid: int | None = None) -> None:
    """Mark one run running (a run started by hand rather than claimed from the queue)."""
    stamp = now()
    db.execute("update runs set status = 'running', pid = ?, started_at = ?, heartbeat_at = ? where id = ?",
               [pid, stamp, stamp, run_id])


def set_pid(db: Database, run_id: int, pid: int) -> None:
    db.execute("update runs set pid = ? where id = ?", [pid, run_id])


def set_ray_job(db: Database, run_id: int, job_id: str) -> None:
    db.execute("update runs set ray_job = ? where id = ?", [job_id, run_id])


def update_progress(db: Database, run_id: int, *, step: int, total_steps: int | None = None) -> None:
    """The trainer's heartbeat: the current optimizer step (and the total once known)."""
    if total_steps is None:
        db.execute("update runs set step = ?, heartbeat_at = ? where id = ?", [step, now(), run_id])
    else:
        db.execute("update runs set step = ?, total_steps = ?, heartbeat_at = ? where id = ?",
                   [step, total_steps, now(), run_id])


def add_metrics(db: Database, run_id: int, step: int, values: dict[str, float], *, split: str = "train") -> None:
    """One row per metric at `step` (loss, learning_rate, grad_norm, tokens_per_second, eta_seconds, ...)."""
    stamp = now()
    rows = [{"run_id": run_id, "step": step, "name": k, "value": float(v), "split": split, "created_at": stamp}
            for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if rows:
        db["run_metrics"].insert_all(rows)


def run_metrics(db: Database, run_id: int, name: str | None = None) -> list[dict]:
    """A run's metric rows in step order (all of them, or one metric's)."""
    sql = "select step, name, value, split, created_at from run_metrics where run_id = ?"
    args: list = [run_id]
    if name:
        sql += " and name = ?"
        args.append(name)
    return list(db.query(sql + " order by step, rowid", args))


def latest_metrics(db: Database, run_id: int) -> dict[str, dict]:
    """The newest value of each metric: {name: {"step", "value", "split"}}."""
    out: dict[str, dict] = {}
    for r in db.query(
        """select name, step, value, split from run_metrics where rowid in
           (select max(rowid) from run_metrics where run_id = ? group by name)""", [run_id]
    ):
        out[r["name"]] = {"step": r["step"], "value": r["value"], "split": r["split"]}
    return out


def request_cancel(db: Database, run_id: int, *, keep_checkpoint: bool = False) -> str:
    """Cancel a run: a queued one at once, a running one at its next step. Returns the status after."""
    with write_transaction(db):
        run = get_run(db, run_id)
        if run["status"] == "queued":
            db.execute("update runs set status = 'cancelled', cancel_requested = 1, finished_at = ? where id = ?",
                       [now(), run_id])
            return "cancelled"
        if run["status"] == "running":
            db.execute("update runs set cancel_requested = 1, keep_checkpoint = ? where id = ?",
                       [int(keep_checkpoint), run_id])
            return "running"
    return run["status"]


def is_cancel_requested(db: Database, run_id: int) -> bool:
    row = db.execute("select cancel_requested from runs where id = ?", [run_id]).fetchone()
    return bool(row and row[0])


def mark_finished(db: Database, run_id: int, status: str, *, metrics: dict | None = None,
                  adapter_id: int | None = None, error: str | None = None, log_tail: str | None = None) -> None:
    """End a run as completed, cancelled or failed, with its final metrics or the reason it failed."""
    if status not in FINISHED:
        raise ValueError(f"unknown final status {status!r}")
    fields = {"status": status, "finished_at": now()}
    if metrics is not None:
        fields["metrics"] = json.dumps(metrics, sort_keys=True)
    if adapter_id is not None:
        fields["adapter_id"] = adapter_id
    if error is not None:
        fields["error"] = error
    if log_tail is not None:
        fields["log_tail"] = log_tail
    db["runs"].update(run_id, fields)


def mark_failed(db: Database, run_id: int, error: str, *, log_tail: str | None = None) -> None:
    mark_finished(db, run_id, "failed", error=error, log_tail=log_tail)


def requeue(db: Database, run_id: int) -> None:
    """Queue a failed or cancelled run again (to resume from its checkpoint): its end, error and cancel are cleared."""
    with write_transaction(db):
        run = get_run(db, run_id)
        if run["status"] not in ("failed", "cancelled"):
            raise ValueError(f"run {run_id} is {run['status']}; only a failed or cancelled run can resume")
        db.execute("""update runs set status = 'queued', pid = null, started_at = null, finished_at = null,
                      error = null, log_tail = null, cancel_requested = 0, keep_checkpoint = 0 where id = ?""",
                   [run_id])


# The keys of a run's stored metrics that other rooms read (training.results.RunMetrics writes them;
# tests/test_architecture.py checks each is one of its fields, so a rename fails there, not as a blank).
HELD_OUT_LOSS_START, HELD_OUT_LOSS_END = "eval_loss_start", "eval_loss"


def heldout_loss_change(db: Database, run_id: int) -> tuple[float, float] | None:
    """(held-out loss before the run's first step, at its end), both on the run's own held-out split; None when
    the run is unknown or did not measure both."""
    try:
        metrics = get_run(db, run_id)["metrics"]
    except RunNotFound:
        return None
    start, end = metrics.get(HELD_OUT_LOSS_START), metrics.get(HELD_OUT_LOSS_END)
    return None if start is None or end is None else (float(start), float(end))


def pending_adapter_names(db: Database) -> set[str]:
    """Adapter names chosen by queued or running runs (so a new run does not pick the same)."""
    return {r[0] for r in db.execute("select name from runs where status in ('queued', 'running') and name != ''")
            if r[0]}


def _decode(row: dict) -> dict:
    return {**row, "config": json.loads(row.get("config") or "{}"), "metrics": json.loads(row.get("metrics") or "{}")}
