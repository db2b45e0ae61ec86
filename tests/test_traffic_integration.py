"""Production traffic on the real stack: the `openai` client calls a deployment on the session's vLLM (streamed
and not), the completions appear in the review queue, /v1/feedback corrects them, and `feedback build` turns the
corrections into supervised examples whose lineage names the captured completions; a judge scores the unrated
answers over the real OpenAI protocol (`tuneloop traffic judge`).

    flock /tmp/tuneloop-heavy.lock .venv/bin/python -m pytest tests/test_traffic_integration.py -q

(The canary's split at its configured share is checked on 300 requests to the scripted server in
tests/test_traffic_api.py: the real model adds time, not information, to that count.)
"""

from __future__ import annotations

import httpx
import pytest

from browser_support import serve
from serving_helpers import free_port
from store.datasets import iter_version_conversations
from store.db import connect
from store.deployments import change_target
from serving.evaluation.judge import JudgeClient, JudgeConfig
from serving.traffic_judge import judge_captures
from store.traffic import CaptureFilter, find_captures, get_capture
from vllm_session import SESSION_KEY  # the fixture vllm_stack (the session's vLLM) is conftest.py's

pytestmark = pytest.mark.slow
DEPLOYMENT = "bot-traffic"


def test_openai_client_traffic_is_captured_corrected_and_built_into_the_next_round(vllm_stack):
    from openai import OpenAI

    from training.feedback_round import build_round

    s, serving, adapter = vllm_stack["settings"], vllm_stack["serving"], vllm_stack["adapter"]
    with connect(s.db_path) as db:
        change_target(db, DEPLOYMENT, adapter, action="promote", by="test")
    app = serving.create_api()
    with serve(app, free_port()) as url:
        client = OpenAI(base_url=url + "v1", api_key=SESSION_KEY)
        messages = [{"role": "user", "content": "Hello, where is my order?"}]
        done = client.chat.completions.create(model=DEPLOYMENT, messages=messages, max_tokens=12, temperature=0,
                                              user="customer-1", metadata={"ticket": "T-100"})
        assert done.id.startswith("chatcmpl-tl") and done.choices[0].message.content
        streamed, sid = [], None
        asked = [{"role": "user", "content": "Hello, when does my parcel arrive?"}]  # its own question: not a duplicate
        for chunk in client.chat.completions.create(model=DEPLOYMENT, messages=asked, max_tokens=12,
                                                    temperature=0, stream=True):
            sid = chunk.id
            if chunk.choices and chunk.choices[0].delta.content:
                streamed.append(chunk.choices[0].delta.content)
        ids = [done.id, sid]
        for i in range(2):  # four answers in all: the smallest SFT build
            ids.append(client.chat.completions.create(model=DEPLOYMENT, max_tokens=8, temperature=0, messages=[
                {"role": "user", "content": f"Can I return item number {i}?"}]).id)
        app.state.traffic.writer.flush()
        with connect(s.db_path) as db:
            queue = {r["id"]: r for r in find_captures(db, CaptureFilter(deployment=DEPLOYMENT, rated=False))}
        assert set(ids) <= set(queue)
        assert queue[done.id]["answer"] == done.choices[0].message.content
        assert queue[sid]["answer"] == "".join(streamed) and queue[sid]["adapter"] == adapter
        # A judge scores the unrated answers for the review queue (`tuneloop traffic judge`): here the session's
        # own model through this API, a weak judge whose unreadable replies are counted, never guessed.
        judge = JudgeClient(JudgeConfig(base_url=url + "v1", model=vllm_stack["base"], api_key=SESSION_KEY,
                                        max_tokens=24))
        try:
            report = judge_captures(s.db_path, judge.ask, deployment=DEPLOYMENT, limit=len(ids))
        finally:
            judge.close()
        assert report.stopped is None and report.scored + report.unparsable == len(ids)
        with connect(s.db_path) as db:
            scores = [get_capture(db, cid)["judge_score"] for cid in ids]
        assert sum(x is not None for x in scores) == report.scored
        assert all(0 <= x <= 1 for x in scores if x is not None)
        with httpx.Client(base_url=url + "v1", headers={"Authorization": f"Bearer {SESSION_KEY}"}) as c:
            for i, cid in enumerate(ids):
                r = c.post("/feedback", json={"completion_id": cid, "thumb": "down", "rater": "lead",
                                              "correction": f"Your order {i} ships within 2 days; tracking by e-mail."})
                assert r.status_code == 200, r.text
            r = c.post("/feedback", json={"completion_id": "chatcmpl-tl000000000000nope", "thumb": "up"})
            assert r.status_code == 404
    rb = build_round(s, dataset="traffic-feedback", method="sft", since="all")
    with connect(s.db_path) as db:
        lineage = {cid for conv in iter_version_conversations(db, rb.version.id)
                   for cid in conv["meta"].get("completion_ids", [])}
    assert set(ids) <= lineage
