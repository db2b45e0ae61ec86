"""Eval sets, runs and results, evalset builders, overlap exclusion, and deployments on a temp database."""

from __future__ import annotations

import json

import pytest

from serving.deployments import (DeploymentError, GateRefused, list_deployments, promote, resolve_model, rollback,
                                 target_stack)
from serving.evaluation.gate import GateRules
from serving.evaluation.scoring import SideScores
from serving.evaluation.summary import ItemResult, summarize
from store import evaluations as ev
from store.adapters import register_adapter, set_status
from store.datasets import NewConversation, create_version
from store.evaluations import NewEvalItem, prompt_key
from store.runs import create_run, mark_finished
from training.evalsets import (NoEvalItems, build_from_corrections, build_from_file, build_from_run, correction_items,
                               cut_at_last_assistant, exclude_eval_overlap, heldout_items, manual_item)
from training.data import split_conversations

BASE = "base"


def conv(q, a, *, system=None):
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return {"messages": msgs}


def item(q, ref=None, checks=None):
    return NewEvalItem([{"role": "user", "content": q}], ref, checks)


# --- eval sets ---
def test_eval_set_versions_are_immutable_with_lineage(db):
    v1 = ev.create_eval_set_version(db, "refunds", [item("a?", "A"), item("b?")], source_kind="manual",
                                    created_by="ana")
    v2 = ev.create_eval_set_version(db, "refunds", [item("c?", "C", [{"name": "n", "kind": "regex", "value": "c"}]),
                                                   item("A?", "A")],  # same prompt as "a?" once normalised
                                    source_kind="file", source_ref="x.jsonl")
    assert (str(v1), str(v2)) == ("refunds@1", "refunds@2")
    assert [i["messages"][0]["content"] for i in ev.iter_eval_items(db, v1.id)] == ["a?", "b?"]
    items = list(ev.iter_eval_items(db, v2.id))
    assert [i["messages"][0]["content"] for i in items] == ["a?", "b?", "c?"]
    assert items[1]["reference"] is None and items[2]["checks"][0]["value"] == ["c"]
    assert ev.resolve_set(db, "refunds") == v2 and ev.resolve_set(db, "refunds@1") == v1
    listed = ev.list_eval_sets(db)[0]
    assert listed["versions"][0]["parent"] == "refunds@1" and listed["versions"][1]["created_by"] == "ana"
    with pytest.raises(ev.EvalSetNotFound, match="known eval sets: refunds"):
        ev.resolve_set(db, "nope")


@pytest.mark.parametrize("bad,fragment", [
    (NewEvalItem([], None), "non-empty list"),
    (NewEvalItem([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]), "end with a non-empty user"),
    (NewEvalItem([{"role": "bot", "content": "q"}]), "message 0"),
    (NewEvalItem([{"role": "user", "content": "q"}], None, [{"name": "x", "kind": "regex", "value": "("}]),
     "not a valid regular expression"),
])
def test_bad_items_are_refused_naming_the_item_and_nothing_is_written(db, bad, fragment):
    with pytest.raises(ValueError, match="item 1") as exc:
        ev.create_eval_set_version(db, "s", [item("fine"), bad], source_kind="manual")
    assert fragment in str(exc.value)
    assert ev.list_eval_sets(db) == []


def test_empty_set_and_unknown_source_kind_are_refused(db):
    with pytest.raises(ValueError, match="empty"):
        ev.create_eval_set_version(db, "s", [], source_kind="manual")
    with pytest.raises(ValueError, match="source kind"):
        ev.create_eval_set_version(db, "s", [item("q")], source_kind="web")


