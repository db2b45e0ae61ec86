"""Serving from replicas without vLLM: the adapter store, the replica command, health, failover, faults."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from serving import fleet
from serving_helpers import fake_adapter, fake_base_model, free_port, make_settings
from store import adapter_store
from store.adapters import get_adapter, register_adapter
from store.db import connect

METRICS = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="base"} 3.0
vllm:num_requests_waiting{engine="0",model_name="base"} 1.0
vllm:num_requests_running{engine="1",model_name="base"} 2.0
"""


@pytest.fixture
def fleet_settings(data_dir, tmp_path):
    base = fake_base_model(tmp_path / "models")
    store = tmp_path / "store"
    store.mkdir()
    return make_settings(data_dir, base, adapter_store=str(store), replica_model="/srv/models/TinyBase")


def _registered(settings, name: str, tmp_path: Path) -> Path:
    path = fake_adapter(tmp_path / "adapters" / name, settings.base_model_path)
    with connect(settings.db_path) as db:
        register_adapter(db, name=name, family="t", version=1, base_model=settings.base_model_path, path=str(path),
                         rank=8, run_id=None, dataset_version_id=None, parent_id=None)
    return path


# --- the adapter store ---

def test_publish_copies_the_adapter_under_its_name_for_the_replicas_model(fleet_settings, tmp_path):
    path = _registered(fleet_settings, "support-v3", tmp_path)
    target = adapter_store.publish(fleet_settings, "support-v3", path)
    published = Path(target)
    assert published == Path(fleet_settings.adapter_store) / "support-v3"
    config = json.loads((published / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "/srv/models/TinyBase"  # what vLLM's resolver compares
    assert (published / "adapter_model.safetensors").is_file()
    assert json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"] != config[
        "base_model_name_or_path"]  # the registered copy is untouched
    assert adapter_store.published_names(fleet_settings) == {"support-v3"}  # no staging folder listed
    assert adapter_store.read_published(fleet_settings, "support-v3")["peft_type"] == "LORA"


def test_a_published_name_is_never_overwritten(fleet_settings, tmp_path):
    path = _registered(fleet_settings, "support-v3", tmp_path)
    adapter_store.publish(fleet_settings, "support-v3", path)
    with pytest.raises(adapter_store.AdapterStoreError, match="already published"):
        adapter_store.publish(fleet_settings, "support-v3", path)


def test_without_a_store_nothing_is_published(fleet_settings, tmp_path):
    path = _registered(fleet_settings, "a-v1", tmp_path)
    assert adapter_store.publish(fleet_settings.model_copy(update={"adapter_store": ""}), "a-v1", path) is None


def test_a_store_that_is_not_writable_keeps_the_adapter_and_says_so(fleet_settings, tmp_path):
    path = _registered(fleet_settings, "a-v1", tmp_path)
    (tmp_path / "a-file").write_text("")  # a store below a file cannot be written, even by root
    unwritable = fleet_settings.model_copy(update={"adapter_store": str(tmp_path / "a-file" / "store")})
    with connect(fleet_settings.db_path) as db:
        assert adapter_store.publish_registered(db, unwritable, "a-v1", path) is None
        row = get_adapter(db, "a-v1")
    assert "not published for the replicas" in row["meta"]["load_error"] and "not writable" in row["meta"]["load_error"]
    assert (path / "adapter_model.safetensors").is_file()  # nothing lost: the adapter is still registered here


def test_a_published_adapter_that_cannot_be_read_is_named(fleet_settings, tmp_path):
    path = _registered(fleet_settings, "a-v1", tmp_path)
    target = Path(adapter_store.publish(fleet_settings, "a-v1", path))
    (target / "adapter_config.json").write_text("{half a fil")  # e.g. a store mount that failed mid-copy
    with pytest.raises(adapter_store.AdapterStoreError, match="a-v1 in the adapter store .* is not readable"):
        adapter_store.read_published(fleet_settings, "a-v1")
    with pytest.raises(adapter_store.AdapterStoreError, match="not in the adapter store"):
        adapter_store.read_published(fleet_settings, "b-v1")


def test_fleet_admin_load_only_checks_the_store(fleet_settings, tmp_path):
    from serving.adapters import AdapterError

    path = _registered(fleet_settings, "a-v1", tmp_path)
    admin = fleet.FleetAdmin(fleet_settings)
    with pytest.raises(AdapterError, match="tuneloop replicas publish a-v1"):
        admin.load("a-v1", str(path))
    adapter_store.publish(fleet_settings, "a-v1", path)
    admin.load("a-v1", str(path))  # published: the replicas load it themselves


# --- replicas: settings, command, health, failover ---

def test_replica_urls_are_checked_and_the_router_takes_all_traffic(fleet_settings):
    s = fleet_settings.model_copy(update={"replica_urls": "http://a:8000/v1, http://b:8000"})
    assert fleet.replica_urls(s) == ["http://a:8000", "http://b:8000"] == fleet.upstreams(s)
    assert fleet.upstreams(s.model_copy(update={"router_url": "http://lb:9000/"})) == ["http://lb:9000"]
    with pytest.raises(ValueError, match="replica_urls: 'gpu1:8000'"):
        fleet.replica_urls(s.model_copy(update={"replica_urls": "gpu1:8000"}))
    assert not fleet.is_fleet(fleet_settings) and fleet.is_fleet(s)


def test_replica_command_is_the_stock_server_with_the_filesystem_resolver(fleet_settings):
    cmd = fleet.replica_command(fleet_settings, port=8001, host="10.0.0.5")
    assert cmd.argv[cmd.argv.index("--host") + 1] == "10.0.0.5" and "--port" in cmd.argv and "--enable-lora" in cmd.argv
    assert cmd.env["VLLM_PLUGINS"] == "lora_filesystem_resolver"
    assert cmd.env["VLLM_LORA_RESOLVER_CACHE_DIR"] == fleet_settings.adapter_store
    assert cmd.env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"  # vLLM resolves adapters only with it


def test_vllm_metrics_give_running_and_waiting_requests():
    assert fleet.parse_vllm_metrics(METRICS) == (5, 1)
    assert fleet.parse_vllm_metrics("") == (None, None)


def test_failover_order_is_round_robin_with_replicas_seen_down_last():
    urls = ["a", "b", "c"]
    assert fleet.failover_order(urls, start=1, down_until={}, now=0) == ["b", "c", "a"]
    assert fleet.failover_order(urls, start=0, down_until={"a": 10.0}, now=5) == ["b", "c", "a"]
    assert fleet.failover_order(urls, start=0, down_until={"a": 10.0}, now=11) == ["a", "b", "c"]
    clock = [0.0]
    rotation = fleet.Rotation(urls, clock=lambda: clock[0])
    assert [rotation.order()[0] for _ in range(4)] == ["a", "b", "c", "a"]
    rotation.down("b")
    assert rotation.order() == ["c", "a", "b"]


def test_a_replica_url_that_does_not_answer_is_down_in_the_health_view(fleet_settings):
    dead = f"http://127.0.0.1:{free_port()}"

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "tinybase"}, {"id": "a-v1"}]})
        if request.url.path == "/metrics":
            return httpx.Response(200, text=METRICS)
        return httpx.Response(200)

    up = fleet.probe_replica("http://up:8000", transport=httpx.MockTransport(handler))
    assert up.up and up.models == ["tinybase", "a-v1"] and (up.running, up.waiting) == (5, 1)
    down = fleet.probe_replica(dead, timeout=1)
    assert not down.up and "does not answer" in down.error
    assert fleet.health_line(down).endswith("DOWN, does not answer (ConnectError)")
    assert "2 models loaded" in fleet.health_line(up) and "5 running, 1 waiting" in fleet.health_line(up)
    models = fleet.fleet_models([up, down], {"b-v1"}, "tinybase")
    assert [m["id"] for m in models] == ["a-v1", "b-v1", "tinybase"]
    assert fleet.fleet_models([down], {"b-v1"}, "tinybase") == []


