"""Generation defaults belong to a model: stored once, used by the chat tabs and by the /v1 API when a client
does not set them (the API used to answer at vLLM's temperature 1.0 while the app used 0.7)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from fake_vllm import FakeVllm
from serving.api import create_api
from serving.generation import (APP_DEFAULTS, GenerationDefaultError, GenerationDefaults, defaults_for, fill_request,
                                store_defaults)
from serving_helpers import fake_adapter, fake_base_model, free_port, make_settings
from store.adapters import register_adapter
from store.db import connect

KEY = "k"


def test_unset_fields_fall_back_to_the_apps_and_none_clears_one(db):
    assert defaults_for(db, "support-v1") == APP_DEFAULTS
    got = store_defaults(db, "support-v1", temperature=0.2, system_prompt="  Be brief.  ")
    assert got == GenerationDefaults(0.2, APP_DEFAULTS.max_tokens, "Be brief.")
    assert store_defaults(db, "support-v1", max_tokens=128).temperature == 0.2  # others kept
    assert store_defaults(db, "support-v1", temperature=None).temperature == APP_DEFAULTS.temperature
    with pytest.raises(GenerationDefaultError) as info:
        store_defaults(db, "support-v1", temperature=3.0)
    assert info.value.field == "temperature"


def test_a_deployments_own_fields_go_over_its_models(db):
    store_defaults(db, "support-v1", temperature=0.2, max_tokens=300)
    store_defaults(db, "support", system_prompt="You are ACME support.", temperature=0.0)
    assert defaults_for(db, "support-v1", deployment="support") == GenerationDefaults(0.0, 300,
                                                                                       "You are ACME support.")
    assert defaults_for(db, "support-v1") == GenerationDefaults(0.2, 300, "")  # the adapter alone keeps its own
    assert defaults_for(db, "support-v2", deployment="support").max_tokens == APP_DEFAULTS.max_tokens


def test_a_request_gets_only_what_its_client_left_out():
    d = GenerationDefaults(0.3, 99, "Be brief.")
    body = fill_request({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, d)
    assert (body["temperature"], body["max_tokens"]) == (0.3, 99)
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    own = {"model": "m", "temperature": 1.0, "max_completion_tokens": 5,
           "messages": [{"role": "system", "content": "Mine."}, {"role": "user", "content": "hi"}]}
    assert fill_request(own, d) == own


def test_the_api_answers_with_the_adapters_defaults(tmp_path):
    s = make_settings(tmp_path / "data", fake_base_model(tmp_path / "models"), api_key=KEY)
    path = fake_adapter(tmp_path / "support-v1", s.base_model_path)
    with connect(s.db_path) as db:
        register_adapter(db, name="support-v1", family="support", version=1, base_model=s.base_model_path,
                         path=str(path), rank=8, run_id=None, dataset_version_id=None, parent_id=None)
        store_defaults(db, "support-v1", temperature=0.7, max_tokens=200, system_prompt="You are ACME support.")
    with FakeVllm(free_port()) as upstream, TestClient(create_api(s, upstream_url=upstream.url)) as client:
        upstream.adapters["support-v1"] = str(path)
        r = client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                        json={"model": "support-v1", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200
        sent = [b for m, p, b in upstream.requests if p == "/v1/chat/completions"][-1]
        assert (sent["temperature"], sent["max_tokens"]) == (0.7, 200)
        assert sent["messages"][0] == {"role": "system", "content": "You are ACME support."}
        # The API reads defaults on a long-lived connection: a change still reaches the very next request.
        with connect(s.db_path) as db:
            store_defaults(db, "support-v1", temperature=0.1, system_prompt=None)
        client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                    json={"model": "support-v1", "messages": [{"role": "user", "content": "hi"}]})
        sent = [b for m, p, b in upstream.requests if p == "/v1/chat/completions"][-1]
    assert (sent["temperature"], sent["max_tokens"]) == (0.1, 200)
    assert sent["messages"][0]["role"] == "user"


def test_a_request_to_a_deployment_gets_the_deployments_defaults_over_its_adapters(tmp_path):
    from store.deployments import change_target

    s = make_settings(tmp_path / "data", fake_base_model(tmp_path / "models"), api_key=KEY)
    path = fake_adapter(tmp_path / "support-v1", s.base_model_path)
    with connect(s.db_path) as db:
        register_adapter(db, name="support-v1", family="support", version=1, base_model=s.base_model_path,
                         path=str(path), rank=8, run_id=None, dataset_version_id=None, parent_id=None)
        change_target(db, "support", "support-v1", action="force", by="t")
        store_defaults(db, "support-v1", temperature=0.7, max_tokens=200)
        store_defaults(db, "support", system_prompt="You are ACME's bot.")
    with FakeVllm(free_port()) as upstream, TestClient(create_api(s, upstream_url=upstream.url)) as client:
        upstream.adapters["support-v1"] = str(path)
        for model in ("support", "support-v1"):
            r = client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                            json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200, r.text
        by_deployment, by_adapter = [b for m, p, b in upstream.requests if p == "/v1/chat/completions"][-2:]
    assert by_deployment["model"] == "support-v1" and (by_deployment["temperature"], by_deployment["max_tokens"]) \
        == (0.7, 200)
    assert by_deployment["messages"][0] == {"role": "system", "content": "You are ACME's bot."}
    assert by_adapter["messages"][0]["role"] == "user"  # asked by the adapter's own name: no deployment prompt


def test_cli_sets_and_shows_an_adapters_defaults(tmp_path, data_dir, monkeypatch):
    from store.settings import Settings
    from ui.cli import app

    monkeypatch.setenv("TUNELOOP_BASE_MODEL", str(fake_base_model(tmp_path / "models")))
    monkeypatch.setenv("TUNELOOP_BASE_MODEL_NAME", "base")
    s = Settings(_env_file=None)
    with connect(s.db_path) as db:
        register_adapter(db, name="support-v1", family="support", version=1, base_model=s.base_model_path,
                         path=str(tmp_path / "a"), rank=8, run_id=None, dataset_version_id=None, parent_id=None)
    runner = CliRunner()
    r = runner.invoke(app, ["adapters", "defaults", "support-v1", "--temperature", "0.4", "--max-tokens", "300",
                            "--system", "Be brief."])
    assert r.exit_code == 0, r.output
    assert "temperature 0.4, max tokens 300, system prompt 'Be brief.'" in r.output
    r = runner.invoke(app, ["adapters", "defaults", "support-v1", "--temperature", "9"])
    assert r.exit_code == 1 and "--temperature must be between 0 and 2" in r.output
    assert runner.invoke(app, ["adapters", "defaults", "nope"]).exit_code == 1
    from store.deployments import change_target

    with connect(s.db_path) as db:
        change_target(db, "support", "support-v1", action="force", by="t")
    r = runner.invoke(app, ["adapters", "defaults", "support", "--system", "You are ACME's bot."])
    assert r.exit_code == 0, r.output
    assert "temperature 0.4, max tokens 300, system prompt \"You are ACME's bot.\"" in r.output  # over its adapter's
    with connect(s.db_path) as db:
        assert defaults_for(db, "support-v1") == GenerationDefaults(0.4, 300, "Be brief.")