def test_runs_results_progress_and_comparisons(db):
    ref = ev.create_eval_set_version(db, "s", [item("q1", "r1"), item("q2")], source_kind="manual")
    with pytest.raises(ValueError, match="key"):
        ev.create_eval_run(db, candidate="a", baseline="b", set_version_id=ref.id, judge={"model": "m", "api_key": "k"})
    run = ev.create_eval_run(db, candidate="v2", baseline="v1", set_version_id=ref.id,
                             judge={"base_url": "http://j", "model": "m"}, config={"max_tokens": 8})
    assert ev.get_eval_run(db, run)["status"] == "queued" and ev.get_eval_run(db, run)["total"] == 2
    ev.mark_eval_running(db, run, total=2)
    items = list(ev.iter_eval_items(db, ref.id))
    s = SideScores(chars=1, words=1)
    results = [ItemResult(items[0]["id"], 0, "x", "y", "stop", "stop", s, s, "candidate", "better"),
               ItemResult(items[1]["id"], 1, "x", "y", "stop", "length", s, s, "unparsable", "?", ["raw1", "raw2"])]
    for n, r in enumerate(results, 1):
        ev.record_item_result(db, run, r.to_row(), done=n)
    assert ev.get_eval_run(db, run)["done"] == 2
    ev.finish_eval_run(db, run, "done", summary=summarize(results, judge_model="m").to_json())
    view = ev.item_results(db, run)
    assert [r["verdict"] for r in view] == ["candidate", "unparsable"]
    assert view[0]["reference"] == "r1" and view[1]["judge_raw"] == ["raw1", "raw2"]
    assert ev.latest_done_run(db, "v2", "v1")["id"] == run and ev.latest_done_run(db, "v1", "v2") is None
    assert ev.judge_comparisons(db) == [{"a": "v2", "b": "v1", "winner": "a", "source": "judge"}]
    with pytest.raises(ValueError):
        ev.finish_eval_run(db, run, "running")


def test_allowlist_and_grounding_texts(db):
    ev.add_allowed(db, "link", "docs.example.org")
    ev.add_allowed(db, "link", "docs.example.org")
    with pytest.raises(ValueError, match="kind"):
        ev.add_allowed(db, "fax", "1")
    assert ev.allowlist(db)["link"] == ["docs.example.org"]
    create_version(db, "d", [NewConversation("h", [{"role": "user", "content": "see https://x.example/a"}])])
    assert "see https://x.example/a" in list(ev.grounding_texts(db))
    assert ev.remove_allowed(db, "link", "docs.example.org")


# --- evalsets builders ---
def test_cut_at_last_assistant():
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]
    prompt, ref = cut_at_last_assistant(msgs)
    assert ref == "a2" and [m["content"] for m in prompt] == ["s", "q1", "a1", "q2"]
    assert cut_at_last_assistant([{"role": "user", "content": "q"}]) is None


def test_heldout_items_are_exactly_the_trainers_held_out_split():
    convs = [conv(f"q{i}", f"a{i}") for i in range(20)]
    items = heldout_items(convs, eval_fraction=0.2, seed=7)
    _, held = split_conversations(convs, 0.2, 7)
    assert [i.messages[0]["content"] for i in items] == [c["messages"][0]["content"] for c in held]
    assert len(items) == 4 and items[0].reference.startswith("a")


def test_build_from_run_reads_the_runs_config(db):
    ref, _, _ = create_version(db, "d", [NewConversation(f"h{i}", conv(f"q{i}", f"a{i}")["messages"])
                                         for i in range(10)])
    run = create_run(db, config={"dataset_version_id": ref.id, "eval_fraction": 0.2, "seed": 3}, method="sft",
                     dataset_version_id=ref.id, base_model="m", parent_adapter_id=None, runs_dir="/tmp/r")
    got = build_from_run(db, "held", run)
    items = list(ev.iter_eval_items(db, got.id))
    assert len(items) == 2 and ev.list_eval_sets(db)[0]["versions"][0]["source_kind"] == "heldout"
    no_split = create_run(db, config={"dataset_version_id": ref.id, "eval_fraction": 0.0}, method="sft",
                          dataset_version_id=ref.id, base_model="m", parent_adapter_id=None, runs_dir="/tmp/r")
    with pytest.raises(NoEvalItems, match="held nothing out"):
        build_from_run(db, "held", no_split)


def test_build_from_file_in_any_import_format(db, tmp_path):
    path = tmp_path / "golden.jsonl"
    path.write_text("\n".join(json.dumps(conv(f"Question {i}?", f"Answer {i}.")) for i in range(3)) + "\n")
    ref, report = build_from_file(db, "golden", path)
    assert report["items"] == 3 and report["format"] == "openai"
    assert [i["reference"] for i in ev.iter_eval_items(db, ref.id)] == ["Answer 0.", "Answer 1.", "Answer 2."]


def test_corrections_become_golden_items(db):
    rows = [{"id": 1, "kind": "correction", "value": " Within 30 days. ", "context": json.dumps(
        [{"role": "user", "content": "Refund?"}])},
            {"id": 2, "kind": "thumb", "value": "up", "context": "[]"},
            {"id": 3, "kind": "correction", "value": "x", "context": "[]"}]
    items = correction_items(rows)
    assert len(items) == 1 and items[0].reference == "Within 30 days." and items[0].meta["rating_id"] == 1
    with pytest.raises(NoEvalItems, match="no corrected answer"):
        build_from_corrections(db, "golden")


