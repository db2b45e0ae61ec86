"""The vLLM server as a supervised child process: start, health check, restart with back-off, stop.

`Supervisor` owns one thread that starts the server, waits until the base model answers, calls
`on_ready` (which loads the adapters again), and restarts the server if it dies: with back-off,
and a clear failure after repeated crashes. The child runs in its own process group, so stopping
it (or cleaning up after a crash) also ends vLLM's engine and worker processes. Its output goes to
`settings.logs_dir / "vllm.log"`.

    python -m serving.vllm_process     # start vLLM from the current settings until Ctrl-C
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Literal, Sequence

import httpx

from serving.vllm_args import VllmCommand
from store.logtail import tail

log = logging.getLogger(__name__)

State = Literal["stopped", "starting", "ready", "restarting", "failed"]
LOG_ROTATE_BYTES = 20 * 1024 * 1024
BACKOFF_S = (2.0, 5.0, 15.0, 30.0, 60.0)


class VllmStartError(RuntimeError):
    """The server did not come up; the message says why and quotes the end of its log."""


def probe(url: str, served_name: str, *, timeout: float = 3.0) -> Literal["down", "starting", "ready"]:
    """`ready` when /health answers and /v1/models lists the base model; `starting` when only part is up."""
    try:
        with httpx.Client(base_url=url, timeout=timeout) as client:
            if client.get("/health").status_code != 200:
                return "starting"
            models = client.get("/v1/models")
            if models.status_code == 200 and served_name in {m.get("id") for m in models.json().get("data", [])}:
                return "ready"
            return "starting"
    except (httpx.HTTPError, ValueError):
        return "down"


def wait_until_ready(url: str | Sequence[str], served_name: str, *, timeout: float,
                     alive: Callable[[], bool] = lambda: True, stop: threading.Event | None = None,
                     interval: float = 1.0) -> None:
    """Poll until the model answers at `url` (or at any of several: a fleet's replicas, of which some may be
    down); raises VllmStartError on timeout or when `alive()` turns false."""
    urls = [url] if isinstance(url, str) else list(url)
    where = f"the vLLM server{'s' if len(urls) > 1 else ''} at {', '.join(urls)}"
    deadline = time.monotonic() + timeout
    while True:
        if any(probe(u, served_name) == "ready" for u in urls):
            return
        if not alive():
            raise VllmStartError(f"{where} exited before it was ready")
        if stop is not None and stop.is_set():
            raise VllmStartError("stopped while waiting for the vLLM server")
        if time.monotonic() > deadline:
            raise VllmStartError(f"{where} did not answer with model {served_name!r} "
                                 f"within {timeout:.0f} s")
        time.sleep(interval)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0



def _parent_death_signal() -> Callable[[], None] | None:
    """A preexec function asking Linux to SIGTERM the child if the thread that started it dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    PR_SET_PDEATHSIG = 1

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    return preexec


