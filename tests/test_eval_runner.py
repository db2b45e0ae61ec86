"""The eval runner: scripted models and judge for its rules, then the real HTTP path against FakeVllm."""

from __future__ import annotations

import threading
import time

import pytest

from fake_vllm import FakeVllm
from serving.evaluation.checks import GroundingIndex
from serving.evaluation.judge import JudgeUnavailable, JudgeVerdict, OrderVerdict
from serving.evaluation.runner import (Answer, EmptyEvalSet, EvalError, EvalItem, EvalSettings, ModelUnavailable,
                                       ServerUnavailable, execute_eval_run, make_scorer, plan_eval_run, run_items)
from serving.evaluation.judge import JudgeConfig
from serving_helpers import free_port
from store import evaluations as ev
from store.db import connect
from store.evaluations import NewEvalItem


def items(n, *, reference="Refunds within 30 days."):
    return [EvalItem(i, i, [{"role": "user", "content": f"question {i}"}], reference, []) for i in range(n)]


class ScriptedAsker:
    def __init__(self, fail_on=None, delay=0.0):
        self.fail_on, self.delay = fail_on, delay
        self.active = self.peak = 0
        self.lock = threading.Lock()

    def answer(self, model, messages, max_tokens):
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            time.sleep(self.delay)
            q = messages[-1]["content"]
            if self.fail_on and q == self.fail_on:
                raise ModelUnavailable(f"the model server does not serve {model!r}")
            return Answer(f"{model} says: refunds within 30 days", "length" if model == "b" else "stop")
        finally:
            with self.lock:
                self.active -= 1


class ScriptedJudge:
    def __init__(self, script):
        self.script = script  # question -> "candidate" | "unparsable" | "down"

    def judge(self, prompt, cand, base, reference=None):
        what = self.script.get(prompt[-1]["content"], "candidate")
        if what == "down":
            raise JudgeUnavailable("the judge endpoint http://j is not reachable (APIConnectionError)")
        if what == "unparsable":
            o = OrderVerdict(None, "", "garbage")
            return JudgeVerdict("unparsable", "the judge's answer could not be read", (o, o), ["garbage", "garbage"])
        o = OrderVerdict("A", "better", "{}")
        return JudgeVerdict(what, "better", (o, o))


SCORER = make_scorer(GroundingIndex(), None)


def test_every_item_is_scored_reported_in_order_and_concurrency_is_bounded():
    asker = ScriptedAsker(delay=0.02)
    seen = []
    out = run_items(items(10), candidate="a", baseline="b", asker=asker, scorer=SCORER,
                    settings=EvalSettings(concurrency=3), on_result=lambda r, n: seen.append((r.position, n)))
    assert out.status == "done" and len(out.results) == 10 and [n for _, n in seen] == list(range(1, 11))
    assert sorted(p for p, _ in seen) == list(range(10)) and asker.peak <= 3
    assert out.summary.baseline.cut_off_rate == 1.0 and out.summary.candidate.cut_off_rate == 0.0
    assert not out.summary.judge.used


def test_empty_set_is_a_clear_error():
    with pytest.raises(EmptyEvalSet, match="no items"):
        run_items([], candidate="a", baseline="b", asker=ScriptedAsker(), scorer=SCORER)


def test_a_model_the_server_cannot_serve_fails_the_run_keeping_results_so_far():
    out = run_items(items(6), candidate="a", baseline="b", asker=ScriptedAsker(fail_on="question 3"), scorer=SCORER,
                    settings=EvalSettings(concurrency=1))
    assert out.status == "failed" and "does not serve" in out.error and isinstance(out.failure, ModelUnavailable)
    assert [r.position for r in out.results] == [0, 1, 2] and out.summary.items == 3


@pytest.mark.parametrize("trouble", ["down", "unparsable"])
def test_judge_trouble_continue_records_it_and_goes_on(trouble):
    judge = ScriptedJudge({"question 1": trouble})
    out = run_items(items(4), candidate="a", baseline="b", asker=ScriptedAsker(), scorer=SCORER, judge=judge,
                    judge_model="j", settings=EvalSettings(concurrency=1, on_judge_error="continue"))
    assert out.status == "done" and len(out.results) == 4
    verdict = out.results[1].verdict
    assert verdict == ("error" if trouble == "down" else "unparsable")
    assert (out.summary.judge.errors, out.summary.judge.unparsable) == ((1, 0) if trouble == "down" else (0, 1))
    assert out.summary.judge.wins == 3


@pytest.mark.parametrize("trouble", ["down", "unparsable"])
def test_judge_trouble_stop_keeps_results_and_says_why(trouble):
    out = run_items(items(5), candidate="a", baseline="b", asker=ScriptedAsker(), scorer=SCORER,
                    judge=ScriptedJudge({"question 2": trouble}), judge_model="j",
                    settings=EvalSettings(concurrency=1, on_judge_error="stop"))
    assert out.status == "stopped" and "judge failed on item 2" in out.error
    assert [r.position for r in out.results] == [0, 1, 2]