def test_manual_items_are_validated_at_once():
    it = manual_item("Can I return it?", reference="Yes, within 30 days.", system="Be brief.",
                     checks=[{"name": "states the 30-day rule", "kind": "must_mention", "value": "30 days"}])
    assert it.messages[0]["role"] == "system" and it.checks[0]["value"] == ["30 days"]
    with pytest.raises(ValueError, match="user turn"):
        manual_item("   ")


def test_exclude_eval_overlap_matches_normalised_prompts_at_every_trained_turn():
    evals = [item("How do I get a REFUND?", "30 days")]
    convs = [conv("how do i  get a refund?", "whatever", system="other system"),  # same prompt, normalised
             {"messages": [{"role": "user", "content": "How do I get a refund?"},
                           {"role": "assistant", "content": "30 days"}, {"role": "user", "content": "thanks"},
                           {"role": "assistant", "content": "welcome"}]},  # its first trained turn answers it
             conv("How do I get a refund for shoes?", "x"),
             {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                           {"role": "user", "content": "How do I get a refund?"},
                           {"role": "assistant", "content": "..."}]}]  # another prompt (more context): kept
    kept, dropped = exclude_eval_overlap(convs, evals)
    assert kept == convs[2:] and dropped == convs[:2]
    assert exclude_eval_overlap(convs, {prompt_key(evals[0].messages)})[1] == convs[:2]
    assert exclude_eval_overlap(convs, [])[0] == convs


# --- deployments ---
def adapter(db, name, *, parent=None, run_id=None):
    return register_adapter(db, name=name, family="f", version=1, base_model="m", path=f"/a/{name}", rank=8,
                            run_id=run_id, dataset_version_id=None, parent_id=parent)


def done_run(db, candidate, baseline, *, wins=9, losses=1, cand_check=1.0, base_check=0.5):
    ref = ev.create_eval_set_version(db, f"s-{candidate}-{baseline}", [item("q", "r")], source_kind="manual")
    run = ev.create_eval_run(db, candidate=candidate, baseline=baseline, set_version_id=ref.id,
                             judge={"base_url": "u", "model": "j"})
    c = SideScores(similarity=0.8, rouge_l=0.5, checks={"rule": True})
    b = SideScores(similarity=0.8, rouge_l=0.5, checks={"rule": False})
    results = [ItemResult(1, i, "", "", "stop", "stop", c if i < cand_check * 10 else b,
                          c if i < base_check * 10 else b, "candidate" if i < wins else "baseline")
               for i in range(wins + losses)]
    ev.finish_eval_run(db, run, "done", summary=summarize(results, judge_model="j").to_json())
    return run


def test_promote_through_the_gate_resolve_and_roll_back(db):
    adapter(db, "v1")
    adapter(db, "v2")
    with pytest.raises(GateRefused, match="no finished evaluation of v1 against base"):
        promote(db, "v1", to="support", by="ana", base_model_name=BASE)
    run1 = done_run(db, "v1", BASE)
    change = promote(db, "v1", to="support", by="ana", base_model_name=BASE)
    assert (change.action, change.from_target, change.to_target, change.eval_run_id) == ("promote", None, "v1", run1)
    assert resolve_model(db, "support", BASE) == "v1" and resolve_model(db, "nope", BASE) is None
    done_run(db, "v2", "v1")
    promote(db, "v2", to="support", by="bo", base_model_name=BASE)
    assert resolve_model(db, "support", BASE) == "v2"
    back = rollback(db, "support", by="ana")
    assert (back.from_target, back.to_target) == ("v2", "v1") and resolve_model(db, "support", BASE) == "v1"
    assert rollback(db, "support", by="ana").to_target is None  # back to the base model
    assert resolve_model(db, "support", BASE) == BASE
    with pytest.raises(DeploymentError, match="no earlier target"):
        rollback(db, "support", by="ana")
    history = list_deployments(db)[0]["history"]
    assert [h["action"] for h in history] == ["rollback", "rollback", "promote", "promote"]
    assert history[-1]["by"] == "ana" and history[-1]["gate"]["passed"] and history[-1]["eval_run_id"] == run1


