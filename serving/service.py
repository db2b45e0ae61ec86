"""`tuneloop serve` as an object: vLLM under supervision, adapters kept loaded, the API, one stop.

`Serving(settings).start()` starts the vLLM server on loopback (or, with TUNELOOP_VLLM_URL, starts
nothing and uses that server), waits until the base model answers and loads every registered,
non-archived adapter. A watcher thread then polls the registry and hot-loads each adapter training
registers, so a new adapter becomes chat-able without restarting anything; after a crash the
supervisor restarts vLLM and all adapters are loaded again. A second thread runs the evaluations
finished training runs queue (serving.evaluation.auto). `stop()` ends everything it started.

    tuneloop serve                         # the web app and the API over a `Serving` (ui/web/app.py)
"""

from __future__ import annotations

import logging
import threading
from typing import Iterator

from fastapi import FastAPI

from serving.adapters import AdapterManager, ModelStatus, ServerUnavailable
from serving.api import create_api
from serving.chat import ChatClient, SamplingParams
from serving.evaluation.auto import AutoEvaluator
from serving.fleet import adapter_manager, fleet_health, health_line, is_fleet, model_server_url, upstreams
from serving.vllm_args import command_for
from serving.vllm_process import Supervisor, VllmStartError, probe, wait_until_ready
from store.adapters import list_adapters
from store.db import connect
from store.settings import Settings

log = logging.getLogger(__name__)

POLL_S = 5.0