def test_v1_tries_the_next_replica_for_a_request_the_first_did_not_start(fleet_settings):
    from serving.api import create_api

    s = fleet_settings.model_copy(update={"api_key": "k"})
    dead = f"http://127.0.0.1:{free_port()}"
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host != "127.0.0.1":
            seen.append(str(request.url))
            return httpx.Response(200, json={"choices": [{"message": {"content": "hi"}}]})
        raise httpx.ConnectError("refused", request=request)

    app = create_api(s, upstream_urls=[dead, "http://alive:8000"], transport=httpx.MockTransport(handler))

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return [await c.post("/v1/chat/completions", headers={"Authorization": "Bearer k"},
                                 json={"model": s.served_base_name, "messages": []}) for _ in range(3)]

    assert [r.status_code for r in asyncio.run(go())] == [200, 200, 200]
    assert len(seen) == 3


def test_v1_answers_503_when_no_replica_answers(fleet_settings):
    from serving.api import create_api

    s = fleet_settings.model_copy(update={"api_key": "k"})
    app = create_api(s, upstream_urls=[f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"])

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.post("/v1/chat/completions", headers={"Authorization": "Bearer k"},
                                json={"model": s.served_base_name, "messages": []})

    r = asyncio.run(go())
    assert r.status_code == 503 and "not available" in r.json()["error"]["message"]


def test_an_adapter_a_replica_cannot_load_from_the_store_is_named_with_what_to_check(fleet_settings, tmp_path):
    from serving.api import create_api

    s = fleet_settings.model_copy(update={"api_key": "k"})
    _registered(s, "support-v3", tmp_path)
    asked = []

    def handler(request: httpx.Request) -> httpx.Response:  # what vLLM answers for a name its resolver cannot find
        asked.append(json.loads(request.content)["model"])
        return httpx.Response(404, json={"error": {"message": "The model `support-v3` does not exist.", "code": 404}})

    app = create_api(s, upstream_urls=["http://replica:8000"], transport=httpx.MockTransport(handler))

    async def go(model):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.post("/v1/chat/completions", headers={"Authorization": "Bearer k"},
                                json={"model": model, "messages": [{"role": "user", "content": "hi"}]})

    r = asyncio.run(go("support-v3"))
    assert r.status_code == 404 and asked == ["support-v3"]
    error = r.json()["error"]
    assert error["type"] == "adapter_not_loadable" and s.adapter_store in error["message"]
    assert "every replica must read the adapter store" in error["message"]
    # The base model's own 404 is vLLM's, passed on as it is.
    assert "does not exist" in asyncio.run(go(s.served_base_name)).json()["error"]["message"]


# --- the CLI ---

def test_cli_replicas_shows_each_replica_and_publishes_again(fleet_settings, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from ui.cli import app

    runner = CliRunner()
    assert "no replicas configured" in runner.invoke(app, ["replicas"]).output
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("TUNELOOP_REPLICA_URLS", dead)
    result = runner.invoke(app, ["replicas", "--json"])
    assert result.exit_code == 1 and json.loads(result.output)[0]["up"] is False

    for key, value in (("BASE_MODEL", fleet_settings.base_model), ("BASE_MODEL_NAME", "base"),
                       ("ADAPTER_STORE", fleet_settings.adapter_store)):
        monkeypatch.setenv(f"TUNELOOP_{key}", value)
    _registered(fleet_settings, "a-v1", tmp_path)
    result = runner.invoke(app, ["replicas", "publish", "a-v1"])
    assert result.exit_code == 0, result.output
    assert (Path(fleet_settings.adapter_store) / "a-v1" / "adapter_config.json").is_file()
    assert "already published" in runner.invoke(app, ["replicas", "publish", "a-v1"]).output
    command = runner.invoke(app, ["replicas", "command", "--port", "8001"]).output
    assert "VLLM_PLUGINS=lora_filesystem_resolver" in command and "--port 8001" in command


def test_the_adapters_tab_replicas_panel_names_a_dead_replica(fleet_settings):
    from ui.web.tabs.adapters import replicas_markdown

    dead = f"http://127.0.0.1:{free_port()}"
    text = replicas_markdown(fleet_settings.model_copy(update={"replica_urls": dead}))
    assert f"| replica {dead} | **down**: does not answer (ConnectError) | – | – | – |" in text
    assert "not an http(s) URL" in replicas_markdown(fleet_settings.model_copy(update={"replica_urls": "gpu:1"}))


def test_cli_chat_and_adapter_statuses_go_to_the_fleet_not_a_local_server(fleet_settings, tmp_path, monkeypatch):
    """With replicas configured, `tuneloop chat` asks the first replica that answers and `tuneloop adapters` reads
    the replicas and the store; neither looks for a local vLLM (which a fleet box does not run)."""
    from typer.testing import CliRunner

    from fake_vllm import FakeVllm
    from ui.cli import app

    _registered(fleet_settings, "a-v1", tmp_path)
    adapter_store.publish(fleet_settings, "a-v1", tmp_path / "adapters" / "a-v1")
    dead = f"http://127.0.0.1:{free_port()}"
    with FakeVllm(free_port(), served_name="base") as replica:
        alive = f"http://127.0.0.1:{replica.server_port}"
        for key, value in (("BASE_MODEL", fleet_settings.base_model), ("BASE_MODEL_NAME", "base"),
                           ("ADAPTER_STORE", fleet_settings.adapter_store), ("REPLICA_URLS", f"{dead},{alive}"),
                           ("VLLM_PORT", str(free_port()))):
            monkeypatch.setenv(f"TUNELOOP_{key}", value)
        assert fleet.model_server_url(fleet_settings.model_copy(update={"replica_urls": f"{dead},{alive}"}),
                                      first_up=True) == alive
        runner = CliRunner()
        chat = runner.invoke(app, ["chat", "--model", "base", "--temperature", "0", "where is my parcel"])
        assert chat.exit_code == 0 and "base: where is my parcel" in chat.output, chat.output
        listed = runner.invoke(app, ["adapters", "--json"])
        assert listed.exit_code == 0, listed.output
        report = json.loads(listed.output)
        assert report["server_up"] and report["server"] == f"{dead}, {alive}"
        assert {m["name"]: m["status"] for m in report["models"]}["a-v1"] == "loaded"


def test_an_app_whose_first_replica_is_down_starts_and_evaluates_on_the_live_one(fleet_settings, tmp_path):
    """Tried as a user: with the first replica of TUNELOOP_REPLICA_URLS down, the app waited on that one alone
    (never "ready", so end-of-run evaluations never ran) and the evaluation queue asked it, not the live one."""
    from fake_vllm import FakeVllm
    from serving.service import Serving
    from store import evaluations as ev

    _registered(fleet_settings, "a-v1", tmp_path)
    adapter_store.publish(fleet_settings, "a-v1", tmp_path / "adapters" / "a-v1")
    with connect(fleet_settings.db_path) as db:
        ref = ev.create_eval_set_version(db, "orders", [ev.NewEvalItem([{"role": "user", "content": "Where?"}],
                                                                       "Here.")], source_kind="manual")
        run_id = ev.create_eval_run(db, candidate="a-v1", baseline="base", set_version_id=ref.id, trigger="auto")
    dead = f"http://127.0.0.1:{free_port()}"
    with FakeVllm(free_port(), served_name="base") as replica:
        replica.adapters["a-v1"] = str(tmp_path / "adapters" / "a-v1")
        settings = fleet_settings.model_copy(update={"replica_urls": f"{dead},{replica.url}",
                                                     "base_model_name": "base"})
        serving = Serving(settings, poll_s=60, ready_timeout=20)
        serving.start(wait=True)  # used to wait on the dead replica until ready_timeout, then "failed"
        try:
            assert serving.state == "ready" and serving.server_urls == [dead, replica.url]
            assert serving.evaluator.run_once() == run_id
        finally:
            serving.stop()
        with connect(settings.db_path) as db:
            run = ev.get_eval_run(db, run_id)
        assert run["status"] == "done", run["error"]
        assert {r[2]["model"] for r in replica.requests if r[1] == "/v1/chat/completions"} == {"a-v1", "base"}


def test_an_automatic_evaluation_that_breaks_before_it_starts_is_failed_not_retried_for_ever(fleet_settings,
                                                                                              monkeypatch):
    from serving.evaluation.auto import AutoEvaluator
    from store import evaluations as ev

    with connect(fleet_settings.db_path) as db:
        ref = ev.create_eval_set_version(db, "orders", [ev.NewEvalItem([{"role": "user", "content": "Where?"}],
                                                                       "Here.")], source_kind="manual")
        run_id = ev.create_eval_run(db, candidate="a-v1", baseline="base", set_version_id=ref.id, trigger="auto")
    evaluator = AutoEvaluator(fleet_settings, loaded=lambda: {"a-v1", "base"})

    def broken():
        raise ImportError("cannot import name 'AutoModel' from 'transformers'")

    monkeypatch.setattr(evaluator, "embedder", broken)
    with pytest.raises(ImportError):
        evaluator.run_once()  # the queue's loop logs it
    with connect(fleet_settings.db_path) as db:
        run = ev.get_eval_run(db, run_id)
    assert run["status"] == "failed" and "ImportError" in run["error"]
    assert evaluator.run_once() is None  # not picked up again
