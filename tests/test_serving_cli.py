"""`tuneloop serve / chat / adapters` against a scripted vLLM server (TUNELOOP_VLLM_URL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import httpx
import pytest
from typer.testing import CliRunner

from fake_vllm import FakeVllm
from serving_helpers import fake_adapter, fake_base_model, free_port, wait_for
from store.adapters import get_adapter, register_adapter
from store.db import connect
from store.settings import Settings


@pytest.fixture
def server():
    with FakeVllm(free_port()) as srv:
        yield srv


@pytest.fixture
def env(tmp_path, data_dir, server, monkeypatch):
    base = fake_base_model(tmp_path / "models")
    monkeypatch.setenv("TUNELOOP_BASE_MODEL", str(base))
    monkeypatch.setenv("TUNELOOP_BASE_MODEL_NAME", "base")
    monkeypatch.setenv("TUNELOOP_VLLM_URL", server.url)
    s = Settings(_env_file=None)
    with connect(s.db_path) as db:
        for name, rank in (("good-v1", 8), ("big-v1", 64)):
            path = fake_adapter(tmp_path / name, base, rank=rank)
            register_adapter(db, name=name, family="f", version=1, base_model=str(base), path=str(path), rank=rank,
                             run_id=None, dataset_version_id=None, parent_id=None)
    return s


def run(*args):
    from ui.cli import app

    return CliRunner().invoke(app, list(args))


def test_adapters_load_list_unload_archive(env, server):
    r = run("adapters", "load", "good-v1")
    assert r.exit_code == 0 and "good-v1: loaded" in r.output
    r = run("adapters", "load", "big-v1")
    assert r.exit_code == 1 and "rank 64" in r.output
    r = run("adapters")
    assert r.exit_code == 0
    lines = {line.split()[0]: line.split()[2] for line in r.output.splitlines()[1:]}
    assert lines == {"base": "loaded", "big-v1": "failed", "good-v1": "loaded"}
    data = json.loads(run("adapters", "--json").output)
    assert data["server_up"] is True
    assert {m["name"]: m["status"] for m in data["models"]} == {"base": "loaded", "big-v1": "failed",
                                                                 "good-v1": "loaded"}
    assert "rank 64" in next(m["error"] for m in data["models"] if m["name"] == "big-v1")
    assert run("adapters", "unload", "good-v1").exit_code == 0 and "good-v1" not in server.adapters
    assert run("adapters", "archive", "good-v1").exit_code == 0
    with connect(env.db_path) as db:
        assert get_adapter(db, "good-v1")["status"] == "archived"
    assert run("adapters", "restore", "good-v1").exit_code == 0 and "good-v1" in server.adapters
    r = run("adapters", "load", "nope")
    assert r.exit_code == 1 and "no adapter named 'nope'" in r.output


def test_adapters_without_a_server_lists_the_registry(env, monkeypatch):
    monkeypatch.setenv("TUNELOOP_VLLM_URL", f"http://127.0.0.1:{free_port()}")
    r = run("adapters", "--json")
    data = json.loads(r.output)
    assert data["server_up"] is False
    assert {m["name"]: m["status"] for m in data["models"]} == {"base": "down", "big-v1": "available",
                                                                 "good-v1": "available"}


def test_chat_streams_and_explains_errors(env, server):
    r = run("chat", "--temperature", "0", "--max-tokens", "5", "--system", "Be brief", "hello you")
    assert r.exit_code == 0 and r.output.strip() == "base: hello you"
    body = [b for _, p, b in server.requests if p == "/v1/chat/completions"][-1]
    assert body["messages"][0] == {"role": "system", "content": "Be brief"} and body["max_tokens"] == 5
    r = run("chat", "--model", "good-v1", "hi")
    assert r.exit_code == 1 and "not loaded" in r.output


def test_serve_with_an_external_server_answers_the_api_and_stops_on_ctrl_c(env, tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ui.cli", "serve"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "TUNELOOP_PORT": str(port), "TUNELOOP_API_KEY": "k"},
    )
    try:
        url = f"http://127.0.0.1:{port}/v1/models"
        assert wait_for(lambda: _get(url) is not None, 30), proc.stdout.read() if proc.poll() is not None else ""
        # the page is up at once; the adapters follow as soon as the model server answers (big-v1 is refused)
        assert wait_for(lambda: {m["id"] for m in _get(url).json()["data"]} == {"base", "good-v1"}, 20)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "using the vLLM server at" in out and "adapter big-v1 failed to load" in out, out
    assert f"serving at http://127.0.0.1:{port}" in out


def _get(url):
    try:
        return httpx.get(url, headers={"Authorization": "Bearer k"}, timeout=2)
    except httpx.HTTPError:
        return None


def test_serve_imports_transformers_before_any_thread_that_uses_it_starts(env, monkeypatch):
    """transformers 5's lazy import fails when two threads import it first at once (the Train tab's estimate and
    an evaluation's embedding model did), so `serve_app` imports it once before the app's threads start."""
    import threading
    import time

    import uvicorn

    from serving.service import Serving
    from ui.web import app as web_app

    imported, built = [], threading.Event()

    def slow_import():  # still importing when the app is built and its threads could start
        built.wait(60)
        time.sleep(0.5)
        imported.append(True)

    def mount_ui(*args):
        app = mount(*args)
        built.set()
        return app

    serving = Serving(env)
    started_after_import = []
    mount = web_app.mount_ui
    monkeypatch.setattr(web_app, "mount_ui", mount_ui)
    monkeypatch.setattr(web_app, "import_ml_libraries", slow_import)
    monkeypatch.setattr(serving, "start", lambda **kw: started_after_import.append(bool(imported)))
    monkeypatch.setattr(serving, "stop", lambda: None)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: None)  # requests would be served from here on
    web_app.serve_app(env, announce=lambda line: None, serving=serving)
    assert started_after_import == [True]
