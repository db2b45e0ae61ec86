"""The app's OpenAI-compatible API in-process, against a scripted upstream (serving/api.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fake_vllm import FakeVllm
from serving.api import create_api
from serving_helpers import fake_adapter, fake_base_model, free_port, make_settings
from store.adapters import register_adapter, set_status
from store.db import connect
from store.deployments import change_target

KEY = "s3cret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def upstream():
    with FakeVllm(free_port()) as srv:
        yield srv


@pytest.fixture
def s(tmp_path):
    return make_settings(tmp_path / "data", fake_base_model(tmp_path / "models"), api_key=KEY)


@pytest.fixture
def client(s, upstream):
    with TestClient(create_api(s, upstream_url=upstream.url)) as c:
        yield c


def add_adapter(s, upstream, tmp_path, name, *, loaded=True, archived=False):
    path = fake_adapter(tmp_path / name, s.base_model_path)
    with connect(s.db_path) as db:
        register_adapter(db, name=name, family="f", version=1, base_model=s.base_model_path, path=str(path),
                         rank=8, run_id=None, dataset_version_id=None, parent_id=None)
        if archived:
            set_status(db, name, "archived")
    if loaded:
        upstream.adapters[name] = str(path)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY},
                                     {"Authorization": f"Basic {KEY}"}])
def test_requests_without_the_key_get_401(client, headers):
    for response in (client.get("/v1/models", headers=headers),
                     client.post("/v1/chat/completions", headers=headers, json={"model": "base", "messages": []})):
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"


def test_no_key_configured_refuses_everything_and_says_how_to_set_it(tmp_path, upstream):
    s = make_settings(tmp_path / "data", fake_base_model(tmp_path / "m"), api_key="")
    with TestClient(create_api(s, upstream_url=upstream.url)) as c:
        for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer anything"}):
            r = c.get("/v1/models", headers=headers)
            assert r.status_code == 401 and "TUNELOOP_API_KEY" in r.json()["error"]["message"]


def test_models_lists_base_and_non_archived_loaded_adapters_without_paths(s, client, upstream, tmp_path):
    add_adapter(s, upstream, tmp_path, "new-v2")
    add_adapter(s, upstream, tmp_path, "old-v1", archived=True)
    add_adapter(s, upstream, tmp_path, "notloaded-v1", loaded=False)
    upstream.adapters["unregistered"] = "/x"
    body = client.get("/v1/models", headers=AUTH).json()
    assert {m["id"]: m["parent"] for m in body["data"]} == {"base": None, "new-v2": "base"}
    assert all("root" not in m and m["max_model_len"] == 2048 for m in body["data"])
    assert client.get("/v1/models/new-v2", headers=AUTH).json()["id"] == "new-v2"
    assert client.get("/v1/models/old-v1", headers=AUTH).status_code == 404


def test_chat_completion_is_proxied(client):
    r = client.post("/v1/chat/completions", headers=AUTH,
                    json={"model": "base", "messages": [{"role": "user", "content": "hello there"}]})
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == "base: hello there"


def test_streaming_is_passed_through_as_sse(client):
    with client.stream("POST", "/v1/chat/completions", headers=AUTH,
                       json={"model": "base", "stream": True, "messages": [{"role": "user", "content": "a b"}]}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert "".join(json.loads(e)["choices"][0]["delta"]["content"] for e in events[:-1]) == "base: a b"


def test_archived_and_unknown_models_are_refused_before_the_upstream(s, client, upstream, tmp_path):
    add_adapter(s, upstream, tmp_path, "old-v1", archived=True)
    for model in ("old-v1", "nope", "../base"):
        r = client.post("/v1/chat/completions", headers=AUTH, json={"model": model, "messages": []})
        assert r.status_code == 404 and r.json()["error"]["param"] == "model"
    assert not any(path == "/v1/chat/completions" for _, path, _ in upstream.requests)


def test_bad_bodies_get_400(client):
    assert client.post("/v1/chat/completions", headers=AUTH, content=b"{not json").status_code == 400
    assert client.post("/v1/chat/completions", headers=AUTH, json={"messages": []}).status_code == 400


def test_upstream_errors_keep_their_status(s, client, upstream, tmp_path):
    add_adapter(s, upstream, tmp_path, "reg-v1", loaded=False)  # registered, but the server lacks it
    r = client.post("/v1/chat/completions", headers=AUTH, json={"model": "reg-v1", "messages": []})
    assert r.status_code == 404 and "does not exist" in r.json()["error"]["message"]


@pytest.mark.parametrize("method,path", [
    ("POST", "/v1/load_lora_adapter"), ("POST", "/v1/unload_lora_adapter"), ("GET", "/health"),
    ("POST", "/v1/completions"), ("GET", "/metrics"), ("GET", "/docs"), ("GET", "/openapi.json"),
    ("POST", "/tokenize"), ("GET", "/v1/../health"),
])
def test_nothing_but_the_two_routes_is_exposed(client, upstream, method, path):
    r = client.request(method, path, headers=AUTH, json={"lora_name": "x", "lora_path": "/tmp"})
    assert r.status_code in (404, 405)
    assert not any(p not in ("/v1/models",) for _, p, _ in upstream.requests)


def test_server_down_is_a_503_with_a_message(s):
    with TestClient(create_api(s, upstream_url=f"http://127.0.0.1:{free_port()}")) as c:
        r = c.get("/v1/models", headers=AUTH)
        assert r.status_code == 503 and "not available" in r.json()["error"]["message"]
        r = c.post("/v1/chat/completions", headers=AUTH, json={"model": "base", "messages": []})
        assert r.status_code == 503


def test_a_request_opens_no_database_connection_and_builds_no_tls_context(s, client, upstream, tmp_path, monkeypatch):
    """What made the API cost 80-160 ms of CPU per request (docs/benchmarks.md): a TLS context (the CA bundle
    loaded) for each upstream client, and fresh SQLite connections (migrations and WAL checked) for the
    deployment names and generation defaults. Both are now made once; the reads stay fresh (promotion:
    tests/test_deployments_api.py, defaults: tests/test_generation_defaults.py)."""
    import ssl
    import threading
    import traceback

    import store.db

    add_adapter(s, upstream, tmp_path, "v1")
    with connect(s.db_path) as db:
        change_target(db, "support", "v1", action="promote", by="t")
    ask = lambda model: client.post("/v1/chat/completions", headers=AUTH,  # noqa: E731
                                    json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
    assert ask("support").status_code == 200  # the first request opens the shared connection
    opened, contexts = [], []
    real_open, real_context = store.db.open_db, ssl.create_default_context

    def counting_open(path):
        # The writer's batches are off the request path; other tests' leftover threads open other databases.
        if threading.current_thread().name != "capture-writer" and Path(path) == Path(s.db_path):
            opened.append(path)
        return real_open(path)

    def counting_context(*a, **k):
        # Only contexts the API's request path builds: a thread another test left running may make its own.
        if any(f.filename.endswith(("serving/api.py", "serving/traffic_api.py")) for f in traceback.extract_stack()):
            contexts.append(1)
        return real_context(*a, **k)

    monkeypatch.setattr(store.db, "open_db", counting_open)
    monkeypatch.setattr(ssl, "create_default_context", counting_context)
    for model in ("support", "v1", "base", "support"):
        assert ask(model).status_code == 200
    with client.stream("POST", "/v1/chat/completions", headers=AUTH,
                       json={"model": "support", "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as r:
        assert "[DONE]" in "".join(r.iter_lines())
    assert opened == [] and contexts == []
