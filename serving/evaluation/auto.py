"""The evaluation queue of the serving process: runs queued eval runs (the end-of-run ones first of all) one at a time.

A finished training run queues its evaluation against its parent (training.evalsets.queue_auto_eval);
the training process cannot ask vLLM, so this thread, beside the adapter watcher, picks the run up
once both models are loaded and runs it through the same `execute_eval_run` as `tuneloop eval run`.
An evaluation left "running" by a stopped app, or a manual one it had not started, is marked failed at
start, with the reason.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from serving.evaluation.runner import EvalError, execute_eval_run, fail_unstarted
from serving.fleet import model_server_url
from store import evaluations as ev
from store.db import connect
from store.settings import Settings

log = logging.getLogger(__name__)

INTERRUPTED = "the app stopped during this evaluation; run it again"


def next_runnable(queued: list[dict], loaded: set[str]) -> dict | None:
    """The oldest queued automatic run whose two models are both loaded (pure)."""
    for run in sorted(queued, key=lambda r: r["id"]):
        if run["trigger"] == "auto" and run["candidate"] in loaded and run["baseline"] in loaded:
            return run
    return None


class AutoEvaluator:
    """A daemon thread: every `poll_s`, run the next queued automatic evaluation whose models are loaded."""

    def __init__(self, settings: Settings, *, loaded: Callable[[], set[str]], poll_s: float = 5.0):
        self.settings = settings
        self.loaded = loaded
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._embedder = None

    def start(self) -> None:
        with connect(self.settings.db_path) as db:
            # A manual run still queued lost the app thread that was about to run it (only automatic ones are
            # picked up from the queue): without this it would show "waiting to start" for ever.
            orphans = [r for r in ev.list_eval_runs(db, status="queued") if r["trigger"] != "auto"]
            for run in ev.list_eval_runs(db, status="running") + orphans:
                ev.finish_eval_run(db, run["id"], "failed", error=INTERRUPTED)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="eval-queue", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None

    def embedder(self):
        """all-MiniLM-L6-v2, loaded on first use; None (similarity unmeasured, and said so) when not prepared."""
        if self._embedder is None:
            from serving.evaluation.embedding import Embedder, EmbeddingModelMissing

            try:
                self._embedder = Embedder(self.settings.embedding_model_dir)
            except EmbeddingModelMissing as exc:
                log.warning("%s", exc)
                return None
        return self._embedder

    def run_once(self) -> int | None:
        """Run the next runnable automatic evaluation to its end; its id, or None when none could run."""
        with connect(self.settings.db_path) as db:
            queued = ev.list_eval_runs(db, status="queued")
        if not queued:
            return None
        run = next_runnable(queued, self.loaded())
        if run is None:
            return None
        log.info("automatic evaluation %d: %s against %s", run["id"], run["candidate"], run["baseline"])
        try:
            # Asked per run: on a fleet without a router, the first replica that answers now.
            execute_eval_run(self.settings.db_path, run["id"], base_url=model_server_url(self.settings, first_up=True),
                             embedder=self.embedder(), should_stop=self._stop.is_set)
        except EvalError as exc:
            log.warning("automatic evaluation %d failed: %s", run["id"], exc)
        except Exception as exc:  # not retried every poll for ever: failed, with why, and logged by _loop
            fail_unstarted(self.settings.db_path, run["id"], exc)
            raise
        return run["id"]

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - the queue must outlive one bad run
                log.exception("evaluation queue")
