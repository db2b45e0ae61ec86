"""Feedback rounds on a real SQLite database: build, refuse, window, replay, lineage, and the CLI.

Chats, A/B turns and ratings are written through store.chats and store.ratings (what the UI calls);
adapters and runs are registered with store functions, as training would (nothing is trained here).

Run: .venv/bin/python -m pytest tests/test_feedback_round.py -q
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from store import chats, ratings, runs
from store.adapters import get_adapter, register_adapter, set_status
from store.datasets import iter_version_conversations, resolve_version
from store.feedback import preference_counts, version_ratings
from store.lineage import adapter_lineage
from training.feedback_round import (
    FeedbackRefused, NoNewRatings, build_round, current_adapter, parse_since, replay_pool, trained_versions,
)
from training.importers.model import messages_hash
from ui.cli.feedback import next_command, train_command  # the CLI words the next step
from training.ingest import import_file

BASE_PATH = "/models/base"  # served (and rated) as "base"
SETTINGS = {"system_prompt": "You are Acme support.", "temperature": 0.7}
EXPORT = [
    {"messages": [{"role": "user", "content": f"Imported question {i}?"},
                  {"role": "assistant", "content": f"Imported answer {i}."}]} for i in range(3)
]
MORE = [
    {"messages": [{"role": "user", "content": "Where is my parcel?"},
                  {"role": "assistant", "content": "It arrives tomorrow."}]},
]


def counts(db) -> dict:
    return {t: db[t].count for t in ("dataset_versions", "feedback_builds", "version_ratings", "preference_examples",
                                     "version_conversations")}


def import_rows(db, tmp_path, name, rows, dataset="support"):
    f = tmp_path / name
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return import_file(db, f, dataset)


def add_adapter(db, name, version_ref, *, parent=None, method="sft", version=1):
    """Register a finished run and its adapter, as training.run does."""
    vid = resolve_version(db, version_ref).id
    parent_row = get_adapter(db, parent) if parent else None
    run_id = runs.create_run(db, config={"preset": "quick", "method": method, "dataset": version_ref,
                                         "from_adapter": parent},
                             method=method, dataset_version_id=vid, base_model=BASE_PATH,
                             parent_adapter_id=parent_row["id"] if parent_row else None, runs_dir="/tmp/runs")
    adapter_id = register_adapter(db, name=name, family="support", version=version, base_model=BASE_PATH,
                                  path=f"/adapters/{name}", rank=8, run_id=run_id, dataset_version_id=vid,
                                  parent_id=parent_row["id"] if parent_row else None, meta={"method": method})
    runs.mark_finished(db, run_id, "completed", adapter_id=adapter_id,
                       metrics={"final_loss": 1.25, "eval_loss_start": 1.9, "eval_loss": 1.4, "steps": 12})
    return adapter_id


def answer(db, i, model="support-v1", user="maria", text=None):
    """One single-model exchange; returns the answer's message id."""
    ex = chats.record_exchange(db, session_id=None, user=user, parent_id=None, question=f"Question {i}?",
                               answer=text or f"Answer {i} from {model}.", model=model, settings=SETTINGS)
    return ex.answer_id


def thumbs(db, start, n, value, user="maria", model="support-v1"):
    return [ratings.rate_message(db, kind="thumb", message_id=answer(db, i, model), value=value, user=user)
            for i in range(start, start + n)]


def ab(db, i, model_a="base", model_b="support-v1", value="b", user="joe"):
    turn = chats.record_ab_turn(db, session_id=None, user=user, question=f"A/B question {i}?", parent_a=None,
                                answer_a=f"{model_a} answer {i}", model_a=model_a, parent_b=None,
                                answer_b=f"{model_b} answer {i}", model_b=model_b, settings=SETTINGS, blind=True)
    return ratings.rate_turn(db, ab_turn_id=turn.ab_turn_id, value=value, user=user)


@pytest.fixture
def world(db, tmp_path):
    """support@1 imported, support-v1 trained on it, and ratings on support-v1's answers:
    4 thumbs up and 4 down by maria, one A/B verdict by joe (support-v1 better than base)."""
    import_rows(db, tmp_path, "export.jsonl", EXPORT)
    add_adapter(db, "support-v1", "support@1")
    up = thumbs(db, 0, 4, "up")
    down = thumbs(db, 4, 4, "down")
    verdict = ab(db, 0)
    return {"up": up, "down": down, "verdict": verdict}


# --- build ------------------------------------------------------------------------------------------

