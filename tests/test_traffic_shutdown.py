"""A stopped API process stores every answer it captured first: SIGTERM (and Ctrl-C, the same uvicorn shutdown)
flushes the capture queue before the process ends (serving/api.py's lifespan, serving.capture.CaptureWriter.close).

The API runs in its own process under uvicorn, as `tuneloop serve` runs it, with a writer that would hold rows in
memory for an hour, so only the shutdown can have stored them.

    .venv/bin/python -m pytest tests/test_traffic_shutdown.py -q
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from fake_vllm import FakeVllm
from serving_helpers import fake_base_model, free_port
from store.db import connect
from store.traffic import get_capture

ROOT = Path(__file__).resolve().parent.parent
KEY = "k"
SERVER = """
import sys, uvicorn
from serving.api import create_api
from serving.capture import CaptureWriter
from serving.traffic_api import Traffic
from store.settings import Settings
s = Settings(_env_file=None)
traffic = Traffic(s, writer=CaptureWriter(s.db_path, idle_wait_s=3600, batch=1_000_000))
uvicorn.run(create_api(s, upstream_url=sys.argv[1], traffic=traffic), host="127.0.0.1", port=int(sys.argv[2]),
            log_level="warning")
"""


def _stored(db_path) -> int:
    with connect(db_path) as db:
        return db.execute("select count(*) from traffic").fetchone()[0]


def test_sigterm_stores_every_captured_answer_before_the_process_ends(tmp_path):
    data = tmp_path / "data"
    env = {**os.environ, "TUNELOOP_DATA_DIR": str(data), "TUNELOOP_API_KEY": KEY, "TUNELOOP_CAPTURE_REDACT": "false",
           "TUNELOOP_BASE_MODEL": str(fake_base_model(tmp_path / "models")), "TUNELOOP_BASE_MODEL_NAME": "base",
           "PYTHONPATH": str(ROOT)}
    port = free_port()
    with FakeVllm(free_port()) as upstream:
        proc = subprocess.Popen([sys.executable, "-c", SERVER, upstream.url, str(port)], env=env, cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
                    break
                except httpx.HTTPError:
                    assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()[-2000:]
                    time.sleep(0.2)
            got = {}
            with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as client:
                for i in range(12):
                    body = {"model": "base", "messages": [{"role": "user", "content": f"question {i}"}],
                            "stream": i % 2 == 1}
                    if body["stream"]:
                        with client.stream("POST", url, json=body) as r:
                            assert r.status_code == 200
                            cid = r.headers["X-Tuneloop-Completion-Id"]
                            text = "".join(json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                                           for line in r.iter_lines()
                                           if line.startswith("data: {") and json.loads(line[6:])["choices"])
                    else:
                        r = client.post(url, json=body)
                        assert r.status_code == 200
                        cid, text = r.json()["id"], r.json()["choices"][0]["message"]["content"]
                    got[cid] = text
            assert _stored(data / "tuneloop.db") == 0  # all of them still in the writer's memory
            proc.send_signal(signal.SIGTERM)
            # uvicorn shuts down (lifespan: the queue is flushed), then ends by the signal it caught.
            assert proc.wait(timeout=60) in (0, -signal.SIGTERM), proc.stdout.read().decode()[-2000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    with connect(data / "tuneloop.db") as db:
        rows = {cid: get_capture(db, cid) for cid in got}
    assert {cid: r["answer"] for cid, r in rows.items()} == got
    assert all(r["status"] == "complete" for r in rows.values())
