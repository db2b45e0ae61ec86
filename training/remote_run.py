"""A run trained away from the database (a Ray job): `python -m training.worker RUN_ID --job-bundle FILE`.

The app stays the only writer of its SQLite database, so a run on a cluster gets everything it
needs in one bundle (training.ray_backend writes it: config, conversations, preference rows,
parent adapter) and reports on stdout instead of writing rows: one line per event,

    TUNELOOP_EVENT {"kind": "progress", "step": 3, "total_steps": 10}
    TUNELOOP_EVENT {"kind": "metrics", "step": 3, "split": "train", "values": {"loss": 2.1}}
    TUNELOOP_EVENT {"kind": "end", "status": "completed", "metrics": {...}, "staged": ".staging/run-7-..."}

which the app reads from the job's log (training.ray_backend.follow) and writes to the store, as
a local run's callback would. The adapter goes back through the adapter store (the folder named by
"staged"); the app registers and publishes it. A SIGTERM (Ray's stop_job) stops the run at the
next step; the adapter so far is staged, and the app keeps it only if the user asked to.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import tempfile
import uuid
from pathlib import Path

from store.adapter_store import get_folder, put_folder
from store.settings import Settings
from training.callbacks import StoreProgressCallback
from training.config import RunConfig

EVENT_PREFIX = "TUNELOOP_EVENT "
BUNDLE_FILE = "bundle.json"

log = logging.getLogger("tuneloop.train")


def event_line(kind: str, **payload) -> str:
    """One event as the job prints it."""
    return EVENT_PREFIX + json.dumps({"kind": kind, **payload}, separators=(",", ":"))


def parse_event(line: str) -> dict | None:
    """The event a log line carries, or None for an ordinary log line (or a garbled event)."""
    start = line.find(EVENT_PREFIX)
    if start < 0:
        return None
    try:
        event = json.loads(line[start + len(EVENT_PREFIX):])
    except ValueError:
        return None
    return event if isinstance(event, dict) and isinstance(event.get("kind"), str) else None


class LineProgressCallback(StoreProgressCallback):
    """The store callback, reporting on stdout; cancel comes only from the SIGTERM flag."""

    def __init__(self, run_id: int, *, check_cancel=None, out=None):
        super().__init__("", run_id, check_cancel=check_cancel)
        self.out = out or sys.stdout

    def emit(self, kind: str, **payload) -> None:
        print(event_line(kind, **payload), file=self.out, flush=True)

    def report_progress(self, *, step: int, total_steps: int | None = None) -> None:
        self.emit("progress", step=step, total_steps=total_steps)

    def report_metrics(self, step: int, values: dict, *, split: str) -> None:
        self.emit("metrics", step=step, split=split, values=values)

    def cancel_asked(self) -> bool:
        return False

    def close(self) -> None:
        pass


class _Stop:
    requested = False


def write_bundle(path: Path, *, run_id: int, config: RunConfig, conversations: list[dict], pref_rows: list[dict],
                 parent_adapter: str | None, settings: Settings) -> Path:
    """The file a remote run trains from (written by the app before submitting)."""
    bundle = {"run_id": run_id, "config": config.to_dict(), "conversations": conversations, "pref_rows": pref_rows,
              "parent_adapter": parent_adapter, "adapter_store": settings.adapter_store,
              "max_lora_rank": settings.max_lora_rank}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(bundle))
    return path


def main(run_id: int, bundle_path: str, *, train_phases) -> int:
    """Train from a bundle, reporting on stdout; 0 when it ended (completed or cancelled), 1 on error."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    signal.signal(signal.SIGTERM, lambda *_: setattr(_Stop, "requested", True))
    bundle = json.loads(Path(bundle_path).read_text())
    if bundle["run_id"] != run_id:
        raise SystemExit(f"{bundle_path} is the bundle of run {bundle['run_id']}, not run {run_id}")
    callback = LineProgressCallback(run_id, check_cancel=lambda: _Stop.requested)
    # Under `accelerate launch` (a job asking for several GPUs) every process trains; only the first reports
    # the end and stages the adapter, as a local multi-GPU run's worker does (training.worker).
    main_process = int(os.environ.get("RANK", "0")) == 0
    try:
        status, staged, metrics = execute(bundle, callback, train_phases=train_phases, main_process=main_process)
    except BaseException as exc:  # noqa: BLE001 - the app marks the run failed with this and the log tail
        log.exception("run %d failed on the cluster", run_id)
        if main_process:
            callback.emit("end", status="failed",
                          error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        return 1
    if main_process:
        callback.emit("end", status=status, staged=staged, metrics=metrics)
    return 0


def execute(bundle: dict, callback: LineProgressCallback, *, train_phases,
            main_process: bool = True) -> tuple[str, str | None, dict]:
    """Train the bundle's run with the worker's `train_phases`; returns (status, the staged adapter's path
    in the store or None, metrics). Only the main process writes and stages the adapter."""
    from training import recipe

    config = RunConfig.from_dict(bundle["config"])
    settings = Settings(_env_file=None, adapter_store=bundle["adapter_store"], max_lora_rank=bundle["max_lora_rank"])
    work = Path(tempfile.mkdtemp(prefix=f"tuneloop-run-{bundle['run_id']}-"))
    parent_path = None
    if bundle["parent_adapter"]:
        parent_path = str(get_folder(settings, bundle["parent_adapter"], work / "parent"))
    log.info("run %d on the cluster: %s on %s (%d conversations, %d preference rows), base %s", bundle["run_id"],
             config.method, config.dataset, len(bundle["conversations"]), len(bundle["pref_rows"]), config.base_model)
    model, result = train_phases(config, bundle["conversations"], bundle["pref_rows"], run_dir=work,
                                 callback=callback, parent_adapter_path=parent_path)
    cancelled = callback.cancelled
    status = "cancelled" if cancelled else "completed"
    if result.steps == 0 or not main_process:
        return status, None, result.to_dict()
    local = recipe.write_adapter(model, config.base_model, work / "adapter", max_rank=settings.max_lora_rank)
    staged = f".staging/run-{bundle['run_id']}-{uuid.uuid4().hex[:8]}"
    put_folder(settings, local, staged)
    log.info("run %d %s: adapter staged in the adapter store", bundle["run_id"], status)
    return status, staged, result.to_dict()
