"""Judge scores for captured answers (serving/traffic_judge.py, `tuneloop traffic judge`): the pure prompt and
parsing, then the real HTTP path (JudgeClient, the openai package) against a scripted judge endpoint on loopback.
The real judge protocol against vLLM: tests/test_traffic_integration.py."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from serving.traffic_judge import build_score_messages, parse_score
from serving_helpers import free_port
from store.db import connect
from store.ratings import rate_message
from store.traffic import CaptureFilter, as_chat_message, find_captures, get_capture, save_captures
from ui.cli import app


@pytest.mark.parametrize("text, score", [
    ('{"score": 5, "reason": "right"}', 1.0),
    ('Sure! {"score": 3, "reason": "ok"}', 0.5),
    ('{"score": "1"}', 0.0),
    ("Score: 4\nclear and polite", 0.75),
    ('{"score": 9}', None),  # out of the scale
    ('{"score": 1 | 2 | 3 | 4 | 5, "reason": "..."}', None),  # the instructions echoed back
    ("score: 2\nscore: 5", None),  # two grades: no guess
    ("It is a fine answer.", None),
    ("", None),
])
def test_the_judges_grade_is_read_or_refused(text, score):
    assert parse_score(text) == score


def test_the_prompt_shows_the_conversation_and_the_answer():
    msgs = build_score_messages([{"role": "user", "content": "Where is my parcel?"}], "In transit.")
    assert msgs[0]["role"] == "system" and '"score"' in msgs[0]["content"]
    assert "USER: Where is my parcel?" in msgs[1]["content"] and "In transit." in msgs[1]["content"]


class ScriptedJudge(ThreadingHTTPServer):
    """An OpenAI-compatible /v1/chat/completions that grades by a word in the answer shown to it."""

    daemon_threads = True

    def __init__(self, port: int):
        super().__init__(("127.0.0.1", port), JudgeHandler)
        self.asked: list[dict] = []


class JudgeHandler(BaseHTTPRequestHandler):
    server: ScriptedJudge

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.asked.append(body)
        shown = body["messages"][-1]["content"].split("## The assistant's answer")[1]
        reply = ('{"score": 5, "reason": "states the rule"}' if "30 days" in shown else
                 "I would rather not say." if "mumble" in shown else '{"score": 1, "reason": "wrong"}')
        data = json.dumps({"id": "j", "object": "chat.completion", "created": 1, "model": body["model"],
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def capture(i: int, answer: str, *, status: str = "complete", deployment: str = "support") -> dict:
    return {"id": f"c{i}", "created_at": f"2026-03-0{i}T10:00:00.000+00:00", "model": deployment,
            "deployment": deployment, "adapter": "v1", "status": status, "answer": answer,
            "messages": [{"role": "user", "content": f"can I return item {i}?"}]}


def test_traffic_judge_scores_unrated_answers_over_http_and_the_queue_filters_them(data_dir):
    db_path = data_dir / "tuneloop.db"
    with connect(db_path) as db:
        save_captures(db, [capture(1, "Yes, within 30 days."), capture(2, "No returns, ever."),
                           capture(3, "mumble"), capture(4, "Yes, within 30 days.", status="partial"),
                           capture(5, "No returns.", deployment="sales"), capture(6, "No.")])
        rate_message(db, kind="thumb", message_id=as_chat_message(db, "c6", user="ana"), value="down", user="ana")
    judge = ScriptedJudge(free_port())
    threading.Thread(target=judge.serve_forever, daemon=True).start()
    try:
        spec = f"URL=http://127.0.0.1:{judge.server_address[1]}/v1,MODEL=judge-model"
        r = CliRunner().invoke(app, ["traffic", "judge", "--judge", spec, "--deployment", "support", "--json"])
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout) == {"scored": 2, "unparsable": 1, "stopped": None}
        assert {b["model"] for b in judge.asked} == {"judge-model"} and len(judge.asked) == 3
        with connect(db_path) as db:
            scores = {f"c{i}": get_capture(db, f"c{i}")["judge_score"] for i in range(1, 7)}
            low = [c["id"] for c in find_captures(db, CaptureFilter(judge_below=0.5))]
        # rated (c6), partial (c4) and other deployments' (c5) answers are not sent; c3's reply was unreadable
        assert scores == {"c1": 1.0, "c2": 0.0, "c3": None, "c4": None, "c5": None, "c6": None}
        assert low == ["c2"]
        # a second run asks only about what is still unscored (c3), not what it scored
        r = CliRunner().invoke(app, ["traffic", "judge", "--judge", spec, "--deployment", "support"])
        assert r.exit_code == 0 and "0 answer(s) scored, 1 judge repl(ies) unreadable" in r.stdout
        assert len(judge.asked) == 4
    finally:
        judge.shutdown()
        judge.server_close()


def test_an_unreachable_judge_stops_with_its_reason_and_scores_nothing(data_dir):
    with connect(data_dir / "tuneloop.db") as db:
        save_captures(db, [capture(1, "Yes, within 30 days.")])
    spec = f"URL=http://127.0.0.1:{free_port()}/v1,MODEL=j"
    r = CliRunner().invoke(app, ["traffic", "judge", "--judge", spec])
    assert r.exit_code == 1 and "stopped early" in r.output and "not reachable" in r.output
    with connect(data_dir / "tuneloop.db") as db:
        assert get_capture(db, "c1")["judge_score"] is None
    r = CliRunner().invoke(app, ["traffic", "judge", "--judge", "MODEL=j"])
    assert r.exit_code == 2 and "base_url is empty" in r.output
