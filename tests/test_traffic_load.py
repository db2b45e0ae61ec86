"""Capture under load: 2,000 requests at 32 concurrent, streamed and not, through the app's API in-process
against a scripted model server on loopback; then 2,000 captured rows, each answer exactly what the client got.

Not a timing test: bench/api_capture.py measures the cost. Slow: 1 to 5 minutes on 2 busy cores.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from fake_vllm import FakeVllm
from serving.api import create_api
from serving_helpers import fake_base_model, free_port, make_settings
from store.db import connect

pytestmark = pytest.mark.slow
KEY = "load-key"
N, CONCURRENCY = 2000, 32


async def one(client: httpx.AsyncClient, i: int) -> tuple[str, str, bool]:
    stream = i % 2 == 0
    body = {"model": "base", "stream": stream, "user": f"u{i % 50}",
            "messages": [{"role": "user", "content": f"question number {i} about parcel {i * 7}"}]}
    if not stream:
        r = await client.post("/v1/chat/completions", json=body)
        r.raise_for_status()
        data = r.json()
        return data["id"], data["choices"][0]["message"]["content"], stream
    text, cid = [], None
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                cid = chunk["id"]
                if chunk["choices"]:
                    text.append(chunk["choices"][0]["delta"].get("content") or "")
    assert cid == r.headers["x-tuneloop-completion-id"]
    return cid, "".join(text), stream


async def run_all(app) -> list[tuple[str, str, bool]]:
    gate = asyncio.Semaphore(CONCURRENCY)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app", timeout=120,
                                 headers={"Authorization": f"Bearer {KEY}"}) as client:
        async def guarded(i):
            async with gate:
                return await one(client, i)
        return await asyncio.gather(*(guarded(i) for i in range(N)))


def test_two_thousand_requests_are_all_captured_exactly(tmp_path):
    s = make_settings(tmp_path / "data", fake_base_model(tmp_path / "m"), api_key=KEY, capture_redact=False)
    with FakeVllm(free_port()) as upstream:
        app = create_api(s, upstream_url=upstream.url)
        results = asyncio.run(run_all(app))
        app.state.traffic.close()  # what shutdown does: flush the queue
    assert len({cid for cid, _, _ in results}) == N
    with connect(s.db_path) as db:
        rows = {r["id"]: r for r in db.query("select id, answer, status, stream, completion_tokens from traffic")}
        uses = db.execute("select use_count from api_keys where name = 'default'").fetchone()[0]
    assert len(rows) == N and uses == N
    for i, (cid, text, stream) in enumerate(results):
        row = rows[cid]
        assert row["answer"] == text and text.endswith(f"question number {i} about parcel {i * 7}")
        assert row["status"] == "complete" and row["stream"] == int(stream) and row["completion_tokens"]
