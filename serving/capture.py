"""Traffic capture's write-behind writer: the API hands each finished completion to `submit`, one thread stores them.

`submit` only appends to an in-memory queue (no lock held across IO, never blocks), so capture adds
nothing to a request but that append. One writer thread drains the queue in batches (one
transaction per batch, store.traffic.save_captures) together with the API keys' usage counts. When
the database is busy (a long write elsewhere) the batch stays queued and is retried: nothing is
dropped while memory allows. `close()` (the app's shutdown: Ctrl-C, SIGTERM) flushes the queue
before it returns. The same thread deletes, once an hour, captured traffic past the retention
period that no rating or dataset uses.

    writer = CaptureWriter(settings.db_path, retention_days=30)
    writer.submit(row)          # a dict of store.traffic.COLUMNS
    writer.count_use("helpdesk")
    writer.close()              # flush, stop
    .venv/bin/python -m pytest tests/test_capture_writer.py -q
"""

from __future__ import annotations

import atexit
import logging
import sqlite3
import threading
import time
from collections import deque
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from store.api_keys import record_usage
from store.db import connect, now
from store.traffic import prune, save_captures

log = logging.getLogger(__name__)

BATCH = 256
IDLE_WAIT_S = 0.25  # longest a finished completion waits in memory before its batch is written
BUSY_RETRY_S = 0.2
PRUNE_EVERY_S = 3600.0


def retention_cutoff(days: float, at: datetime | None = None) -> str:
    """The ISO time before which captured traffic is past a retention of `days`."""
    at = at or datetime.now(timezone.utc)
    return (at - timedelta(days=days)).isoformat(timespec="milliseconds")


class CaptureWriter:
    """A queue of captured completions and key usage, written by one thread in batches."""

    def __init__(self, db_path: Path | str, *, retention_days: float = 0, batch: int = BATCH,
                 idle_wait_s: float = IDLE_WAIT_S, prune_every_s: float = PRUNE_EVERY_S,
                 redact: Callable[[dict], dict] | None = None):
        self.db_path = db_path
        self.retention_days = retention_days
        self.batch = batch
        self.idle_wait_s = idle_wait_s
        self.prune_every_s = prune_every_s
        self.redact = redact
        self._queue: deque[dict] = deque()
        self._usage: dict[str, list] = {}
        self._usage_lock = threading.Lock()  # held for a dict update only, never across IO
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._idle = threading.Condition()
        self._busy = False  # the thread holds rows it took from the queue but has not stored yet
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._last_prune = time.monotonic()
        self.written = 0
        self.failed = 0
        self.unredactable = 0

    # ------------------------------------------------------------ the request side

    def submit(self, row: dict) -> None:
        """Queue one captured completion (store.traffic.COLUMNS); returns at once."""
        self._queue.append(row)
        self._ensure_thread()
        if len(self._queue) >= self.batch:
            self._wake.set()

    def count_use(self, key_name: str) -> None:
        """Count one request made with API key `key_name` (written with the next batch)."""
        with self._usage_lock:
            slot = self._usage.setdefault(key_name, [0, ""])
            slot[0] += 1
            slot[1] = now()
        self._ensure_thread()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._start_lock:
                if (self._thread is None or not self._thread.is_alive()) and not self._stopping.is_set():
                    self._thread = threading.Thread(target=self._run, name="capture-writer", daemon=True)
                    self._thread.start()
                    atexit.register(self.close)

    # ------------------------------------------------------------ flushing and stopping

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until everything queued so far is stored; False if `timeout` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._wake.set()
        with self._idle:
            while self._queue or self._usage or self._busy:
                if self._thread is None or not self._thread.is_alive():
                    self._drain()  # no thread (never started, or stopped): write here
                    continue
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._wake.set()
                self._idle.wait(0.05 if left is None else min(0.05, left))
        return True

    def close(self, timeout: float | None = 60.0) -> None:
        """Flush the queue, then stop the thread. Safe to call twice."""
        self.flush(timeout)
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._queue or self._usage:
            self._drain()  # whatever came in while stopping

    # ------------------------------------------------------------ the writer thread

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            self._wake.wait(self.idle_wait_s)
            self._wake.clear()
            try:
                self._drain()
                self._maybe_prune()
                failures = 0
            except Exception:  # noqa: BLE001 - the writer must outlive any one failure; rows stay queued
                failures += 1
                log.exception("capture writer (try %d; %d completion(s) wait)", failures, len(self._queue))
                time.sleep(min(BUSY_RETRY_S * 2 ** failures, 30.0))  # a lasting fault (disk full) is not a busy loop

    def _drain(self) -> None:
        while self._queue or self._usage:
            with self._idle:
                self._busy = True
            rows = [self._queue.popleft() for _ in range(min(self.batch, len(self._queue)))]
            with self._usage_lock:
                usage, self._usage = {k: tuple(v) for k, v in self._usage.items()}, {}
            try:
                self._write(rows, usage)
            except BaseException:
                # Nothing is dropped for an error: the batch and the counts go back for the next try.
                self._queue.extendleft(reversed(rows))
                with self._usage_lock:
                    for key, (n, last) in usage.items():
                        slot = self._usage.setdefault(key, [0, ""])
                        slot[0] += n
                        slot[1] = max(slot[1], last)
                raise
            finally:
                with self._idle:
                    self._busy = False
                    self._idle.notify_all()

    def _write(self, rows: list[dict], usage: dict) -> None:
        """Store one batch, retrying while the database is busy; rows are never dropped for that."""
        if self.redact is not None:
            rows = [self._redacted(r) for r in rows]
        while True:
            try:
                with connect(self.db_path) as db:
                    try:
                        self.written += save_captures(db, rows)
                    except (sqlite3.IntegrityError, ValueError):
                        self._write_one_by_one(db, rows)
                    record_usage(db, usage)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                log.warning("capture: database busy, %d completion(s) wait", len(rows) + len(self._queue))
                time.sleep(BUSY_RETRY_S)

    def _redacted(self, row: dict) -> dict:
        """The row through the redaction hook. A row it cannot redact keeps its figures and ids but not its
        text: storing the text unredacted is never the fallback, and one bad row must not stall the queue."""
        try:
            return self.redact(row)
        except Exception as exc:  # noqa: BLE001 - any failure of the engine on this row
            self.unredactable += 1
            log.error("capture: completion %s could not be redacted (%s); stored without its text", row.get("id"),
                      exc.__class__.__name__)
            return {**row, "messages": [], "answer": "", "metadata": {}, "user": None,
                    "error": "redaction failed: the text was not stored"}

    def _write_one_by_one(self, db, rows: list[dict]) -> None:
        for row in rows:
            try:
                self.written += save_captures(db, [row])
            except (sqlite3.IntegrityError, ValueError) as exc:  # one malformed row must not block the rest
                self.failed += 1
                log.error("capture: completion %s not stored: %s", row.get("id"), exc.__class__.__name__)

    def _maybe_prune(self) -> None:
        if not self.retention_days or time.monotonic() - self._last_prune < self.prune_every_s:
            return
        self._last_prune = time.monotonic()
        with connect(self.db_path) as db:
            n = prune(db, before=retention_cutoff(self.retention_days))
        if n:
            log.info("capture retention: %d completion(s) older than %g days deleted", n, self.retention_days)
