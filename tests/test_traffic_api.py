"""Capture, API keys, canary and POST /v1/feedback through the app's API, in-process, against a scripted upstream."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import httpx
import pytest
from fastapi.testclient import TestClient

from fake_vllm import FakeVllm
from serving.api import create_api
from serving.canary import choose_arm
from serving.completion_stream import new_completion_id
from serving_helpers import fake_adapter, fake_base_model, free_port, make_settings, wait_for
from store import canaries
from store.adapters import register_adapter
from store.api_keys import create_key, list_keys, revoke_key
from store.db import connect
from store.deployments import change_target
from store.feedback import rating_rows
from store.traffic import feedback_for, get_capture

KEY = "s3cret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def upstream():
    with FakeVllm(free_port()) as srv:
        yield srv


@pytest.fixture
def s(tmp_path):
    return make_settings(tmp_path / "data", fake_base_model(tmp_path / "models"), api_key=KEY, capture_redact=False)


@pytest.fixture
def app(s, upstream):
    return create_api(s, upstream_url=upstream.url)


@pytest.fixture
def client(app):
    with TestClient(app) as c:
        yield c


def deploy(s, upstream, tmp_path, name="support", adapters=("support-v1",)):
    with connect(s.db_path) as db:
        for a in adapters:
            path = fake_adapter(tmp_path / a, s.base_model_path)
            register_adapter(db, name=a, family="support", version=1, base_model=s.base_model_path, path=str(path),
                             rank=8, run_id=None, dataset_version_id=None, parent_id=None)
            upstream.adapters[a] = str(path)
        change_target(db, name, adapters[0], action="promote", by="t")


def captured(app, s, cid):
    app.state.traffic.writer.flush()
    with connect(s.db_path) as db:
        return get_capture(db, cid)


def ask(client, model="support", question="where is my parcel?", headers=AUTH, **extra):
    return client.post("/v1/chat/completions", headers=headers,
                       json={"model": model, "messages": [{"role": "user", "content": question}], **extra})


def test_a_completion_is_captured_with_our_id_and_everything_asked(s, app, client, upstream, tmp_path):
    deploy(s, upstream, tmp_path)
    r = ask(client, user="customer-7", metadata={"ticket": "T-1"}, temperature=0.2)
    assert r.status_code == 200
    body = r.json()
    cid = body["id"]
    assert cid.startswith("chatcmpl-tl") and r.headers["x-tuneloop-completion-id"] == cid
    row = captured(app, s, cid)
    assert row["answer"] == body["choices"][0]["message"]["content"] == "support-v1: where is my parcel?"
    assert (row["model"], row["deployment"], row["adapter"], row["arm"]) == ("support", "support", "support-v1", "main")
    assert row["user"] == "customer-7" and row["metadata"] == {"ticket": "T-1"} and row["api_key"] == "default"
    assert row["params"]["temperature"] == 0.2 and row["status"] == "complete" and row["stream"] == 0
    assert row["completion_tokens"] == 5 and row["latency_ms"] >= row["ttft_ms"] > 0
    assert "metadata" not in upstream.requests[-1][2]  # ours to keep, not the model server's


def test_a_stream_is_captured_as_the_client_read_it(s, app, client, upstream, tmp_path):
    deploy(s, upstream, tmp_path)
    with client.stream("POST", "/v1/chat/completions", headers=AUTH,
                       json={"model": "support", "stream": True,
                             "messages": [{"role": "user", "content": "a b c d e"}]}) as r:
        cid = r.headers["x-tuneloop-completion-id"]
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert lines[-1] == "data: [DONE]" and {c["id"] for c in chunks} == {cid}
    assert all(c["choices"] for c in chunks)  # the usage chunk the API asked for stays hidden
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    row = captured(app, s, cid)
    assert row["answer"] == text == "support-v1: a b c d e" and row["status"] == "complete" and row["stream"] == 1
    assert row["completion_tokens"] == 6 and row["finish_reason"] == "stop"
    assert upstream.requests[-1][2]["stream_options"] == {"include_usage": True}
    assert "stream_options" not in row["params"]


def test_a_client_asking_for_usage_gets_it(s, client, upstream):
    with client.stream("POST", "/v1/chat/completions", headers=AUTH,
                       json={"model": "base", "stream": True, "stream_options": {"include_usage": True},
                             "messages": [{"role": "user", "content": "x"}]}) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: {")]
    assert json.loads(lines[-1][6:])["usage"]["completion_tokens"] == 2


def test_capture_can_be_turned_off_per_deployment(s, app, client, upstream, tmp_path):
    deploy(s, upstream, tmp_path)
    with connect(s.db_path) as db:
        canaries.set_capture(db, "support", False)
    cid = ask(client).json()["id"]
    app.state.traffic.writer.flush()
    r = client.post("/v1/feedback", headers=AUTH, json={"completion_id": cid, "thumb": "up"})
    assert r.status_code == 404 and "capture may be off" in r.json()["error"]["message"]


def test_upstream_errors_are_captured_as_errors(s, app, client, upstream, tmp_path):
    deploy(s, upstream, tmp_path)
    upstream.adapters.pop("support-v1")  # registered, but the model server lost it
    r = ask(client)
    assert r.status_code == 404
    row = captured(app, s, r.headers["x-tuneloop-completion-id"])
    assert row["status"] == "error" and row["http_status"] == 404 and "does not exist" in row["error"]


# ---------------------------------------------------------------- keys

def test_named_keys_work_are_counted_and_a_revoked_one_is_refused_at_once(s, app, client):
    with connect(s.db_path) as db:
        key = create_key(db, "widget")
    headers = {"Authorization": f"Bearer {key}"}
    cid = ask(client, model="base", headers=headers).json()["id"]
    assert captured(app, s, cid)["api_key"] == "widget"
    assert client.get("/v1/models", headers=headers).status_code == 200
    with connect(s.db_path) as db:
        revoke_key(db, "widget")
    for r in (ask(client, model="base", headers=headers), client.get("/v1/models", headers=headers),
              client.post("/v1/feedback", headers=headers, json={"completion_id": cid, "thumb": "up"})):
        assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
    assert ask(client, model="base").status_code == 200  # the other keys still work
    app.state.traffic.writer.flush()
    with connect(s.db_path) as db:
        counts = {k["name"]: k["use_count"] for k in list_keys(db)}
    assert counts["widget"] == 2 and counts["default"] >= 1


def test_without_any_key_the_api_is_off(tmp_path, upstream):
    s = make_settings(tmp_path / "data", fake_base_model(tmp_path / "m"), api_key="")
    with TestClient(create_api(s, upstream_url=upstream.url)) as c:
        r = c.get("/v1/models", headers={"Authorization": "Bearer x"})
        assert r.status_code == 401 and "tuneloop keys create" in r.json()["error"]["message"]
        with connect(s.db_path) as db:
            key = create_key(db, "only")
        assert c.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200


# ---------------------------------------------------------------- feedback

def test_feedback_becomes_ratings_like_the_browsers(s, app, client, upstream, tmp_path):
    deploy(s, upstream, tmp_path)
    cid = ask(client).json()["id"]
    r = client.post("/v1/feedback", headers=AUTH, json={"completion_id": cid, "thumb": "down", "rater": "agent-5",
                                                         "correction": "It arrives Friday.", "comment": "wrong"})
    assert r.status_code == 200, r.text
    assert {x["kind"] for x in r.json()["ratings"]} == {"thumb", "correction"}
    # a score is a thumb too (0.5 and up counts as up); the same rater changes their rating
    assert client.post("/v1/feedback", headers=AUTH,
                       json={"id": cid, "score": 0.9, "rater": "agent-5"}).status_code == 200
    with connect(s.db_path) as db:
        rows = {r["kind"]: r for r in rating_rows(db)}
        assert rows["thumb"]["value"] == "up" and rows["thumb"]["user"] == "agent-5"
        assert rows["correction"]["value"] == "It arrives Friday."
        assert rows["correction"]["answer"] == "support-v1: where is my parcel?"
        assert json.loads(rows["correction"]["context"]) == [{"role": "user", "content": "where is my parcel?"}]
        assert rows["thumb"]["model"] == "support-v1"
        assert len(get_capture(db, cid)["ratings"]) == 2


@pytest.mark.parametrize("payload, status, param", [
    (b"{not json", 400, None),
    (b"[1, 2]", 400, None),
    (json.dumps({"thumb": "up"}).encode(), 400, "completion_id"),
    (json.dumps({"completion_id": "C", "thumb": "sideways"}).encode(), 400, "thumb"),
    (json.dumps({"completion_id": "C", "score": 7}).encode(), 400, "score"),
    (json.dumps({"completion_id": "C", "score": 0.1, "thumb": "up"}).encode(), 400, "score"),
    (json.dumps({"completion_id": "C", "correction": "  "}).encode(), 400, "correction"),
    (json.dumps({"completion_id": "C"}).encode(), 400, None),
    (json.dumps({"completion_id": "C", "comment": "x" * 300_000}).encode(), 413, None),
])
def test_bad_feedback_gets_an_openai_shaped_error(s, client, payload, status, param):
    cid = ask(client, model="base").json()["id"]
    r = client.post("/v1/feedback", headers={**AUTH, "Content-Type": "application/json"},
                    content=payload.replace(b'"C"', json.dumps(cid).encode()))
    assert r.status_code == status
    err = r.json()["error"]
    assert err["message"] and err["type"] and err["code"] == status
    if param:
        assert err["param"] == param


def test_an_oversized_chat_request_gets_413_before_the_upstream(s, app, client, upstream):
    from serving.traffic_api import CHAT_MAX_BYTES

    big = json.dumps({"model": "base", "messages": [{"role": "user", "content": "x" * CHAT_MAX_BYTES}]}).encode()

    def chunked():  # no Content-Length: the limit is counted as the body arrives
        for i in range(0, len(big), 65_536):
            yield big[i:i + 65_536]

    for content in (big, chunked()):
        r = client.post("/v1/chat/completions", headers={**AUTH, "Content-Type": "application/json"}, content=content)
        assert r.status_code == 413
        err = r.json()["error"]
        assert err["code"] == 413 and err["type"] == "invalid_request_error" and "larger than" in err["message"]
    assert not any(p == "/v1/chat/completions" for _, p, _ in upstream.requests)
    app.state.traffic.writer.flush()
    with connect(s.db_path) as db:
        assert db["traffic"].count == 0
    assert ask(client, model="base").status_code == 200  # a request under the limit still answers


def test_feedback_for_unknown_and_expired_completions(s, client):
    r = client.post("/v1/feedback", headers=AUTH, json={"completion_id": "chatcmpl-nope", "thumb": "up"})
    assert r.status_code == 404 and r.json()["error"]["param"] == "completion_id"
    old = new_completion_id(at=time.time() - 90 * 86400)  # made before the 30-day retention
    r = client.post("/v1/feedback", headers=AUTH, json={"completion_id": old, "thumb": "up"})
    assert r.status_code == 404 and "deleted" in r.json()["error"]["message"]
    assert client.post("/v1/feedback", json={"completion_id": old, "thumb": "up"}).status_code == 401


def test_feedback_right_after_the_answer_finds_it_still_queued(s, app, client):
    app.state.traffic.writer.idle_wait_s = 30  # the writer would wait long: feedback must flush it
    cid = ask(client, model="base").json()["id"]
    assert client.post("/v1/feedback", headers=AUTH, json={"completion_id": cid, "thumb": "up"}).status_code == 200


# ---------------------------------------------------------------- canary

def test_canary_takes_its_share_sticky_per_user(s, app, client, upstream, tmp_path):
    deploy(s, upstream, tmp_path, adapters=("support-v1", "support-v2"))
    with connect(s.db_path) as db:
        canaries.start_canary(db, "support", "support-v2", share=0.2)
    arms = Counter()
    for i in range(300):
        r = ask(client, user=f"customer-{i}")
        arms[r.headers["x-tuneloop-model"]] += 1
        assert r.json()["choices"][0]["message"]["content"].startswith(r.headers["x-tuneloop-model"])
        expected = choose_arm("support", 0.2, user=f"customer-{i}", request_id="")
        assert (r.headers["x-tuneloop-model"] == "support-v2") == (expected == "canary")
    # 300 users at 20%: a binomial's 99.9% range is about 20% +- 7.5 points
    assert 0.125 <= arms["support-v2"] / 300 <= 0.275
    same = {ask(client, user="customer-3").headers["x-tuneloop-model"] for _ in range(5)}
    assert len(same) == 1
    row = captured(app, s, ask(client, user="customer-3").json()["id"])
    assert row["arm"] == ("canary" if same == {"support-v2"} else "main")


# ---------------------------------------------------------------- a client that goes away mid-stream

def test_a_client_that_disconnects_mid_stream_leaves_a_partial_capture(s, app, upstream):
    import uvicorn

    upstream.word_delay = 0.05
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_for(lambda: server.started, 20)
    try:
        question = " ".join(f"w{i}" for i in range(200))
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            with c.stream("POST", "/v1/chat/completions", headers=AUTH,
                          json={"model": "base", "stream": True,
                                "messages": [{"role": "user", "content": question}]}) as r:
                cid = r.headers["x-tuneloop-completion-id"]
                got = []
                for line in r.iter_lines():
                    if line.startswith("data: {"):
                        got.append(json.loads(line[6:])["choices"][0]["delta"]["content"])
                    if len(got) == 5:
                        break  # the client hangs up
        assert wait_for(lambda: app.state.traffic.writer.pending or app.state.traffic.writer.written, 20)
        row = captured(app, s, cid)
        assert row["status"] == "partial"
        assert row["answer"].startswith("".join(got)) and len(row["answer"]) < len("base: " + question)
    finally:
        server.should_exit = True
        thread.join(10)


def test_feedback_build_trains_on_api_corrections_with_lineage_to_the_completion(s, app, client, upstream, tmp_path):
    from store.datasets import iter_version_conversations
    from training.feedback_round import build_round

    deploy(s, upstream, tmp_path)
    ids = []
    for i in range(4):
        cid = ask(client, question=f"question {i}?").json()["id"]
        ids.append(cid)
        assert client.post("/v1/feedback", headers=AUTH, json={"completion_id": cid, "rater": "lead",
                                                             "correction": f"The right answer {i}."}).status_code == 200
    rb = build_round(s, method="sft")
    with connect(s.db_path) as db:
        convs = list(iter_version_conversations(db, rb.version.id))
    by_answer = {c["messages"][-1]["content"]: c["meta"] for c in convs}
    for i, cid in enumerate(ids):
        assert by_answer[f"The right answer {i}."]["completion_ids"] == [cid]


@pytest.mark.slow  # loads the redaction engine (Presidio), about 20 s
def test_captured_text_and_feedback_pass_through_redaction(tmp_path, upstream):
    s = make_settings(tmp_path / "data", fake_base_model(tmp_path / "models"), api_key=KEY)  # redaction on: default
    app = create_api(s, upstream_url=upstream.url)
    with TestClient(app) as client:
        r = ask(client, model="base", question="mail me at jo.smith@example.com please", user="jo.smith@example.com",
                metadata={"subject": "refund for jo.smith@example.com", "ticket": "T-1"})
        assert "jo.smith@example.com" in r.json()["choices"][0]["message"]["content"]  # the client gets it as is
        row = captured(app, s, r.json()["id"])
        assert "jo.smith@example.com" not in json.dumps(row) and "<EMAIL_1>" in row["answer"]
        # The caller's own fields share the conversation's numbering.
        assert row["user"] == "<EMAIL_1>" and row["metadata"] == {"subject": "refund for <EMAIL_1>", "ticket": "T-1"}
        r = client.post("/v1/feedback", headers=AUTH, json={"completion_id": row["id"], "rater": "a",
                                                             "correction": "We wrote to mo@example.org and "
                                                                           "jo.smith@example.com."})
        # Redacted once, as the conversation's last turn: its numbers never reuse one the conversation holds.
        fixed = "We wrote to <EMAIL_2> and <EMAIL_3>."
        assert r.status_code == 200 and r.json()["ratings"][0]["value"] == fixed
        with connect(s.db_path) as db:
            assert [f["correction"] for f in feedback_for(db, row["id"])] == [fixed]


def test_a_row_the_redaction_engine_fails_on_is_stored_without_its_text_and_the_queue_goes_on(tmp_path):
    from serving.capture import CaptureWriter

    def redact(row):
        if row["id"] == "bad":
            raise RuntimeError("engine broke")
        return {**row, "answer": "redacted"}

    w = CaptureWriter(tmp_path / "t.db", redact=redact)
    for cid in ("bad", "good"):
        w.submit({"id": cid, "created_at": "2026-03-01T10:00:00.000+00:00", "model": "base", "status": "complete",
                  "messages": [{"role": "user", "content": "mail jo@example.com"}], "answer": "jo@example.com",
                  "user": "jo@example.com"})
    w.close()
    with connect(tmp_path / "t.db") as db:
        bad, good = get_capture(db, "bad"), get_capture(db, "good")
    assert good["answer"] == "redacted" and w.unredactable == 1
    assert "jo@example.com" not in json.dumps(bad) and bad["error"].startswith("redaction failed")


def test_a_stream_the_client_left_before_its_first_byte_is_still_cleaned_up():
    import asyncio

    from serving.traffic_api import CapturedStream

    seen = []

    async def body():
        seen.append("started")
        yield b"data: x\n\n"

    async def on_close():
        seen.append("on_close")

    async def send(message):
        raise OSError("client gone")

    response = CapturedStream(body())
    response.on_close = on_close
    with pytest.raises(OSError):
        asyncio.run(response.stream_response(send))
    assert seen == ["on_close"]
