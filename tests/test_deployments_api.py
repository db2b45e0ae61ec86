"""Deployment names in the OpenAI-compatible API: listed, resolved at every request, no restart (in-process)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from fake_vllm import FakeVllm
from serving.api import create_api
from serving_helpers import fake_adapter, fake_base_model, free_port, make_settings
from store.adapters import register_adapter, set_status
from store.db import connect
from store.deployments import change_target

KEY = "k3y"
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


def add(s, upstream, tmp_path, name):
    path = fake_adapter(tmp_path / name, s.base_model_path)
    with connect(s.db_path) as db:
        register_adapter(db, name=name, family="f", version=1, base_model=s.base_model_path, path=str(path), rank=8,
                         run_id=None, dataset_version_id=None, parent_id=None)
    upstream.adapters[name] = str(path)


def point(s, name, target, action="promote"):
    with connect(s.db_path) as db:
        change_target(db, name, target, action=action, by="test")


def ask(client, model):
    r = client.post("/v1/chat/completions", headers=AUTH,
                    json={"model": model, "messages": [{"role": "user", "content": "hello"}]})
    return r


def test_a_deployment_answers_with_its_adapter_and_follows_promotion_and_rollback_at_once(s, client, upstream,
                                                                                            tmp_path):
    add(s, upstream, tmp_path, "v1")
    add(s, upstream, tmp_path, "v2")
    assert ask(client, "support").status_code == 404
    point(s, "support", "v1")
    r = ask(client, "support")
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "v1: hello"
    assert r.headers["x-tuneloop-model"] == "v1"
    point(s, "support", "v2")  # the very next request sees it: no cache, no restart
    assert ask(client, "support").json()["choices"][0]["message"]["content"] == "v2: hello"
    point(s, "support", "v1", "rollback")
    assert ask(client, "support").json()["choices"][0]["message"]["content"] == "v1: hello"
    point(s, "support", None, "rollback")  # the base model
    assert ask(client, "support").json()["choices"][0]["message"]["content"] == "base: hello"
    sent = [b["model"] for m, p, b in upstream.requests if p == "/v1/chat/completions"]
    assert sent == ["v1", "v2", "v1", "base"]  # the upstream only ever sees served names


def test_streaming_through_a_deployment(s, client, upstream, tmp_path):
    add(s, upstream, tmp_path, "v1")
    point(s, "support", "v1")
    with client.stream("POST", "/v1/chat/completions", headers=AUTH,
                       json={"model": "support", "stream": True, "messages": [{"role": "user", "content": "a"}]}) as r:
        assert r.status_code == 200 and r.headers["x-tuneloop-model"] == "v1"
        body = "".join(r.iter_lines())
    assert "v1:" in body and "[DONE]" in body


def test_models_lists_deployments_whose_target_is_served(s, client, upstream, tmp_path):
    add(s, upstream, tmp_path, "v1")
    point(s, "support", "v1")
    point(s, "staging", None)
    point(s, "broken", "ghost")
    data = {m["id"]: m for m in client.get("/v1/models", headers=AUTH).json()["data"]}
    assert set(data) == {"base", "v1", "support", "staging"}
    assert data["support"]["parent"] == "v1" and data["support"]["deployment"] is True
    assert data["staging"]["parent"] == "base" and data["support"]["max_model_len"] == 2048
    assert client.get("/v1/models/support", headers=AUTH).json()["id"] == "support"


def test_a_deployment_pointing_at_an_archived_adapter_is_refused_before_the_upstream(s, client, upstream, tmp_path):
    add(s, upstream, tmp_path, "v1")
    point(s, "support", "v1")
    with connect(s.db_path) as db:
        set_status(db, "v1", "archived")
    r = ask(client, "support")
    assert r.status_code == 404 and "archived" in r.json()["error"]["message"]
    assert not any(p == "/v1/chat/completions" for _, p, _ in upstream.requests)


def test_deployment_names_still_need_the_key(s, client, upstream, tmp_path):
    point(s, "support", None)
    r = client.post("/v1/chat/completions", json={"model": "support", "messages": []})
    assert r.status_code == 401