def test_build_writes_the_version_with_its_counts_and_a_snapshot_of_each_rating(db, world):
    rb = build_round(db, user="lead")
    assert str(rb.version) == "feedback@1" and rb.method == "sft+kto" and rb.requested_method == "auto"
    assert rb.from_adapter == "support-v1" and rb.previous is None and rb.since is None
    # 4 thumbs-up answers, plus round(0.2 * 4 / 0.8) = 1 conversation replayed from support@1.
    assert (rb.build.new_sft_count, rb.build.replay_count) == (4, 1)
    assert preference_counts(db, rb.version.id) == {"kto": 8, "kto_desirable": 4, "kto_undesirable": 4, "dpo": 0}
    convs = list(iter_version_conversations(db, rb.version.id))
    assert len(convs) == 5
    new = [c for c in convs if c["source"] == "feedback"]
    assert len(new) == 4 and all(c["meta"]["rating_ids"] for c in new)
    stored_hash = db.execute("select content_hash from conversations where id = ?", [new[0]["id"]]).fetchone()[0]
    assert stored_hash == messages_hash(new[0]["messages"])
    assert new[0]["messages"][-1]["weight"] == 1

    snapshot = version_ratings(db, rb.version.id)
    assert [r["id"] for r in snapshot] == sorted(world["up"] + world["down"])  # the verdict trains no SFT/KTO
    for r in snapshot:
        live = db["ratings"].get(r["id"])
        assert (r["kind"], r["value"], r["user"], r["rated_at"]) == (live["kind"], live["value"], "maria",
                                                                      live["updated_at"])
    build = db["feedback_builds"].get(rb.version.id)
    assert (build["method"], build["from_adapter"], build["user"]) == ("sft+kto", "support-v1", "lead")
    left = rb.report["left_out"]
    assert [(x["rating_id"], x["reason"]) for x in left] == [(world["verdict"], "not_used_by_method")]

    out = rb.to_json()
    assert out["version"] == "feedback@1" and out["counts"]["sft"] == 4 and out["counts"]["kto_undesirable"] == 4
    assert next_command(rb) == "tuneloop feedback train --version feedback@1"
    assert train_command(rb) == "tuneloop train --dataset feedback@1 --from-adapter support-v1 --method sft+kto"
    json.dumps(out)  # JSON-able as it is


def test_a_second_build_without_new_ratings_refuses_clearly_and_writes_nothing(db, world):
    build_round(db)
    before = counts(db)
    with pytest.raises(NoNewRatings) as err:
        build_round(db)
    message = str(err.value)
    assert message.startswith("no ratings since feedback@1 (") and "UTC)" in message
    assert "Compare A/B" in message and "build from all ratings" in message
    assert counts(db) == before


def test_a_rating_changed_after_a_build_is_offered_again_and_the_old_value_stays_in_the_snapshot(db, world):
    first = build_round(db)
    changed = world["up"][0]
    message_id = db["ratings"].get(changed)["message_id"]
    ratings.rate_message(db, kind="thumb", message_id=message_id, value="down", user="maria")  # at once
    before = counts(db)
    with pytest.raises(FeedbackRefused) as err:  # one rating is not enough for anything
        build_round(db, method="kto")
    assert err.value.build.report["ratings"] == 1
    assert err.value.build.provenance["kto"] == [(changed,)] and err.value.build.kto[0]["label"] is False
    assert counts(db) == before
    snap = {r["id"]: r for r in version_ratings(db, first.version.id)}
    assert (snap[changed]["value"], snap[changed]["value_now"]) == ("up", "down")


def test_taking_back_a_rating_a_build_used_works_and_the_lineage_keeps_what_was_trained(db, world):
    first = build_round(db)
    taken = world["up"][1]
    message_id = db["ratings"].get(taken)["message_id"]
    assert ratings.clear_rating(db, kind="thumb", user="maria", message_id=message_id)
    snap = {r["id"]: r for r in version_ratings(db, first.version.id)}
    assert (snap[taken]["value"], snap[taken]["user"], snap[taken]["value_now"]) == ("up", "maria", None)
    assert json.loads(snap[taken]["models"]) == {"model": "support-v1"}


