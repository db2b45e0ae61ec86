"""The supervisor with a scripted server process: start, restart after a crash, give up, stop cleanly."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from serving.vllm_process import Supervisor, VllmStartError, port_in_use, probe
from serving_helpers import fake_command as command, free_port, wait_for


def supervisor(tmp_path, *extra, **kwargs) -> Supervisor:
    port = free_port()
    kwargs.setdefault("backoff_s", (0.1,))
    kwargs.setdefault("probe_interval_s", 0.1)
    return Supervisor(command(port, *extra), log_path=tmp_path / "logs" / "vllm.log", served_name="base",
                      ready_timeout=20, **kwargs)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_start_ready_log_and_stop_kills_the_whole_group(tmp_path):
    readies = []
    sup = supervisor(tmp_path, "--spawn-child", str(tmp_path / "child.pid"), "--start-delay", "0.5",
                     on_ready=lambda: readies.append(1))
    sup.start()
    try:
        assert sup.state == "ready" and readies == [1]
        assert probe(sup.url, "base") == "ready"
        child = int((tmp_path / "child.pid").read_text())
        assert alive(child)
        log = (tmp_path / "logs" / "vllm.log").read_text()
        assert "starting vLLM" in log and "FAKE_MARKER=1" in log and "fake vllm listening" in log
    finally:
        sup.stop()
    assert sup.state == "stopped"
    assert not port_in_use(sup.command.port)
    assert wait_for(lambda: not alive(child), 5), "a grandchild outlived stop()"


def test_sigkill_leads_to_a_restart_and_on_ready_again(tmp_path):
    readies = []
    sup = supervisor(tmp_path, on_ready=lambda: readies.append(sup.pid))
    sup.start()
    try:
        first = sup.pid
        os.kill(first, signal.SIGKILL)
        assert wait_for(lambda: sup.pid != first and sup.state == "ready")
        assert sup.restarts == 1 and readies == [first, sup.pid]
        assert httpx.get(sup.url + "/health").status_code == 200
    finally:
        sup.stop()


def test_repeated_crashes_give_up_with_a_clear_failure(tmp_path):
    sup = supervisor(tmp_path, "--exit-after", "1.0", max_crashes=3)
    sup.start()
    try:
        assert wait_for(lambda: sup.state == "failed")
        assert "crashed 3 times" in sup.error and "vllm.log" in sup.error
        with pytest.raises(VllmStartError, match="crashed 3 times"):
            sup.wait_ready(1)
    finally:
        sup.stop()
    assert sup.state == "failed"


def test_a_first_start_failure_is_final_and_quotes_the_log(tmp_path):
    sup = supervisor(tmp_path, "--fail-start")
    with pytest.raises(VllmStartError, match="(?s)exited before it was ready.*refusing to start"):
        sup.start()
    assert sup.state == "failed" and sup.restarts == 0
    sup.stop()


def test_a_busy_port_is_refused_before_starting(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        sup = Supervisor(command(port), log_path=tmp_path / "vllm.log", served_name="base", ready_timeout=5)
        with pytest.raises(VllmStartError, match=f"port {port}.*TUNELOOP_VLLM_PORT"):
            sup.start()
        sup.stop()


def test_wrong_served_name_times_out(tmp_path):
    port = free_port()
    sup = Supervisor(command(port), log_path=tmp_path / "vllm.log", served_name="other", ready_timeout=2)
    with pytest.raises(VllmStartError, match="did not answer with model 'other'"):
        sup.start()
    sup.stop()
    assert not port_in_use(port)
