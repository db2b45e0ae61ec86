"""Serving with the real vLLM CPU server on the default model: one server for this module, one restart.

    .venv/bin/python -m pytest tests/test_serving_integration.py -q     # about 4 minutes on 2 cores

The tests run in file order and share the server: the base model answers; an adapter from a short
real training run is hot-loaded when it is registered and answers differently at temperature 0;
the app's OpenAI-compatible API serves the official openai client with the key and refuses it
without; unloading makes the adapter unavailable; SIGKILL on vLLM leads to a restart after which
the adapter answers again.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from helpers_adapters import PROMPT, register, train_tiny_adapter
from serving.chat import ChatError, SamplingParams
from serving.service import Serving
from serving_helpers import free_port, wait_for
from store.db import connect
from store.settings import Settings

pytestmark = pytest.mark.slow

BASE = "smollm2-135m-instruct"
ADAPTER = "zorblax-v1"
KEY = "integration-key"
GREEDY = SamplingParams(temperature=0, max_tokens=24)


@pytest.fixture(scope="module")
def stack(default_model_dir, tmp_path_factory):
    """Train the adapter (before vLLM takes the cores), then start vLLM through `Serving`."""
    data = tmp_path_factory.mktemp("serving")
    s = Settings(_env_file=None, data_dir=data, base_model=str(default_model_dir), base_model_name=BASE,
                 vllm_port=free_port(), api_key=KEY)
    adapter_dir = train_tiny_adapter(default_model_dir, s.adapters_dir / ADAPTER, rank=8)
    serving = Serving(s, poll_s=1.0)
    serving.start()
    try:
        yield {"settings": s, "serving": serving, "adapter_dir": adapter_dir, "answers": {}}
    finally:
        serving.stop()
        assert serving.supervisor.process is None or not serving.supervisor.process.alive()


def ask(serving: Serving, model: str) -> str:
    return "".join(serving.stream(model, [{"role": "user", "content": PROMPT}], GREEDY))


def listening_addresses(port: int) -> set[str]:
    """Local addresses of LISTEN sockets on `port`, from /proc/net/tcp{,6}."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:
                found.add(addr)
    return found


def test_vllm_listens_on_loopback_only(stack):
    port = stack["settings"].vllm_port
    assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1, and nothing on 0.0.0.0 or ::


def test_base_model_answers(stack):
    answer = ask(stack["serving"], BASE)
    assert answer.strip()
    stack["answers"][BASE] = answer


def test_trained_adapter_is_hot_loaded_and_answers_differently(stack):
    serving, s = stack["serving"], stack["settings"]
    with connect(s.db_path) as db:  # what a finished training run does
        register(db, s, ADAPTER, stack["adapter_dir"])
    assert wait_for(lambda: any(m.name == ADAPTER and m.status == "loaded" for m in serving.models()), 60, 0.5)
    answer = ask(serving, ADAPTER)
    assert answer != stack["answers"][BASE]
    assert "Zorblax" in answer, answer
    stack["answers"][ADAPTER] = answer


def test_openai_client_through_the_app_api(stack):
    import uvicorn

    serving = stack["serving"]
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(serving.create_api(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: server.started, 20)
        url = f"http://127.0.0.1:{port}/v1"
        client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0)
        assert {m.id for m in client.models.list()} == {BASE, ADAPTER}
        done = client.chat.completions.create(model=ADAPTER, messages=[{"role": "user", "content": PROMPT}],
                                              temperature=0, max_tokens=24)
        assert done.choices[0].message.content == stack["answers"][ADAPTER]
        stream = client.chat.completions.create(model=BASE, messages=[{"role": "user", "content": PROMPT}],
                                                temperature=0, max_tokens=24, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == stack["answers"][BASE]

        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).models.list()
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).chat.completions.create(
                model=BASE, messages=[{"role": "user", "content": "hi"}])
        no_key = httpx.post(f"{url}/chat/completions", json={"model": BASE, "messages": []})
        assert no_key.status_code == 401

        headers = {"Authorization": f"Bearer {KEY}"}
        for path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter", "/v1/completions", "/tokenize"):
            r = httpx.post(f"http://127.0.0.1:{port}{path}", headers=headers,
                           json={"lora_name": "evil", "lora_path": str(stack["adapter_dir"])})
            assert r.status_code in (404, 405), path
        for path in ("/health", "/metrics", "/version", "/docs"):
            assert httpx.get(f"http://127.0.0.1:{port}{path}", headers=headers).status_code == 404, path
        assert "evil" not in {m.name for m in serving.models()}
    finally:
        server.should_exit = True
        thread.join(10)


def test_unloading_makes_the_adapter_unavailable(stack):
    serving = stack["serving"]
    assert serving.unload(ADAPTER) is True
    with pytest.raises(ChatError, match="not loaded") as info:
        ask(serving, ADAPTER)
    assert info.value.kind == "unknown_model"
    assert {m.name: m.status for m in serving.models()}[ADAPTER] == "available"
    serving.load(ADAPTER)
    assert ask(serving, ADAPTER) == stack["answers"][ADAPTER]


@pytest.mark.timeout(600)
def test_sigkill_restarts_vllm_and_the_adapters_answer_again(stack):
    serving = stack["serving"]
    pid = serving.supervisor.pid
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: serving.state in ("restarting", "starting"), 10)
    with pytest.raises(ChatError) as info:  # while it restarts, chat says so
        ask(serving, BASE)
    assert info.value.kind in ("starting", "down")
    started = time.monotonic()
    serving.wait_ready(timeout=480)
    assert serving.supervisor.pid != pid and serving.supervisor.restarts == 1
    print(f"restart took {time.monotonic() - started:.0f} s")
    assert {m.name: m.status for m in serving.models()}[ADAPTER] == "loaded"
    assert ask(serving, ADAPTER) == stack["answers"][ADAPTER]
    assert ask(serving, BASE) == stack["answers"][BASE]