def test_since_all_an_iso_time_and_a_bad_value(db, world):
    build_round(db)
    again = build_round(db, since="all", dry_run=True)
    assert again.build.report["ratings"] == 9 and again.since is None and again.previous is None
    assert "--since all" in next_command(again)
    assert build_round(db, since="2000-01-01", dry_run=True).since == "2000-01-01T00:00:00.000+00:00"
    with pytest.raises(NoNewRatings, match=r"no ratings since 2099-01-01 00:00 UTC; .*from an earlier date"):
        build_round(db, since="2099-01-01")
    with pytest.raises(ValueError, match="is not a date or time: use 'all', a date like 2026-11-20"):
        build_round(db, since="yesterday")


@pytest.mark.parametrize("text, bound", [
    (None, (False, None)), ("all", (True, None)), ("ALL", (True, None)),
    ("2026-11-20", (True, "2026-11-20T00:00:00.000+00:00")),
    ("2026-11-20 14:30", (True, "2026-11-20T14:30:00.000+00:00")),
    ("2026-11-20T14:30+01:00", (True, "2026-11-20T13:30:00.000+00:00")),
    ("2026-11-20T14:30:05Z", (True, "2026-11-20T14:30:05.000+00:00")),
])
def test_parse_since(text, bound):
    assert parse_since(text) == bound


def test_auto_picks_the_richest_method_the_ratings_support(db, world):
    assert build_round(db, dry_run=True).method == "sft+kto"
    for i in range(1, 8):  # 8 verdicts in all -> 8 DPO pairs
        ab(db, i)
    assert build_round(db, dry_run=True).method == "sft+dpo"


def test_auto_with_only_verdicts_picks_dpo(db):
    for i in range(8):
        ab(db, i, value="a" if i % 2 else "b")
    rb = build_round(db, dry_run=True)
    assert rb.method == "dpo" and len(rb.build.dpo) == 8 and rb.from_adapter is None


def test_auto_with_too_little_refuses_with_the_closest_methods_message(db):
    thumbs(db, 0, 2, "up")
    with pytest.raises(FeedbackRefused, match=r"^SFT needs at least 4 examples; all the feedback so far has 2"):
        build_round(db)
    for i in range(6):
        ab(db, i)
    with pytest.raises(FeedbackRefused, match=r"^DPO needs at least 8 preference pairs; .* has 6") as err:
        build_round(db)
    assert err.value.method == "dpo"
    assert db["dataset_versions"].count == 0


def test_an_explicit_method_without_enough_data_is_refused_naming_the_minimum(db, world):
    before = counts(db)
    with pytest.raises(FeedbackRefused, match=r"DPO needs at least 8 preference pairs; .* has 1 \(from 1 A/B verdict\)"):
        build_round(db, method="dpo")
    assert counts(db) == before
    with pytest.raises(ValueError, match="unknown method"):
        build_round(db, method="ppo")


def test_dry_run_writes_nothing(db, world):
    before = counts(db)
    rb = build_round(db, dry_run=True)
    assert rb.version is None and rb.dry_run and rb.build.rating_ids
    assert next_command(rb) == "tuneloop feedback build --method sft+kto --from-adapter support-v1"
    assert train_command(rb) is None
    assert counts(db) == before


def test_replay_comes_from_the_data_the_current_adapter_and_its_ancestors_trained_on(db, world, tmp_path):
    first = build_round(db)
    support = {messages_hash(c["messages"]) for c in iter_version_conversations(db, resolve_version(db, "support@1").id)}
    replayed = first.build.sft[first.build.new_sft_count:]
    assert len(replayed) == 1 and messages_hash(replayed[0]["messages"]) in support

    add_adapter(db, "support-v2", str(first.version), parent="support-v1", method="sft+kto", version=2)
    v2 = get_adapter(db, "support-v2")
    assert current_adapter(db)["name"] == "support-v2"
    assert trained_versions(db, v2) == [first.version.id, resolve_version(db, "support@1").id]
    pool = {messages_hash(c["messages"]) for c in replay_pool(db, v2)}
    assert support <= pool and len(pool) == 3 + 4  # support@1's three and feedback@1's four new ones, once each
    set_status(db, "support-v2", "archived")
    assert current_adapter(db)["name"] == "support-v1"  # archived adapters are not "current"


def test_an_imported_dataset_does_not_take_feedback_versions(db, world):
    with pytest.raises(ValueError, match="holds imported conversations"):
        build_round(db, dataset="support")


# --- lineage ----------------------------------------------------------------------------------------

