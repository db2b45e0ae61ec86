"""`Serving` with a scripted server: adapters loaded at start, new ones hot-loaded, all again after a restart."""

from __future__ import annotations

import os
import signal

import httpx
import pytest

from fake_vllm import FakeVllm
from serving.service import Serving
from serving.vllm_process import Supervisor
from serving_helpers import fake_adapter, fake_base_model, fake_command as command, free_port, make_settings, \
    wait_for
from store.adapters import register_adapter
from store.db import connect


@pytest.fixture
def s(tmp_path):
    return make_settings(tmp_path / "data", fake_base_model(tmp_path / "models"), vllm_port=free_port())


def register(s, tmp_path, name, **kw):
    path = fake_adapter(tmp_path / "adapters" / name, s.base_model_path, **kw)
    with connect(s.db_path) as db:
        register_adapter(db, name=name, family="f", version=1, base_model=s.base_model_path, path=str(path),
                         rank=8, run_id=None, dataset_version_id=None, parent_id=None)


def loaded(serving: Serving) -> set[str]:
    return {m["id"] for m in httpx.get(serving.url + "/v1/models").json()["data"]}


def test_adapters_loaded_at_start_hot_loaded_later_and_again_after_a_restart(s, tmp_path):
    register(s, tmp_path, "first-v1")
    register(s, tmp_path, "toobig-v1", rank=64)
    serving = Serving(s, poll_s=0.2)
    serving.supervisor = Supervisor(command(s.vllm_port), log_path=serving.log_path, served_name="base",
                                    on_ready=serving._on_server_ready, backoff_s=(0.1,), probe_interval_s=0.1)
    with serving:
        assert serving.state == "ready"
        assert loaded(serving) == {"base", "first-v1"}
        assert "rank 64" in serving.last_load_failures["toobig-v1"]
        statuses = {m.name: m.status for m in serving.models()}
        assert statuses == {"base": "loaded", "first-v1": "loaded", "toobig-v1": "failed"}

        register(s, tmp_path, "trained-v2")  # what training does when a run finishes
        assert wait_for(lambda: "trained-v2" in loaded(serving), 5)

        serving.archive("first-v1")
        assert loaded(serving) == {"base", "trained-v2"}

        pid = serving.supervisor.pid
        os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda: serving.supervisor.pid != pid and serving.state == "ready", 20)
        assert loaded(serving) == {"base", "trained-v2"}
        assert "".join(serving.stream("trained-v2", [{"role": "user", "content": "hi"}])) == "trained-v2: hi"
    assert serving.state == "stopped"


def test_an_external_server_is_used_and_left_running(tmp_path):
    with FakeVllm(free_port()) as upstream:
        s = make_settings(tmp_path / "data", fake_base_model(tmp_path / "m"), vllm_url=upstream.url + "/v1")
        register(s, tmp_path, "ext-v1")
        serving = Serving(s, poll_s=0.2)
        assert serving.supervisor is None and serving.url == upstream.url
        with serving:
            assert serving.state == "ready" and "ext-v1" in upstream.adapters
        assert httpx.get(upstream.url + "/health").status_code == 200


def test_an_external_server_without_waiting_is_ready_only_once_adapters_are_loaded(tmp_path):
    port = free_port()
    s = make_settings(tmp_path / "data", fake_base_model(tmp_path / "m"), vllm_url=f"http://127.0.0.1:{port}")
    register(s, tmp_path, "ext-v1")
    serving = Serving(s, poll_s=0.2, ready_timeout=20)
    serving.start(wait=False)
    upstream = None
    try:
        assert serving.state == "starting"
        upstream = FakeVllm(port).start_in_thread()  # the server comes up later
        serving.wait_ready(20)
        assert serving.state == "ready" and "ext-v1" in upstream.adapters
    finally:
        serving.stop()
        if upstream is not None:
            upstream.shutdown()
            upstream.server_close()


def test_an_unreachable_external_server_fails_clearly(tmp_path):
    s = make_settings(tmp_path / "data", fake_base_model(tmp_path / "m"), vllm_url=f"http://127.0.0.1:{free_port()}")
    serving = Serving(s, ready_timeout=1)
    with pytest.raises(Exception, match="did not answer"):
        serving.start()
    assert serving.state == "failed" and "did not answer" in serving.error
    serving.stop()