class Serving:
    """The model server the app chats with, and the adapters on it."""

    def __init__(self, settings: Settings, *, poll_s: float = POLL_S, ready_timeout: float = 600.0,
                 supervisor: Supervisor | None = None):
        self.settings = settings
        self.poll_s = poll_s
        self.ready_timeout = ready_timeout
        # Several vLLM replicas (serving.fleet): nothing started here, nothing hot-loaded.
        self.fleet = is_fleet(settings)
        self.external = bool(settings.vllm_url) or self.fleet
        self.url = model_server_url(settings)
        self._fleet_lines: dict[str, str] = {}
        self.supervisor = supervisor
        if self.supervisor is None and not self.external:
            command = command_for(settings)
            self.supervisor = Supervisor(command, log_path=self.log_path, served_name=settings.served_base_name,
                                         on_ready=self._on_server_ready, ready_timeout=ready_timeout)
        self.last_load_failures: dict[str, str] = {}
        self._traffic: list = []  # the APIs' serving.traffic_api.Traffic, flushed at stop()
        self._attached = threading.Event()  # external server: answered and adapters loaded
        self._attach_error = ""
        self._seen: set[str] = set()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        # End-of-run evaluations, run here because only the serving side talks to vLLM.
        self.evaluator = AutoEvaluator(settings, loaded=self._loaded_names, poll_s=poll_s)

    # ------------------------------------------------------------ lifecycle

    @property
    def log_path(self):
        return self.settings.logs_dir / "vllm.log"

    @property
    def state(self) -> str:
        """starting | restarting | ready | failed | stopped; for an external server ready | down."""
        if self.supervisor is not None:
            return self.supervisor.state
        if self._attach_error:
            return "failed"
        if not self._attached.is_set():
            return "starting"
        ready = any(probe(u, self.settings.served_base_name) == "ready" for u in self.server_urls)
        return "ready" if ready else "down"

    @property
    def server_urls(self) -> list[str]:
        """The servers this app's requests go to: the fleet's router or replicas, else the one server."""
        return upstreams(self.settings) if self.fleet else [self.url]

    @property
    def error(self) -> str:
        return self.supervisor.error if self.supervisor is not None else self._attach_error

    def start(self, *, wait: bool = True) -> None:
        """Start (or attach to) the server; with `wait`, return once the model answers and adapters are loaded."""
        self._stop.clear()
        if self.supervisor is not None:
            self.supervisor.start(wait=wait)
        elif wait:
            self._attach()
            if self._attach_error:
                raise VllmStartError(self._attach_error)
        else:
            threading.Thread(target=self._attach, name="vllm-attach", daemon=True).start()
        self._watcher = threading.Thread(target=self._watch, name="adapter-watcher", daemon=True)
        self._watcher.start()
        self.evaluator.start()

    def _attach(self) -> None:
        """External server: wait until it answers, then load the adapters."""
        self._attached.clear()
        self._attach_error = ""
        try:
            # A fleet is up once any replica is (the first one may be the one that is down).
            wait_until_ready(self.server_urls, self.settings.served_base_name, timeout=self.ready_timeout,
                             stop=self._stop)
            self._on_server_ready()
        except VllmStartError as exc:
            self._attach_error = str(exc)
            log.error("%s", exc)
        finally:
            self._attached.set()

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the model answers and the adapters are loaded; raises VllmStartError otherwise."""
        if self.supervisor is not None:
            self.supervisor.wait_ready(timeout)
            return
        if not self._attached.wait(timeout):
            raise VllmStartError(f"the vLLM server at {', '.join(self.server_urls)} is still not answering after "
                                 f"{timeout:.0f} s")
        if self._attach_error:
            raise VllmStartError(self._attach_error)

    def stop(self) -> None:
        """Stop the watcher and the vLLM server this object started (an external one is left alone).
        The API's capture queue is flushed first, so no answer already given goes unrecorded."""
        self._stop.set()
        for traffic in self._traffic:
            traffic.close()
        self.evaluator.stop()
        if self._watcher is not None:
            self._watcher.join(timeout=30)
            self._watcher = None
        if self.supervisor is not None:
            self.supervisor.stop()

    def __enter__(self) -> "Serving":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------ adapters

    def manager(self) -> AdapterManager:
        """A fresh manager (its own HTTP client): use one per thread, as a context manager."""
        return adapter_manager(self.settings)

    def _on_server_ready(self) -> None:
        """After every (re)start: load all registered adapters; the watcher takes newer ones from here."""
        if self.fleet:  # the replicas load published adapters on first use
            self.log_fleet_health()
            return
        with self._lock, self.manager() as m:
            with connect(self.settings.db_path) as db:
                self._seen = {r["name"] for r in list_adapters(db)}
            self.last_load_failures = m.load_all()
        for name, error in self.last_load_failures.items():
            log.warning("adapter %s not loaded: %s", name, error)

    def sync_adapters(self) -> dict[str, str]:
        """Load adapters registered since the last look and unload archived ones; {name: error} of failures."""
        if self.fleet:
            self.log_fleet_health()
            return {}
        with self._lock, self.manager() as m:
            with connect(self.settings.db_path) as db:
                rows = list_adapters(db)
            new = [r["name"] for r in rows if r["name"] not in self._seen and r["status"] != "archived"]
            self._seen |= {r["name"] for r in rows}
            failures = m.load_all(new) if new else {}
            m.unload_archived()
        for name in new:
            if name in failures:
                log.warning("new adapter %s not loaded: %s", name, failures[name])
            else:
                log.info("new adapter %s loaded", name)
        return failures

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            if self.state != "ready":
                continue
            try:
                self.sync_adapters()
            except ServerUnavailable:
                pass  # the supervisor notices a dead server and reloads everything after the restart
            except Exception:
                log.exception("adapter watcher")

    def _loaded_names(self) -> set[str]:
        if self.state != "ready":
            return set()
        return {m.name for m in self.models(include_archived=False) if m.status == "loaded"}

    def models(self, *, include_archived: bool = True) -> list[ModelStatus]:
        """The base model and every adapter, with status: loaded / available / failed / archived."""
        with self.manager() as m:
            return m.statuses(include_archived=include_archived)

    def load(self, name: str) -> None:
        with self._lock, self.manager() as m:
            m.load(name)

    def unload(self, name: str) -> bool:
        with self._lock, self.manager() as m:
            return m.unload(name)

    def archive(self, name: str) -> None:
        with self._lock, self.manager() as m:
            m.archive(name)

    def restore(self, name: str) -> None:
        """Un-archive an adapter and load it."""
        with self._lock, self.manager() as m:
            m.restore(name)

    # ------------------------------------------------------------ chat and the API

    def log_fleet_health(self) -> None:
        """A line per replica in the serve log when its health changes (up/down, adapters loaded)."""
        for h in fleet_health(self.settings):
            line = health_line(h)
            key = f"{h.up} {sorted(h.models)}"
            if self._fleet_lines.get(h.url) != key:
                self._fleet_lines[h.url] = key
                (log.info if h.up else log.warning)("%s", line)

    def chat_client(self) -> ChatClient:
        return ChatClient(model_server_url(self.settings, first_up=True), server_state=lambda: self.state)

    def stream(self, model: str, messages: list[dict], params: SamplingParams = SamplingParams()) -> Iterator[str]:
        """Stream one answer; raises serving.chat.ChatError with a message for the user."""
        client = self.chat_client()
        try:
            yield from client.stream(model, messages, params)
        finally:
            client.close()

    def create_api(self) -> FastAPI:
        """The app's OpenAI-compatible API; the web app mounts its UI on the returned FastAPI app."""
        if self.fleet:
            app = create_api(self.settings, upstream_urls=self.server_urls)
        else:
            app = create_api(self.settings, upstream_url=self.url)
        self._traffic.append(app.state.traffic)  # stop() flushes its capture queue
        return app