def test_lineage_goes_back_to_the_first_import_with_the_ratings_and_the_ab_record(db, world, tmp_path):
    import_rows(db, tmp_path, "more.jsonl", MORE)  # support@2 = support@1 + one more conversation
    db.execute("update adapters set dataset_version_id = ? where name = 'support-v1'",
               [resolve_version(db, "support@2").id])
    first = build_round(db)
    add_adapter(db, "support-v2", str(first.version), parent="support-v1", method="sft+kto", version=2)
    for i, value in enumerate(["a", "a", "b", "a", "tie"]):  # support-v2 is A: 3 wins, 1 loss, 1 tie
        ab(db, 100 + i, model_a="support-v2", model_b="support-v1", value=value, user="maria")

    rounds = adapter_lineage(db, "support-v2", base_name="base")
    assert [r["round"] for r in rounds] == [2, 1]
    assert [r["adapter"]["name"] for r in rounds] == ["support-v2", "support-v1"]
    latest, first_round = rounds
    assert latest["parent"] == "support-v1" and latest["adapter"]["method"] == "sft+kto"
    assert latest["run"]["preset"] == "quick" and latest["run"]["metrics"]["final_loss"] == 1.25
    data = latest["dataset"]
    assert (data["ref"], data["kind"]) == ("feedback@1", "feedback")
    assert data["build"]["method"] == "sft+kto" and data["build"]["ratings_used"] == 8
    assert {(r["user"], r["kind"]) for r in data["ratings"]} == {("maria", "thumb")}
    assert all(r["rated_at"] and r["models"] == {"model": "support-v1"} for r in data["ratings"])
    assert latest["ab"] == {**latest["ab"], "opponent": "support-v1", "opponent_kind": "adapter", "wins": 3,
                            "losses": 1, "ties": 1, "both_bad": 0, "decisive": 4}
    assert 0 < latest["ab"]["ci_low"] < 0.75 < latest["ab"]["ci_high"] <= 1

    assert first_round["parent"] is None and first_round["dataset"]["ref"] == "support@2"
    files = first_round["dataset"]["files"]
    assert [(f["name"], f["version"], f["format"], f["imported"]) for f in files] == [
        ("export.jsonl", "support@1", "openai", 3), ("more.jsonl", "support@2", "openai", 1)]
    assert all(len(f["sha256"]) == 64 for f in files)
    assert first_round["dataset"]["conversation_count"] == 4 == len(first_round["dataset"]["conversation_ids"])
    assert first_round["ab"]["opponent"] == "base" and first_round["ab"]["wins"] == 1  # the fixture's verdict
    json.dumps(rounds)


def test_lineage_of_an_unknown_adapter_says_so(db):
    from store.adapters import AdapterNotFound

    with pytest.raises(AdapterNotFound, match="no adapter named 'nope'"):
        adapter_lineage(db, "nope")


# --- CLI --------------------------------------------------------------------------------------------

runner = CliRunner()


def invoke(*args):
    from ui.cli import app

    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def cli_world(world, monkeypatch):
    monkeypatch.setenv("TUNELOOP_BASE_MODEL", BASE_PATH)
    monkeypatch.setenv("TUNELOOP_BASE_MODEL_NAME", "base")
    return world