class VllmProcess:
    """One run of the server: a child in its own process group, its output appended to `log_path`."""

    def __init__(self, command: VllmCommand, *, log_path: Path, served_name: str):
        self.command = command
        self.log_path = log_path
        self.served_name = served_name
        self.popen: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def start(self) -> None:
        if port_in_use(self.command.port):
            raise VllmStartError(
                f"port {self.command.port} on 127.0.0.1 is already in use (another `tuneloop serve`, or a "
                "leftover vLLM?): stop it, or set TUNELOOP_VLLM_PORT to a free port"
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.log_path.exists() and self.log_path.stat().st_size > LOG_ROTATE_BYTES:
            self.log_path.replace(self.log_path.with_suffix(".log.1"))
        env = {**os.environ, **self.command.env}
        with open(self.log_path, "ab") as logf:
            stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
            logf.write(f"\n===== tuneloop: starting vLLM at {stamp}\n===== {self.command.shell()}\n".encode())
            logf.flush()
            self.popen = subprocess.Popen(
                self.command.argv, env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_parent_death_signal(),
            )
        log.info("vLLM started, pid %s, log %s", self.popen.pid, self.log_path)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait_ready(self, timeout: float, stop: threading.Event | None = None, interval: float = 1.0) -> None:
        try:
            wait_until_ready(self.command.url, self.served_name, timeout=timeout, alive=self.alive, stop=stop,
                             interval=interval)
        except VllmStartError as exc:
            raise VllmStartError(f"{exc}; last lines of {self.log_path}:\n{tail(self.log_path)}") from None

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group: vLLM's engine and worker processes are in it too."""
        if self.popen is None:
            return
        try:
            os.killpg(self.popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the group, wait, then SIGKILL whatever is left."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.kill_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill_group(signal.SIGKILL)
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            log.warning("vLLM pid %s did not exit after SIGKILL", self.popen.pid)


class Supervisor:
    """Keeps a vLLM server running: one thread starts it, watches it and restarts it when it dies.

    A failure of the first start is final (a wrong model path does not fix itself); after the server
    has been ready once, a crash leads to a restart after a back-off, and `max_crashes` crashes within
    `crash_window_s` give up with state `failed` and a message naming the log file.
    """

    def __init__(self, command: VllmCommand, *, log_path: Path, served_name: str,
                 on_ready: Callable[[], None] = lambda: None, ready_timeout: float = 600.0,
                 max_crashes: int = 5, crash_window_s: float = 600.0, backoff_s: tuple[float, ...] = BACKOFF_S,
                 probe_interval_s: float = 1.0):
        self.command = command
        self.log_path = log_path
        self.served_name = served_name
        self.on_ready = on_ready
        self.ready_timeout = ready_timeout
        self.max_crashes = max_crashes
        self.crash_window_s = crash_window_s
        self.backoff_s = backoff_s
        self.probe_interval_s = probe_interval_s
        self.state: State = "stopped"
        self.error = ""
        self.restarts = 0
        self.process: VllmProcess | None = None
        self._crashes: deque[float] = deque()
        self._stop = threading.Event()
        self._settled = threading.Event()  # set when the server is ready or has failed for good
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return self.command.url

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, *, wait: bool = True) -> None:
        """Start the supervising thread; with `wait`, return once the model answers (or raise)."""
        if self._thread is not None:
            raise RuntimeError("the supervisor is already running")
        self._stop.clear()
        self.state = "starting"
        self._thread = threading.Thread(target=self._run, name="vllm-supervisor", daemon=True)
        self._thread.start()
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the server is ready; raises VllmStartError if it failed or `timeout` passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.state == "ready":
                return
            if self.state in ("failed", "stopped"):
                raise VllmStartError(self.error or "the vLLM server is stopped")
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise VllmStartError(f"the vLLM server is still {self.state} after {timeout:.0f} s")
            self._settled.wait(0.5 if remaining is None else min(0.5, remaining))

    def stop(self) -> None:
        self._stop.set()
        if self.process is not None:
            self.process.stop()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
        if self.state != "failed":
            self.state = "stopped"
        self._settled.set()

    def _run(self) -> None:
        ever_ready = False
        while not self._stop.is_set():
            self._settled.clear()
            self.state = "restarting" if ever_ready else "starting"
            process = VllmProcess(self.command, log_path=self.log_path, served_name=self.served_name)
            try:
                if ever_ready:  # a crashed server's port may take a moment to free
                    self._wait_port_free(30)
                process.start()
                self.process = process
                process.wait_ready(self.ready_timeout, stop=self._stop, interval=self.probe_interval_s)
            except VllmStartError as exc:
                process.stop(timeout=5)
                if self._stop.is_set():
                    break
                if not ever_ready:
                    self._fail(str(exc))
                    return
                if not self._crashed(str(exc)):
                    return
                continue
            if self._stop.is_set():
                break
            ever_ready = True
            try:
                self.on_ready()
            except Exception:  # a failing callback must not take the server down with it
                log.exception("on_ready callback failed")
            self.state = "ready"
            self.error = ""
            self._settled.set()
            while not self._stop.is_set() and process.alive():
                self._stop.wait(min(0.5, self.probe_interval_s))
            if self._stop.is_set():
                break
            code = process.popen.returncode if process.popen else None
            process.kill_group()  # the engine and worker processes may outlive the API server
            log.warning("vLLM exited with code %s; restarting", code)
            if not self._crashed(f"the vLLM server exited with code {code}"):
                return
        self._settled.set()

    def _crashed(self, reason: str) -> bool:
        """Record a crash; False (and state `failed`) when there were too many, else back off and go on."""
        now = time.monotonic()
        self._crashes.append(now)
        while self._crashes and now - self._crashes[0] > self.crash_window_s:
            self._crashes.popleft()
        if len(self._crashes) >= self.max_crashes:
            self._fail(f"the vLLM server crashed {len(self._crashes)} times in {self.crash_window_s / 60:.0f} "
                       f"minutes; giving up (last: {reason}). See {self.log_path}:\n{tail(self.log_path)}")
            return False
        self.restarts += 1
        self.state = "restarting"
        self.error = reason
        delay = self.backoff_s[min(len(self._crashes) - 1, len(self.backoff_s) - 1)]
        self._stop.wait(delay)
        return True

    def _fail(self, message: str) -> None:
        log.error("%s", message)
        self.state = "failed"
        self.error = message
        self._settled.set()

    def _wait_port_free(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while port_in_use(self.command.port) and time.monotonic() < deadline and not self._stop.is_set():
            time.sleep(0.5)


def main() -> None:  # pragma: no cover - a manual tool
    from store.settings import Settings
    from serving.vllm_args import command_for

    logging.basicConfig(level=logging.INFO)
    s = Settings()
    command = command_for(s)
    sup = Supervisor(command, log_path=s.logs_dir / "vllm.log", served_name=s.served_base_name)
    print(command.shell())
    try:
        sup.start()
        print(f"vLLM ready at {sup.url} (model {s.served_base_name}); Ctrl-C stops it")
        while sup.state != "failed":
            time.sleep(1)
        print(sup.error)
    except KeyboardInterrupt:
        pass
    finally:
        sup.stop()


if __name__ == "__main__":
    main()
