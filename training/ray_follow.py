"""The local process of a Ray run: `python -m training.worker RUN_ID --ray-job JOB_ID` follows the job into the store.

Started by training.ray_backend.launch, detached like a local run. It is the only writer of the
run's rows: it reads the job's log (Ray's Jobs API), writes each progress event
(training.remote_run) to the store, copies the log to `<run_dir>/train.log`, turns a cancel request
into `stop_job`, and at the end registers and publishes the adapter the job staged in the adapter
store, or marks the run failed with the log tail. The worker hands in its own functions
(training, registering, queueing the evaluation), so this module does not import it.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from store import runs
from store.adapter_store import AdapterStoreError, get_folder, remove
from store.adapters import get_adapter
from store.db import connect
from store.logtail import tail
from store.settings import Settings
from training.config import RunConfig
from training.launch import LOG_NAME, LOG_TAIL_LINES
from training.ray_backend import job_client
from training.remote_run import parse_event
from training.results import RunMetrics

log = logging.getLogger("tuneloop.train")

POLL_S = 1.0
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def apply_event(db, run_id: int, event: dict) -> None:
    """Write one progress or metrics event to the store, as a local run's callback would."""
    if event["kind"] == "progress":
        runs.update_progress(db, run_id, step=int(event["step"]), total_steps=event.get("total_steps"))
    elif event["kind"] == "metrics":
        runs.add_metrics(db, run_id, int(event["step"]), event["values"], split=event.get("split", "train"))


def follow(settings: Settings, run_id: int, job_id: str, *, poll_s: float = POLL_S, **hooks) -> str:
    """Follow a Ray job to its end, writing its progress to the store; returns the run's final status."""
    from ray.job_submission import JobStatus

    client = job_client(settings.ray_address)
    with connect(settings.db_path) as db:
        run_dir = Path(runs.get_run(db, run_id)["run_dir"])
        runs.set_ray_job(db, run_id, job_id)
    log_path = run_dir / LOG_NAME
    seen, pending, end, stop_sent = 0, "", None, False
    while True:
        try:
            status = client.get_job_status(job_id)
            text = client.get_job_logs(job_id)
        except Exception as exc:  # noqa: BLE001 - a cluster gone away: keep trying until the job is known
            log.warning("run %d: Ray job %s not reachable (%s); retrying", run_id, job_id, exc)
            time.sleep(max(poll_s, 5.0))
            continue
        fresh, seen = text[seen:], len(text)
        if fresh:
            with open(log_path, "a") as f:
                f.write(fresh)
            pending += fresh
            *lines, pending = pending.split("\n")
            with connect(settings.db_path) as db:
                for line in lines:
                    event = parse_event(line)
                    if event is None:
                        continue
                    if event["kind"] == "end":
                        end = event
                    else:
                        apply_event(db, run_id, event)
        with connect(settings.db_path) as db:
            cancel = runs.is_cancel_requested(db, run_id)
        if cancel and not stop_sent and status not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            log.info("run %d: cancel requested; stopping Ray job %s", run_id, job_id)
            client.stop_job(job_id)
            stop_sent = True
        if str(status.value if hasattr(status, "value") else status) in TERMINAL:
            if pending and (event := parse_event(pending)) and event["kind"] == "end":
                end = event
            break
        time.sleep(poll_s)
    info = client.get_job_info(job_id)
    return finish(settings, run_id, end, job_status=str(info.status.value), job_message=info.message or "",
                  cancel_requested=stop_sent, **hooks)


def finish(settings: Settings, run_id: int, end: dict | None, *, job_status: str, job_message: str,
           cancel_requested: bool, publish_adapter=None, queue_auto_eval=None) -> str:
    """The run's end in the store: adapter registered and published (the worker's `publish_adapter`), or
    cancelled, or failed with the log tail."""
    with connect(settings.db_path) as db:
        run = runs.get_run(db, run_id)
    run_dir = Path(run["run_dir"])
    log_tail = tail(run_dir / LOG_NAME, LOG_TAIL_LINES)
    if run["status"] != "running":
        return run["status"]
    if end is None or end.get("status") == "failed":
        if cancel_requested:  # killed while stopping (past STOP_WAIT_S): nothing staged to keep
            with connect(settings.db_path) as db:
                runs.mark_finished(db, run_id, "cancelled")
            return "cancelled"
        reason = (end or {}).get("error") or f"the Ray job ended {job_status} without finishing" + (
            f": {job_message}" if job_message else "")
        with connect(settings.db_path) as db:
            runs.mark_failed(db, run_id, reason, log_tail=log_tail)
        return "failed"
    status, staged = end["status"], end.get("staged")
    metrics = RunMetrics.from_dict(end["metrics"])
    keep = bool(run["keep_checkpoint"])
    try:
        if staged is None or (status == "cancelled" and not keep):
            with connect(settings.db_path) as db:
                runs.mark_finished(db, run_id, status, metrics=metrics.to_dict())
            return status
        local = get_folder(settings, staged, run_dir / "adapter")
        config = RunConfig.from_dict(run["config"])
        with connect(settings.db_path) as db:
            parent = get_adapter(db, run["parent_adapter_id"]) if run["parent_adapter_id"] else None
            adapter_id, name = publish_adapter(db, settings, run_id, config, local, parent, metrics,
                                               partial=status == "cancelled")
            runs.mark_finished(db, run_id, status, metrics=metrics.to_dict(), adapter_id=adapter_id)
    except (AdapterStoreError, OSError) as exc:
        with connect(settings.db_path) as db:
            runs.mark_failed(db, run_id, f"the adapter could not be taken back from the adapter store: {exc}",
                             log_tail=log_tail)
        return "failed"
    finally:
        if staged:
            remove(settings, staged)
        shutil.rmtree(run_dir / "adapter", ignore_errors=True)
    log.info("run %d %s on the cluster: adapter %s", run_id, status, name)
    if status == "completed":
        queue_auto_eval(settings, run_id, name, parent["name"] if parent else settings.served_base_name)
    return status


def worker_main(settings: Settings, run_id: int, *, job_bundle: str | None, ray_job: str | None, train_phases,
                publish_adapter, queue_auto_eval) -> int:
    """The two Ray roles of `python -m training.worker`: the job on the cluster, or its local follower."""
    if job_bundle:
        from training import remote_run

        return remote_run.main(run_id, job_bundle, train_phases=train_phases)
    from training.queue import kick

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        follow(settings, run_id, ray_job, publish_adapter=publish_adapter, queue_auto_eval=queue_auto_eval)
    except Exception as exc:  # noqa: BLE001 - the run must not stay running with nobody following it
        log.exception("run %d: following Ray job %s failed", run_id, ray_job)
        with connect(settings.db_path) as db:
            if runs.get_run(db, run_id)["status"] == "running":
                runs.mark_failed(db, run_id, f"lost the Ray job {ray_job}: {type(exc).__name__}: {exc}",
                                 log_tail=tail(Path(runs.get_run(db, run_id)["run_dir"]) / LOG_NAME, LOG_TAIL_LINES))
        return 1
    finally:
        kick(settings)  # the next queued run, as a finishing local run does
    return 0

