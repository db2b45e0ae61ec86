"""The Evaluate tab's handlers on a real store, with the real eval runner against a scripted vLLM (FakeVllm) on loopback.

Run: .venv/bin/python -m pytest tests/test_web_evaluate.py -q

Eval sets are built (and refused without writing anything), an evaluation runs on its worker thread
while the poll reads its progress from the store, a judge that answers garbage or is down is kept
per item or stops the run with the reason shown, the gate's refusal lists each failing rule with
its figures, forcing needs a reason, and the learning curve and leaderboard read the stored runs.
"""

from __future__ import annotations

import time

import gradio as gr
import pandas as pd
import pytest

from fake_vllm import FakeVllm
from serving.evaluation.scoring import SideScores
from serving.evaluation.summary import ItemResult, summarize
from serving_helpers import free_port
from store import evaluations as ev
from store.adapters import get_adapter, register_adapter
from store.db import connect
from store.deployments import get_deployment, list_deployments
from ui.web import eval_views as views
from ui.web.context import AppContext
from ui.web.tabs import evaluate as tab
from ui_fakes import FakeServer, FakeTrainer, app_settings

BASE = "smollm2-135m-instruct"
CHECKS = ["states the refund rule", "must_mention", "30 days; 30-day"] + ["", "must_mention", ""] * 2


@pytest.fixture
def vllm():
    with FakeVllm(free_port(), served_name=BASE) as srv:
        yield srv


@pytest.fixture
def ctx(data_dir, tmp_path, monkeypatch, vllm):
    monkeypatch.setenv("TUNELOOP_VLLM_URL", vllm.url)
    settings = app_settings(tmp_path, monkeypatch)
    server = FakeServer(settings)
    with connect(settings.db_path) as db:
        v1 = register_adapter(db, name="support-v1", family="support", version=1, base_model="b",
                              path=str(tmp_path), rank=8, run_id=None, dataset_version_id=None, parent_id=None)
        register_adapter(db, name="support-v2", family="support", version=2, base_model="b", path=str(tmp_path),
                         rank=8, run_id=None, dataset_version_id=None, parent_id=v1)
    for name in ("support-v1", "support-v2"):
        vllm.adapters[name] = str(tmp_path)
        server.loaded.add(name)
    return AppContext(settings=settings, server=server, trainer=FakeTrainer())


def manual_set(ctx, name="refunds", question="Can I get a refund after two weeks?", checks=CHECKS):
    return tab.build_set(ctx, "ana", name, "manual", None, None, question, "Yes: refunds are accepted within 30 days.",
                         *checks)


