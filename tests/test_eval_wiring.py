"""The evaluation's wiring: what "against parent" means, the end-of-run evaluation queue, eval items kept out of
training, and the `tuneloop eval` / `tuneloop deploy` commands on a real database (no model server needed)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from serving.evaluation.auto import next_runnable
from serving.evaluation.baseline import UnknownBaseline, resolve_baseline
from store import evaluations as ev
from store.adapters import register_adapter
from store.datasets import NewConversation, create_version
from store.deployments import change_target
from store.evaluations import NewEvalItem
from store.runs import create_run
from training.evalsets import auto_eval_items, queue_auto_eval

BASE = "smollm2-135m-instruct"


def conv(q, a):
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]


def adapter(db, name, parent=None):
    return register_adapter(db, name=name, family="support", version=1, base_model="m", path=f"/a/{name}", rank=8,
                            run_id=None, dataset_version_id=None, parent_id=parent)


def test_against_parent_base_deployment_or_a_name(db):
    v1 = adapter(db, "support-v1")
    adapter(db, "support-v2", parent=v1)
    assert resolve_baseline(db, "support-v2", None, base_name=BASE) == "support-v1"
    assert resolve_baseline(db, "support-v1", "parent", base_name=BASE) == BASE
    assert resolve_baseline(db, "support-v2", "base", base_name=BASE) == BASE
    change_target(db, "support", "support-v1", action="force", by="t")
    assert resolve_baseline(db, "support-v2", "deployment support", base_name=BASE) == "support-v1"
    assert resolve_baseline(db, "support-v2", "deployment:support", base_name=BASE) == "support-v1"
    assert resolve_baseline(db, "support-v1", "support-v2", base_name=BASE) == "support-v2"
    with pytest.raises(UnknownBaseline, match="no deployment named 'nope'"):
        resolve_baseline(db, "support-v2", "deployment nope", base_name=BASE)
    with pytest.raises(UnknownBaseline):
        resolve_baseline(db, "ghost", "parent", base_name=BASE)


def _run_with_heldout(db, n=10, fraction=0.2):
    ref, _, _ = create_version(db, "d", [NewConversation(f"h{i}", conv(f"q{i}", f"a{i}")) for i in range(n)])
    return create_run(db, config={"dataset_version_id": ref.id, "eval_fraction": fraction, "seed": 3}, method="sft",
                      dataset_version_id=ref.id, base_model="m", parent_adapter_id=None, runs_dir="/tmp/r")


def test_the_end_of_run_evaluation_takes_turns_between_held_out_and_the_team_set_within_budget(db):
    run = _run_with_heldout(db)
    ev.create_eval_set_version(db, "team", [NewEvalItem(conv(f"team {i}", "x")[:1], "x") for i in range(5)],
                               source_kind="manual")
    items, sources = auto_eval_items(db, run, default_set="team", budget=3)
    assert [i.messages[-1]["content"].startswith("team") for i in items] == [False, True, False]
    assert sources == "2 held out by run 1, 5 from team@1"
    eval_id = queue_auto_eval(db, run, candidate="support-v2", baseline="support-v1", default_set="team", budget=3,
                              max_tokens=64)
    queued = ev.get_eval_run(db, eval_id)
    assert (queued["status"], queued["trigger"], queued["total"], queued["set_name"]) == ("queued", "auto", 3,
                                                                                         "auto-support-v2")
    assert queued["config"] == {"max_items": 3, "max_tokens": 64}


def test_a_held_out_question_the_team_set_also_asks_is_asked_once_as_the_team_item(db):
    run = _run_with_heldout(db)
    held = [i.messages for i in auto_eval_items(db, run, default_set="", budget=10)[0]]
    assert len(held) == 2
    ev.create_eval_set_version(db, "team", [NewEvalItem(held[0], "the team's answer", [])], source_kind="manual")
    items, _ = auto_eval_items(db, run, default_set="team", budget=10)
    assert [i.messages for i in items].count(held[0]) == 1 and len(items) == 2
    assert next(i for i in items if i.messages == held[0]).reference == "the team's answer"


def test_no_end_of_run_evaluation_without_items_or_budget(db):
    run = _run_with_heldout(db, fraction=0.0)
    assert queue_auto_eval(db, run, candidate="a", baseline="b", default_set="", budget=8, max_tokens=64) is None
    run = _run_with_heldout(db)
    assert queue_auto_eval(db, run, candidate="a", baseline="b", default_set="", budget=0, max_tokens=64) is None


def test_the_serving_side_runs_an_automatic_evaluation_once_both_models_are_loaded():
    queued = [{"id": 3, "trigger": "auto", "candidate": "v2", "baseline": "v1"},
              {"id": 2, "trigger": "manual", "candidate": "v9", "baseline": "base"},
              {"id": 4, "trigger": "auto", "candidate": "v3", "baseline": "base"}]
    assert next_runnable(queued, {"base", "v1"}) is None
    assert next_runnable(queued, {"base", "v3"})["id"] == 4
    assert next_runnable(queued, {"base", "v1", "v2", "v3"})["id"] == 3


def test_planning_leaves_eval_items_out_of_training_and_says_how_many(settings):
    from store.db import connect
    from training.planning import plan_run

    with connect(settings.db_path) as db:
        create_version(db, "support", [NewConversation(f"c{i}", conv(f"Question {i}?", f"Answer {i}."))
                                       for i in range(12)])
        ev.create_eval_set_version(db, "golden", [NewEvalItem(conv("question 3?", "")[:1], "Answer 3."),
                                                  NewEvalItem(conv("QUESTION  5?", "")[:1], None)],
                                   source_kind="manual")
    cfg = plan_run(settings, dataset="support", preset="quick")
    assert len(cfg.excluded_conversation_ids) == 2
    with connect(settings.db_path) as db:
        from store.datasets import iter_version_conversations

        left_out = [c["messages"][0]["content"] for c in iter_version_conversations(db, cfg.dataset_version_id)
                    if c["id"] in cfg.excluded_conversation_ids]
    assert left_out == ["Question 3?", "Question 5?"]


def cli(*args):
    from ui.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_cli_builds_eval_sets_with_checks_and_refuses_bad_input(settings, tmp_path):
    path = tmp_path / "refunds.jsonl"
    path.write_text("".join(json.dumps({"messages": conv(q, "Within 30 days you get a full refund.")}) + "\n"
                            for q in ("Can I return it?", "Refund please")))
    out = cli("eval", "sets", "build", "refunds", "--file", str(path), "--check", "states the rule:must_mention=30 days")
    assert out.exit_code == 0 and "made eval set refunds@1 (2 items)" in out.output, out.output
    shown = cli("eval", "sets", "show", "refunds")
    assert "check: states the rule (must_mention ['30 days'])" in shown.output
    from ui.cli import app

    bad = CliRunner().invoke(app, ["eval", "sets", "build", "x", "--question", "Hi?", "--check", "r:regex=(unclosed"])
    assert bad.exit_code == 2 and "not a valid regular expression" in bad.output
    none = CliRunner().invoke(app, ["eval", "sets", "build", "x"])
    assert none.exit_code == 2 and "give exactly one source" in none.output
    listed = cli("eval", "sets")
    assert "refunds" in listed.output and "2 items" in listed.output


def test_cli_eval_run_refuses_an_unknown_baseline_or_set_before_asking_any_model(settings):
    from ui.cli import app

    out = CliRunner().invoke(app, ["eval", "run", "support-v9"])
    assert out.exit_code == 2 and "no eval set given" in out.output
    out = CliRunner().invoke(app, ["eval", "run", "support-v9", "--set", "nope"])
    assert out.exit_code == 2 and "support-v9" in out.output  # the unknown adapter is named


def test_cli_deploy_refuses_without_an_eval_and_forces_with_a_recorded_reason(settings):
    from store.db import connect
    from ui.cli import app

    with connect(settings.db_path) as db:
        adapter(db, "support-v1")
    refused = CliRunner().invoke(app, ["deploy", "promote", "support-v1", "--to", "support"])
    assert refused.exit_code != 0 and "support-v1" in refused.output
    # The CLI says, in its own flags, how to get past the gate.
    assert "evaluate: tuneloop eval run support-v1 --against smollm2-135m-instruct" in refused.output
    assert "force: add --force REASON" in refused.output
    forced = cli("deploy", "promote", "support-v1", "--to", "support", "--force", "first deployment")
    assert forced.exit_code == 0 and "support: smollm2-135m-instruct -> support-v1 (force)" in forced.output
    listed = cli("deploy", "list")
    assert "support: support-v1" in listed.output and "reason: first deployment" in listed.output
    back = CliRunner().invoke(app, ["deploy", "rollback", "support"])
    assert back.exit_code == 0 and "support-v1 -> smollm2-135m-instruct (rollback)" in back.output


def test_the_app_fails_evaluations_it_stopped_during_or_never_started_and_keeps_automatic_ones_queued(settings):
    from serving.evaluation.auto import INTERRUPTED, AutoEvaluator
    from store.db import connect

    with connect(settings.db_path) as db:
        ref = ev.create_eval_set_version(db, "golden", [NewEvalItem(conv("Where?", "")[:1], "Here.")],
                                         source_kind="manual")
        running, manual, auto = (ev.create_eval_run(db, candidate="v2", baseline="v1", set_version_id=ref.id,
                                                    trigger=trigger) for trigger in ("manual", "manual", "auto"))
        ev.mark_eval_running(db, running, total=1)
    evaluator = AutoEvaluator(settings, loaded=set, poll_s=60)
    evaluator.start()
    evaluator.stop()
    with connect(settings.db_path) as db:
        runs = {r: ev.get_eval_run(db, r) for r in (running, manual, auto)}
    status = {r: (run["status"], run["error"]) for r, run in runs.items()}
    assert status == {running: ("failed", INTERRUPTED), manual: ("failed", INTERRUPTED), auto: ("queued", None)}
