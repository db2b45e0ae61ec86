"""What traffic capture costs the /v1 API: latency (p50, p95) and throughput with capture on vs off, in one run.

    .venv/bin/python bench/api_capture.py                       # about 2 minutes on 2 CPU cores
    .venv/bin/python bench/api_capture.py --requests 600 --concurrency 16 --rounds 3

The API runs in this process (uvicorn on loopback, as `tuneloop serve` runs it) in front of the
scripted model server of the tests (tests/fake_vllm.py, on loopback too), which answers at once: the
model's own time is left out on purpose, so what is measured is the API's overhead, where
capture's cost shows most. Three setups, each its own app and database: capture off; capture on
without redaction; capture on with redaction (the default: the redaction engine runs in the writer
thread). Requests (half streamed, half not) are sent by an httpx client at a fixed concurrency;
the setups take turns round by round so a busy moment of the machine hits all of them.
Latency is from sending the request to the last byte; for streams, the client reads every chunk.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fake_vllm import FakeVllm  # noqa: E402
from serving.api import create_api  # noqa: E402
from serving_helpers import fake_base_model, free_port, make_settings  # noqa: E402

KEY = "bench-key"


def serve(app, port: int):
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread


async def load(url: str, n: int, concurrency: int, offset: int) -> tuple[list[float], float]:
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits,
                                 headers={"Authorization": f"Bearer {KEY}"}) as client:
        async def one(i: int) -> None:
            body = {"model": "base", "stream": i % 2 == 0, "user": f"u{i % 40}",
                    "messages": [{"role": "user", "content": f"where is parcel {offset + i}? it was due monday"}]}
            async with gate:
                t = time.perf_counter()
                async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                    async for _ in r.aiter_bytes():
                        pass
                    r.raise_for_status()
                latencies.append(time.perf_counter() - t)

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return latencies, time.perf_counter() - start


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=400, help="per setup per round")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-capture-"))
    base = fake_base_model(tmp / "models")
    setups = {"capture off": dict(capture=False), "capture on, no redaction": dict(capture_redact=False),
              "capture on + redaction (default)": dict()}
    with FakeVllm(free_port()) as upstream:
        servers = {}
        for i, (name, extra) in enumerate(setups.items()):
            s = make_settings(tmp / f"data{i}", base, api_key=KEY, **extra)
            app = create_api(s, upstream_url=upstream.url)
            port = free_port()
            servers[name] = (f"http://127.0.0.1:{port}", app, *serve(app, port))
        for url, *_ in servers.values():  # warm up: connections, the redaction engine's first load
            asyncio.run(load(url, 40, args.concurrency, 10_000))
        for url, app, *_ in servers.values():
            app.state.traffic.writer.flush(timeout=120)
        results = {name: ([], 0.0, 0) for name in setups}
        for r in range(args.rounds):
            for name, (url, *_rest) in servers.items():
                lat, wall = asyncio.run(load(url, args.requests, args.concurrency, r * args.requests))
                old = results[name]
                results[name] = (old[0] + lat, old[1] + wall, old[2] + len(lat))
        backlog = {name: app.state.traffic.writer.pending for name, (url, app, *_r) in servers.items()}
        for name, (url, app, server, thread) in servers.items():
            t = time.perf_counter()
            app.state.traffic.close()
            backlog[name] = (backlog[name], time.perf_counter() - t)
            server.should_exit = True
            thread.join(10)
    off_lat, off_wall, off_n = results["capture off"]
    off_p50, off_p95, off_rps = pct(off_lat, 50), pct(off_lat, 95), off_n / off_wall
    print(f"{args.rounds} rounds x {args.requests} requests per setup, {args.concurrency} concurrent, half streamed")
    print(f"{'setup':<34} {'p50 ms':>8} {'p95 ms':>8} {'req/s':>8}  {'p50 ratio':>9} {'p95 ratio':>9} "
          f"{'req/s ratio':>11}  queue at end, flush s")
    for name, (lat, wall, n) in results.items():
        p50, p95, rps = pct(lat, 50), pct(lat, 95), n / wall
        print(f"{name:<34} {p50 * 1000:8.2f} {p95 * 1000:8.2f} {rps:8.1f}  {p50 / off_p50:9.3f} {p95 / off_p95:9.3f} "
              f"{rps / off_rps:11.3f}  {backlog[name][0]}, {backlog[name][1]:.2f}")


if __name__ == "__main__":
    main()