def wait_final(ctx, run_id: int, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with ctx.db() as db:
            run = ev.get_eval_run(db, run_id)
        if run["status"] in ev.FINAL_STATUSES and run_id not in tab._stops:
            return run
        time.sleep(0.05)
    raise AssertionError(f"eval run {run_id} did not finish: {run}")


def seed_run(ctx, candidate: str, baseline: str, *, cand_ok: bool, base_ok: bool, set_name="refunds") -> int:
    """A finished eval run with one check: what the gate reads."""
    with ctx.db() as db:
        ref = ev.resolve_set(db, set_name)
        item = next(ev.iter_eval_items(db, ref.id))
        result = ItemResult(item["id"], 0, "a", "b", "stop", "stop",
                            SideScores(rouge_l=0.5, checks={"states the refund rule": cand_ok}, words=5, chars=20),
                            SideScores(rouge_l=0.5, checks={"states the refund rule": base_ok}, words=5, chars=20))
        run_id = ev.create_eval_run(db, candidate=candidate, baseline=baseline, set_version_id=ref.id)
        ev.finish_eval_run(db, run_id, "done", summary=summarize([result]).to_json())
    return run_id


# ------------------------------------------------------------------ eval sets

def test_check_rows_become_named_checks_and_blank_rows_are_skipped():
    got = tab.parse_check_rows([("states the rule", "must_mention", "30 days; 30-day"), ("", "must_mention", ""),
                                ("no links", "regex", r"https?://(a|b)")])
    assert got == [{"name": "states the rule", "kind": "must_mention", "value": ["30 days", "30-day"]},
                   {"name": "no links", "kind": "regex", "value": [r"https?://(a|b)"]}]


@pytest.mark.parametrize("rows, words", [
    ([("bad", "regex", "(unclosed")], "not a valid regular expression"),
    ([("", "must_mention", "30 days")], "give both a name"),
    ([("same", "must_mention", "a"), ("same", "must_mention", "b")], "two checks are named"),
])
def test_bad_checks_are_refused_with_a_clear_message(rows, words):
    with pytest.raises(gr.Error, match=words):
        tab.parse_check_rows(rows)


def test_hand_written_item_makes_a_version_and_shows_in_the_viewer(ctx):
    message = manual_set(ctx)
    assert "refunds@1" in message and "1 item" in message
    manual_set(ctx, question="How long do refunds take?")
    with ctx.db() as db:
        sets = ev.list_eval_sets(db)
    frame = views.sets_frame(sets)
    assert frame.iloc[0].tolist()[:4] == ["refunds", 2, 2, "written by hand"]
    html = tab.set_items(ctx, "refunds@2")
    assert "How long do refunds take?" in html and "states the refund rule" in html and "30 days" in html


@pytest.mark.parametrize("kwargs, words", [
    ({"question": "", "checks": CHECKS}, "question"),
    ({"question": "Refund?", "checks": ["x", "regex", "([a"] + [""] * 6}, "regular expression"),
    ({"name": "bad@name"}, "Eval set name"),
])
def test_refused_builds_write_nothing(ctx, kwargs, words):
    with pytest.raises(gr.Error, match=words):
        manual_set(ctx, **kwargs)
    with ctx.db() as db:
        assert ev.list_eval_sets(db) == []


def test_corrections_without_any_correction_are_refused(ctx):
    with pytest.raises(gr.Error, match="no corrected answer"):
        tab.build_set(ctx, "ana", "golden", "corrections", None, None, "", "", *CHECKS)
    with ctx.db() as db:
        assert ev.list_eval_sets(db) == []


def test_file_and_heldout_sources(ctx, tmp_path):
    from store.runs import create_run, mark_finished
    from training_support import add_dataset, support_conversations

    path = tmp_path / "golden.txt"
    path.write_text("Customer: Where is my order?\nAgent: It arrives on Friday.\n\n"
                    "Customer: Refund?\nAgent: Within 30 days.\n", encoding="utf-8")
    message = tab.build_set(ctx, "ana", "golden", "file", None, str(path), "", "", *[""] * 9)
    assert "golden@1" in message and "2 item(s)" in message and "transcript" in message
    with ctx.db() as db:
        ref = add_dataset(db, "support", support_conversations(20))
        run = create_run(db, config={"dataset_version_id": ref.id, "eval_fraction": 0.2, "seed": 3,
                                     "dataset": str(ref)}, method="sft", dataset_version_id=ref.id, base_model="m",
                         parent_adapter_id=None, runs_dir=tmp_path)
        mark_finished(db, run, "completed")
        choices = tab.heldout_run_choices(db)
    assert choices and choices[0][1] == str(run) and "20% held out" in choices[0][0]
    message = tab.build_set(ctx, "ana", "held", "heldout", str(run), None, "", "", *[""] * 9)
    assert "held@1" in message and "4 item(s)" in message


# ------------------------------------------------------------------ evaluation runs

def test_an_evaluation_runs_in_the_background_and_the_poll_shows_it(ctx, vllm):
    manual_set(ctx, checks=["names the model", "must_mention", "support-v1"] + [""] * 6)
    run_id = tab.start_eval(ctx, "ana", "support-v1", "parent", "refunds", "", "", "", 0, "continue")
    run = wait_final(ctx, run_id)
    assert run["status"] == "done" and run["created_by"] == "ana" and run["baseline"] == BASE
    status, bar, figures, items, stop, table, sig = tab.poll(ctx, tab.LATEST, "all", None)
    assert f"Run {run_id}" in status and "finished" in status and "no judge was used" in status
    assert "1 of 1" in bar
    rows = {r["Figure"]: (r["Candidate"], r["Baseline"]) for _, r in figures.iterrows()}
    assert rows["check: names the model"] == ("100%", "0%")
    assert "support-v1: Can I get a refund after two weeks?" in items and "Reference answer" in items
    assert table.iloc[0]["Checks passed"] == "100% / 0%" and table.iloc[0]["Judge win rate (95% CI)"] == \
        "no judge was used"
    assert tab.poll(ctx, tab.LATEST, "all", sig)[0] is not None  # unchanged: nothing re-sent but the sig
    chat = [r for r in vllm.requests if r[1] == "/v1/chat/completions"]
    assert {r[2]["model"] for r in chat} == {"support-v1", BASE} and all(r[2]["temperature"] == 0 for r in chat)


def test_a_judge_that_answers_garbage_is_counted_and_the_run_completes(ctx, vllm):
    manual_set(ctx)
    run_id = tab.start_eval(ctx, "ana", "support-v2", "parent", "refunds", vllm.url, BASE, "sk-secret", 0,
                            "continue")
    run = wait_final(ctx, run_id)
    assert run["status"] == "done" and run["baseline"] == "support-v1"
    assert run["judge"] == {"base_url": vllm.url, "model": BASE}  # the key is not stored
    status, _, figures, items, *_ = tab.poll(ctx, str(run_id), "all", None)
    assert "could not be read" in status
    assert "judge answer could not be read" in items


def test_a_judge_that_is_down_stops_the_run_keeping_results_and_the_reason_shows(ctx):
    manual_set(ctx)
    run_id = tab.start_eval(ctx, "ana", "support-v1", "base", "refunds", f"http://127.0.0.1:{free_port()}/v1",
                            "judge-model", "", 0, "stop")
    run = wait_final(ctx, run_id)
    assert run["status"] == "stopped" and run["done"] == 1
    status, bar, _, items, *_ = tab.poll(ctx, str(run_id), "all", None)
    assert "Stopped" in status and "not reachable" in status and "are kept below" in status
    assert "judge failed" in items and "Stopped early: 1 of 1" in bar


def test_a_model_the_server_does_not_serve_fails_the_run_with_the_reason(ctx, vllm):
    manual_set(ctx)
    vllm.adapters.pop("support-v2")
    run_id = tab.start_eval(ctx, "ana", "support-v2", "base", "refunds", "", "", "", 0, "continue")
    run = wait_final(ctx, run_id)
    assert run["status"] == "failed" and "support-v2" in run["error"]
    assert "Failed" in tab.poll(ctx, str(run_id), "all", None)[0]


def test_a_run_that_breaks_before_the_runner_takes_it_fails_instead_of_staying_queued(ctx, monkeypatch):
    """Seen once in the app: loading the embedding model raised (transformers' lazy import, from two threads at
    once), and the run stayed "waiting to start" for ever."""
    manual_set(ctx)

    def broken(ctx):
        raise ImportError("cannot import name 'AutoModel' from 'transformers'")

    monkeypatch.setattr(tab, "embedder_for", broken)
    run_id = tab.start_eval(ctx, "ana", "support-v1", "base", "refunds", "", "", "", 0, "continue")
    run = wait_final(ctx, run_id)
    assert run["status"] == "failed" and run["error"].startswith("internal error (ImportError")
    assert "Failed" in tab.poll(ctx, str(run_id), "all", None)[0]


@pytest.mark.parametrize("args, words", [
    ((None, "parent", "refunds", "", "", ""), "Pick the adapter"),
    (("support-v1", "parent", None, "", "", ""), "Pick an eval set"),
    (("support-v1", "support-v1", "refunds", "", "", ""), "compared with itself"),
    (("support-v1", "parent", "nope", "", "", ""), "not found"),
    (("support-v1", "parent", "refunds", "http://x:1/v1", "", ""), "both the endpoint URL and the model"),
    (("support-v1", "deployment nope", "refunds", "", "", ""), "no deployment named"),
])
def test_start_refusals_queue_nothing(ctx, args, words):
    manual_set(ctx)
    with pytest.raises(gr.Error, match=words):
        tab.start_eval(ctx, "ana", *args, 0, "continue")
    with ctx.db() as db:
        assert ev.list_eval_runs(db) == []


def test_item_filters_and_escaping():
    run = {"candidate": "c", "baseline": "b", "status": "done"}
    rows = [{"position": 0, "messages": [{"role": "user", "content": "<script>x</script>"}], "reference": None,
             "candidate_answer": "<b>hi</b>", "baseline_answer": "", "verdict": "baseline", "reason": "<i>b</i>",
             "scores": {"candidate": {"checks": {"rule": False}, "invented": {"links": ["http://evil"]}},
                        "baseline": {"empty": True}}},
            {"position": 1, "messages": [{"role": "user", "content": "fine"}], "reference": "r",
             "candidate_answer": "ok", "baseline_answer": "ok", "verdict": "candidate", "reason": "",
             "scores": {"candidate": {"checks": {"rule": True}}, "baseline": {}}}]
    page = views.items_html(run, rows)
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;i&gt;b&lt;/i&gt;" in page
    assert "(empty answer)" in page and "invented: http://evil" in page
    for how in ("judge_lost", "check_failed", "invented", "cut_off"):
        assert "Item 1" in views.items_html(run, rows, how) and "Item 2" not in views.items_html(run, rows, how)
    assert "No item answered yet" in views.items_html({**run, "status": "running"}, [])


# ------------------------------------------------------------------ deployments and the gate

def test_promote_through_the_gate_refusal_force_and_rollback(ctx):
    manual_set(ctx)
    seed_run(ctx, "support-v1", BASE, cand_ok=True, base_ok=False)
    panel = tab.promote(ctx, "ana", "support-v1", "support", tab.LATEST)
    assert "support-v1" in panel and "The gate passed" in panel
    with ctx.db() as db:
        assert get_deployment(db, "support")["target"] == "support-v1"

    seed_run(ctx, "support-v2", "support-v1", cand_ok=False, base_ok=True)  # worse on the named check
    panel = tab.promote(ctx, "ana", "support-v2", "support", tab.LATEST)
    assert "The gate refused support-v2" in panel and "Check “states the refund rule”" in panel
    assert "pass rate of &#x27;states the refund rule&#x27; 0% vs baseline 100%" in panel and "✗ failed" in panel
    with ctx.db() as db:
        assert get_deployment(db, "support")["target"] == "support-v1"  # nothing changed

    with pytest.raises(gr.Error, match="needs a reason"):
        tab.promote(ctx, "ana", "support-v2", "support", tab.LATEST, force_reason="  ")
    panel = tab.promote(ctx, "tom", "support-v2", "support", tab.LATEST, force_reason="hotfix approved by Ana")
    assert "forced past the gate" in panel
    deployments, history = tab.deployment_tables(ctx)
    assert deployments.iloc[0].tolist()[:4] == ["support", "support-v2", "forced past the gate", "tom"]
    assert history.iloc[0]["Reason / gate"] == "reason: hotfix approved by Ana"
    assert history.iloc[1]["Reason / gate"].startswith("gate passed") and history.iloc[1]["By"] == "ana"

    assert "rolled back by ana" in tab.rollback(ctx, "ana", "support")
    with ctx.db() as db:
        assert get_deployment(db, "support")["target"] == "support-v1"
    with pytest.raises(gr.Error, match="no deployment named"):
        tab.rollback(ctx, "ana", "nope")


def test_promotion_without_an_evaluation_is_refused_and_says_what_to_run(ctx):
    panel = tab.promote(ctx, "ana", "support-v1", "support", tab.LATEST)
    assert "no finished evaluation of support-v1 against smollm2-135m-instruct" in panel
    with ctx.db() as db:
        assert list_deployments(db) == []
    with pytest.raises(gr.Error, match="Deployment"):
        tab.promote(ctx, "ana", "support-v1", "  ", tab.LATEST)


# ------------------------------------------------------------------ learning curve and leaderboard

def test_learning_curve_along_a_deployment_and_a_family(ctx):
    manual_set(ctx)
    first = seed_run(ctx, "support-v1", BASE, cand_ok=True, base_ok=False)
    second = seed_run(ctx, "support-v2", "support-v1", cand_ok=True, base_ok=True)
    tab.promote(ctx, "ana", "support-v1", "support", tab.LATEST)
    tab.promote(ctx, "ana", "support-v2", "support", tab.LATEST)
    for lineage in ("deployment:support", "family:support"):
        frame, note = tab.curve(ctx, lineage)
        checks = frame[(frame["metric"] == "named checks passed") & (frame["model"] != "")].sort_values("round")
        assert checks[["round", "value"]].values.tolist() == [[f"0 · {BASE}", 0.0], ["1 · support-v1", 1.0],
                                                               ["2 · support-v2", 1.0]]
        assert f"eval run {first}" in note and f"eval run {second}" in note
        assert frame["value"].isna().sum() == len(views.CURVE_METRICS)
    with ctx.db() as db:
        assert ("Deployment support", "deployment:support") in tab.lineage_choices(db)


def test_leaderboard_names_its_sources(ctx):
    for q in ("Refund?", "Refund after 40 days?", "Refund without receipt?"):
        manual_set(ctx, question=q)
    with ctx.db() as db:
        ref = ev.resolve_set(db, "refunds")
        run_id = ev.create_eval_run(db, candidate="support-v1", baseline=BASE, set_version_id=ref.id)
        for i, item in enumerate(ev.iter_eval_items(db, ref.id)):
            ev.record_item_result(db, run_id, {"item_id": item["id"], "position": i, "verdict": "candidate"}, done=i + 1)
        ev.finish_eval_run(db, run_id, "done")
    frame, note = tab.leaderboard(ctx, ["people", "judge"])
    assert frame.iloc[0]["Model"] == "support-v1" and frame.iloc[0]["Judge verdicts"] == 3
    assert "judge verdicts" in note and "3 judge verdict(s)" in note
    frame, note = tab.leaderboard(ctx, ["people"])
    assert frame.empty and "No comparisons yet from people's A/B votes" in note


def test_the_app_builds_with_the_evaluate_tab_and_refreshes(ctx):
    from ui.web.app import build_app

    build_app(ctx)
    manual_set(ctx)
    state = tab.form_state(ctx)
    assert state["refs"] == ["refunds@1"] and "support-v1" in state["adapters"]
    with gr.Blocks():
        refresh, inputs, outputs = tab.render(ctx, gr.State(None))
    got = refresh(None, None, None, tab.LATEST, None, None, None, None, None, None, "all")
    assert len(got) == len(outputs)
    assert got[0]["value"] == "support-v2" or got[0]["value"] == "support-v1"
    assert got[2]["value"] == "refunds@1" and got[1]["value"] == "parent"
    assert ("Its parent (the adapter it continued from)", "parent") in state["against"]