def test_a_worse_adapter_is_refused_with_figures_and_can_be_forced_with_a_reason(db):
    adapter(db, "good")
    adapter(db, "bad")
    done_run(db, "good", BASE)
    promote(db, "good", to="support", by="ana", base_model_name=BASE)
    done_run(db, "bad", "good", wins=1, losses=9, cand_check=0.2, base_check=1.0)
    with pytest.raises(GateRefused) as exc:
        promote(db, "bad", to="support", by="ana", base_model_name=BASE)
    failing = {r.name: r for r in exc.value.decision.failing}
    assert set(failing) == {"judge_win_rate", "check:rule"}
    assert failing["check:rule"].figures["candidate"] == pytest.approx(0.2)
    assert "check:rule" in str(exc.value) and "force it with a reason" in str(exc.value)
    assert "--force" not in str(exc.value) and not exc.value.unevaluated  # flags are the CLI's words (ui.cli.deploy)
    assert resolve_model(db, "support", BASE) == "good"
    with pytest.raises(DeploymentError, match="needs a reason"):
        promote(db, "bad", to="support", by="ana", base_model_name=BASE, force_reason="  ")
    forced = promote(db, "bad", to="support", by="ana", base_model_name=BASE, force_reason="hotfix for launch")
    assert forced.action == "force" and resolve_model(db, "support", BASE) == "bad"
    event = list_deployments(db)[0]["history"][0]
    assert event["reason"] == "hotfix for launch" and not event["gate"]["passed"]
    # A looser rule set lets it through without forcing.
    done_run(db, "good", "bad")
    promote(db, "good", to="support", by="ana", base_model_name=BASE, rules=GateRules(min_judge_win_lower=None))


def test_promotion_refusals_for_bad_names_archived_adapters_and_no_change(db):
    adapter(db, "v1")
    with pytest.raises(DeploymentError, match="adapter's name"):
        promote(db, BASE, to="v1", by="a", base_model_name=BASE)
    with pytest.raises(DeploymentError, match="not allowed"):
        promote(db, BASE, to="Bad Name", by="a", base_model_name=BASE)
    with pytest.raises(DeploymentError, match="no adapter named"):
        promote(db, "ghost", to="support", by="a", base_model_name=BASE)
    set_status(db, "v1", "archived")
    with pytest.raises(DeploymentError, match="archived"):
        promote(db, "v1", to="support", by="a", base_model_name=BASE)
    assert promote(db, BASE, to="support", by="a", base_model_name=BASE).decision is None  # base: nothing to compare
    with pytest.raises(DeploymentError, match="already serves"):
        promote(db, BASE, to="support", by="a", base_model_name=BASE)


def test_eval_run_given_must_match_the_pair_and_be_done(db):
    adapter(db, "v1")
    other = done_run(db, "v1", "elsewhere")
    with pytest.raises(DeploymentError, match="not v1 with base"):
        promote(db, "v1", to="support", by="a", base_model_name=BASE, eval_run_id=other)


def test_heldout_loss_enters_the_gate_when_the_baseline_is_the_runs_parent(db):
    run = create_run(db, config={}, method="sft", dataset_version_id=None, base_model="m",
                     parent_adapter_id=None, runs_dir="/tmp/r")
    mark_finished(db, run, "completed", metrics={"eval_loss": 3.0, "eval_loss_start": 2.5})
    adapter(db, "worse-loss", run_id=run)
    done_run(db, "worse-loss", BASE)
    with pytest.raises(GateRefused) as exc:
        promote(db, "worse-loss", to="support", by="a", base_model_name=BASE)
    assert [r.name for r in exc.value.decision.failing] == ["heldout_loss"]


def test_target_stack():
    ev_ = lambda a, f, t: {"action": a, "from_target": f, "to_target": t}  # noqa: E731
    assert target_stack([]) == []
    assert target_stack([ev_("promote", None, "v1"), ev_("promote", "v1", "v2"), ev_("rollback", "v2", "v1"),
                         ev_("force", "v1", "v3")]) == [None, "v1", "v3"]


def test_leaderboard_from_the_store_combines_judge_verdicts_labelled_by_source(db):
    from serving.evaluation.board import store_leaderboard

    ref = ev.create_eval_set_version(db, "lb", [item(f"q{i}") for i in range(10)], source_kind="manual")
    run = ev.create_eval_run(db, candidate="v1", baseline=BASE, set_version_id=ref.id)
    s = SideScores()
    for n, it in enumerate(ev.iter_eval_items(db, ref.id), 1):
        verdict = "candidate" if n <= 8 else "baseline"
        ev.record_item_result(db, run, ItemResult(it["id"], n, "", "", "stop", "stop", s, s, verdict).to_row(), done=n)
    ev.finish_eval_run(db, run, "done")
    board = store_leaderboard(db, bootstrap=20)
    assert [r.model for r in board] == ["v1", BASE] and board[0].by_source == {"judge": 10}
    assert store_leaderboard(db, sources=["people"]) == []