def test_cli_build_json_then_refuses_a_second_build(db, cli_world):
    result = invoke("feedback", "build", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["version"] == "feedback@1" and out["method"] == "sft+kto" and out["from_adapter"] == "support-v1"
    assert out["counts"] == {"sft": 4, "replay": 1, "kto": 8, "kto_desirable": 4, "kto_undesirable": 4, "dpo": 0}
    assert out["ratings"] == {"read": 9, "used": 8, "left_out": 1}
    assert out["left_out"][0]["reason"] == "not_used_by_method"
    assert out["next_command"] == "tuneloop feedback train --version feedback@1"
    assert db["feedback_builds"].count == 1

    again = invoke("feedback", "build")
    assert again.exit_code == 1 and "no ratings since feedback@1" in again.output
    again = invoke("feedback", "build", "--json")
    assert again.exit_code == 1 and json.loads(again.output)["error"].startswith("no ratings since feedback@1")
    assert db["feedback_builds"].count == 1


def test_cli_build_text_prints_the_report_the_version_and_the_next_command(db, cli_world):
    result = invoke("feedback", "build", "--method", "sft")
    assert result.exit_code == 0, result.output
    assert "Feedback build for SFT" in result.output and "SFT: 4 examples" in result.output
    assert "Made feedback@1; the next round will continue from support-v1." in result.output
    assert "Next: tuneloop feedback train --version feedback@1" in result.output
    assert "tuneloop train --dataset feedback@1 --from-adapter support-v1 --method sft" in result.output


def test_cli_build_errors_exit_non_zero_and_write_nothing(db, cli_world):
    before = counts(db)
    bad_since = invoke("feedback", "build", "--since", "last tuesday")
    assert bad_since.exit_code == 2 and "is not a date or time" in bad_since.output
    bad_method = invoke("feedback", "build", "--method", "ppo", "--json")
    assert bad_method.exit_code == 2 and "--method 'ppo' is not one of" in json.loads(bad_method.output)["error"]
    unknown = invoke("feedback", "build", "--from-adapter", "nope")
    assert unknown.exit_code == 2 and "no adapter named 'nope'" in unknown.output
    short = invoke("feedback", "build", "--method", "dpo", "--json")
    assert short.exit_code == 1
    out = json.loads(short.output)
    assert out["error"].startswith("DPO needs at least 8 preference pairs") and out["report"]["ratings"] == 9
    text = invoke("feedback", "build", "--method", "dpo")
    assert text.exit_code == 1 and "refused, nothing written: DPO needs at least 8" in text.output
    dry = invoke("feedback", "build", "--dry-run", "--json")
    assert dry.exit_code == 0 and json.loads(dry.output)["version"] is None and json.loads(dry.output)["dry_run"]
    assert counts(db) == before


def test_cli_list_shows_builds(db, cli_world):
    assert "no feedback builds yet" in invoke("feedback", "list").output
    assert invoke("feedback", "build").exit_code == 0
    rows = json.loads(invoke("feedback", "list", "--json").output)
    assert len(rows) == 1
    row = rows[0]
    assert (row["version"], row["method"], row["from_adapter"], row["ratings_used"]) == (
        "feedback@1", "sft+kto", "support-v1", 8)
    assert row["counts"]["sft"] == 4 and row["counts"]["kto"] == 8 and row["created_at"]
    text = invoke("feedback", "list").output
    assert "feedback@1" in text and "4 SFT, 8 KTO, 1 replayed" in text and "from support-v1" in text


def test_cli_train_needs_a_feedback_version(db, cli_world):
    none = invoke("feedback", "train")
    assert none.exit_code == 1 and "no feedback version yet" in none.output
    imported = invoke("feedback", "train", "--version", "support@1", "--json")
    assert imported.exit_code == 2 and "is not a feedback version" in json.loads(imported.output)["error"]


def test_cli_lineage_text_and_json(db, cli_world):
    assert invoke("feedback", "build").exit_code == 0
    add_adapter(db, "support-v2", "feedback@1", parent="support-v1", method="sft+kto", version=2)
    ab(db, 50, model_a="support-v2", model_b="support-v1", value="a", user="maria")

    result = invoke("adapters", "lineage", "support-v2")
    assert result.exit_code == 0, result.output
    text = result.output
    assert text.startswith("support-v2: 2 rounds, newest first")
    assert "Round 2 · support-v2" in text and "Round 1 · support-v1" in text
    assert "Data: feedback@1 (feedback): 5 conversations, 8 KTO rows (4 good, 4 bad)" in text
    assert "maria: thumbs up on support-v1" in text and "maria: thumbs down on support-v1" in text
    assert "A/B vs support-v1: 1 win, 0 losses, 0 ties, 0 both bad; 100% (95% CI" in text
    assert "A/B vs base (base model): 1 win" in text
    assert "export.jsonl (openai, sha256 " in text and "added in support@1" in text
    assert "run #2 completed, method sft+kto, preset quick, continuing from support-v1" in text

    out = json.loads(invoke("adapters", "lineage", "support-v2", "--json").output)
    assert out["adapter"] == "support-v2" and [r["adapter"]["name"] for r in out["rounds"]] == [
        "support-v2", "support-v1"]
    assert out["rounds"][0]["ab"]["opponent"] == "support-v1"

    missing = invoke("adapters", "lineage", "nope")
    assert missing.exit_code == 1 and "no adapter named 'nope'" in missing.output


def test_lineage_text_cuts_long_corrections_only_in_text():
    from ui.text import rating_text

    long_fix = "word " * 40
    x = {"kind": "correction", "value": long_fix, "value_now": long_fix, "models": {"model": "support-v2"}}
    text = rating_text(x)
    assert text.startswith('correction "word word') and "…\" on support-v2" in text and len(text) < 100
    assert rating_text({**x, "value_now": "other"}).endswith("(changed since)")
    verdict = {"kind": "verdict", "value": "a", "value_now": "a", "models": {"a": "v2", "b": "base"}}
    assert rating_text(verdict) == "A better (A: v2, B: base)"