def test_stop_on_request():
    calls = []
    out = run_items(items(5), candidate="a", baseline="b", asker=ScriptedAsker(), scorer=SCORER,
                    settings=EvalSettings(concurrency=1), should_stop=lambda: calls.append(1) or len(calls) >= 2)
    assert out.status == "stopped" and len(out.results) == 2 and out.error == "stopped on request"


def test_settings_are_validated():
    for bad in (dict(max_tokens=0), dict(concurrency=0), dict(on_judge_error="retry"), dict(max_items=0)):
        with pytest.raises(ValueError):
            EvalSettings(**bad)


# --- through HTTP and the store ---
@pytest.fixture
def upstream():
    with FakeVllm(free_port()) as srv:
        yield srv


def planned(db_path, *, candidate="base", baseline="base", judge=None, settings=EvalSettings(), n=3):
    with connect(db_path) as db:
        ev.create_eval_set_version(db, "s", [
            NewEvalItem([{"role": "user", "content": f"Where is order {i}? See https://shop.example.com"}],
                        "Your order ships in 2 days.",
                        [{"name": "mentions the order", "kind": "must_mention", "value": f"order {i}"}])
            for i in range(n)], source_kind="manual")
        return plan_eval_run(db, candidate=candidate, baseline=baseline, eval_set="s", judge=judge, settings=settings)


def test_execute_writes_progress_results_and_summary(data_dir, upstream):
    db_path = data_dir / "t.db"
    run_id = planned(db_path, settings=EvalSettings(max_items=2))
    progress = []
    out = execute_eval_run(db_path, run_id, base_url=upstream.url,
                           progress=lambda done, total, r: progress.append((done, total)))
    assert out.status == "done" and progress == [(1, 2), (2, 2)]
    with connect(db_path) as db:
        run = ev.get_eval_run(db, run_id)
        view = ev.item_results(db, run_id)
    assert run["status"] == "done" and (run["done"], run["total"]) == (2, 2)
    assert run["summary"]["candidate"]["check_pass_rates"] == {"mentions the order": 1.0}
    assert run["summary"]["judge"]["used"] is False
    assert any("no judge" in n for n in run["summary"]["notes"])
    assert view[0]["candidate_answer"].startswith("base: Where is order 0")
    # The link is in the prompt, not in the team's data: the echoing model invents it.
    assert view[0]["scores"]["candidate"]["invented"]["links"] == ["https://shop.example.com"]
    with pytest.raises(EvalError, match="is done, not queued"):
        execute_eval_run(db_path, run_id, base_url=upstream.url)


def test_execute_with_a_garbage_judge_continues_and_counts_unparsable(data_dir, upstream):
    db_path = data_dir / "t.db"
    run_id = planned(db_path, judge=JudgeConfig(upstream.url, "base"))
    out = execute_eval_run(db_path, run_id, base_url=upstream.url)
    assert out.status == "done" and out.summary.judge.unparsable == 3
    with connect(db_path) as db:
        assert {r["verdict"] for r in ev.item_results(db, run_id)} == {"unparsable"}


def test_execute_with_a_judge_that_is_down_and_stop_policy(data_dir, upstream):
    db_path = data_dir / "t.db"
    run_id = planned(db_path, judge=JudgeConfig(f"http://127.0.0.1:{free_port()}", "j", timeout_s=2),
                     settings=EvalSettings(on_judge_error="stop", concurrency=1))
    out = execute_eval_run(db_path, run_id, base_url=upstream.url)
    assert out.status == "stopped" and "not reachable" in out.error
    with connect(db_path) as db:
        run = ev.get_eval_run(db, run_id)
        assert run["status"] == "stopped" and run["done"] == 1 and "not reachable" in run["error"]


def test_an_adapter_the_server_lacks_fails_the_run_with_the_reason(data_dir, upstream):
    db_path = data_dir / "t.db"
    run_id = planned(db_path, candidate="not-loaded-v1")
    with pytest.raises(ModelUnavailable, match="not-loaded-v1"):
        execute_eval_run(db_path, run_id, base_url=upstream.url)
    with connect(db_path) as db:
        run = ev.get_eval_run(db, run_id)
    assert run["status"] == "failed" and "does not serve 'not-loaded-v1'" in run["error"]


def test_server_down_fails_the_run(data_dir):
    db_path = data_dir / "t.db"
    run_id = planned(db_path)
    with pytest.raises(ServerUnavailable, match="not reachable"):
        execute_eval_run(db_path, run_id, base_url=f"http://127.0.0.1:{free_port()}")


def test_plan_refuses_an_unknown_set(data_dir):
    with connect(data_dir / "t.db") as db, pytest.raises(ev.EvalSetNotFound):
        plan_eval_run(db, candidate="a", baseline="b", eval_set="missing")
