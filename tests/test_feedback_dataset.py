"""The feedback dataset builder (training/feedback_dataset.py): one test per rule of its docstring.

Pure and fast: `.venv/bin/python -m pytest tests/test_feedback_dataset.py -q`. The fixture
tests/fixtures/feedback/ratings.json holds twelve ratings of support chats (a refund, a password
reset, a delivery address change, a cancellation) from four people; smaller cases are built inline.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from training.feedback_dataset import (
    DEFAULT_MINIMUMS,
    METHODS,
    REASONS,
    FeedbackBuild,
    RatingRecord,
    build_feedback_dataset,
    check_enough,
    format_report,
    kto_weights,
    method_parts,
)

FIXTURE = Path(__file__).parent / "fixtures" / "feedback" / "ratings.json"


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def records(rows) -> list[RatingRecord]:
    return [RatingRecord.from_row(r) for r in rows]


@pytest.fixture(scope="module")
def text(rows) -> dict:
    """Contexts and answers of the fixture by name, to build inline cases from."""
    by_id = {r["id"]: r for r in rows}
    return {
        "refund": by_id[1]["context"], "password": by_id[3]["context"], "address": by_id[5]["context"],
        "cancel": by_id[6]["context"],
        "refund_good": by_id[1]["answer"], "refund_bad": by_id[2]["answer"], "refund_fix": by_id[7]["value"],
        "password_good": by_id[3]["answer"], "password_bad": by_id[4]["answer"],
        "address_good": by_id[5]["answer"], "address_alt": by_id[11]["answer_b"],
        "cancel_good": by_id[12]["answer"], "cancel_bad": by_id[6]["answer"],
    }


_ids = itertools.count(1000)


def thumb(ctx, answer, value, *, user="ana", model="acme-v1", message_id=None, at="2025-03-05T10:00:00", **kw):
    return RatingRecord(id=kw.pop("id", next(_ids)), kind="thumb", user=user, created_at=at, value=value,
                        context=ctx, message_id=message_id, model=model, answer=answer, **kw)


def correction(ctx, answer, fixed, *, user="ana", model="base", message_id=None, at="2025-03-05T10:00:00", **kw):
    return RatingRecord(id=kw.pop("id", next(_ids)), kind="correction", user=user, created_at=at, value=fixed,
                        context=ctx, message_id=message_id, model=model, answer=answer, **kw)


def verdict(ctx, a, b, value, *, user="ana", model_a="acme-v1", model_b="base", ids=(None, None),
            at="2025-03-05T10:00:00", **kw):
    return RatingRecord(id=kw.pop("id", next(_ids)), kind="verdict", user=user, created_at=at, value=value,
                        context=ctx, ab_turn_id=kw.pop("ab_turn_id", None), message_a_id=ids[0],
                        message_b_id=ids[1], answer_a=a, answer_b=b, model_a=model_a, model_b=model_b, **kw)


def left_out(build: FeedbackBuild) -> dict[int, str]:
    return {x["rating_id"]: x["reason"] for x in build.report["left_out"]}


def answers(rows_: list[dict], field: str) -> list[str]:
    return [r[field][-1]["content"] for r in rows_]


# --- the record ----------------------------------------------------------------------------------

def test_from_row_parses_stored_json_context_and_ignores_unknown_columns(rows):
    row = dict(rows[6], settings="{}", models='{"model": "base"}')
    assert isinstance(row["context"], str)  # rating 7 keeps the context as the DB stores it
    record = RatingRecord.from_row(row)
    assert record.context[-1]["role"] == "user" and record.kind == "correction"
    with pytest.raises(Exception):
        record.value = "x"  # frozen


# --- rule 7 / output 1: SFT ----------------------------------------------------------------------

def test_sft_from_thumbs_up_and_corrections(records, text):
    build = build_feedback_dataset(records, method="sft")
    assert answers(build.sft, "messages") == [
        text["refund_good"], text["password_good"], text["address_good"], text["refund_fix"], text["cancel_good"]]
    assert build.provenance["sft"] == [(1,), (3,), (5,), (7,), (12,)]
    assert build.rating_ids == (1, 3, 5, 7, 12)
    multi_turn = build.sft[2]["messages"]
    assert [m["role"] for m in multi_turn] == ["system", "user", "assistant", "user", "assistant"]
    assert multi_turn[2]["weight"] == 0 and multi_turn[-1]["weight"] == 1  # only the rated turn trains
    assert all("weight" not in m for m in multi_turn if m["role"] != "assistant")
    assert multi_turn[:-1] == [dict(m, weight=0) if m["role"] == "assistant" else m for m in text["address"]]
    # thumbs-down and verdicts feed other methods: reported, not silently dropped
    assert left_out(build) == {2: "not_used_by_method", 4: "not_used_by_method", 6: "not_used_by_method",
                               8: "not_used_by_method", 9: "not_used_by_method", 10: "not_used_by_method",
                               11: "tie"}
    assert build.kto == [] and build.dpo == []


# --- output 2: KTO rows and weights --------------------------------------------------------------

def test_kto_rows_and_labels_from_thumbs(records, text):
    build = build_feedback_dataset(records, method="kto")
    labels = {r["completion"][0]["content"]: r["label"] for r in build.kto}
    assert labels == {text["refund_good"]: True, text["refund_bad"]: False, text["password_good"]: True,
                      text["password_bad"]: False, text["address_good"]: True, text["cancel_bad"]: False,
                      text["cancel_good"]: True}
    first = build.kto[0]
    assert first["prompt"] == text["refund"]
    assert first["completion"] == [{"role": "assistant", "content": text["refund_good"]}]
    assert build.kto_counts == (4, 3)
    assert (build.desirable_weight, build.undesirable_weight) == kto_weights(4, 3)
    assert build.report["kto"]["desirable"] == 4 and build.report["kto"]["undesirable"] == 3
    assert left_out(build)[7] == "not_used_by_method"  # corrections train SFT and DPO, not KTO


@pytest.mark.parametrize(("d", "u", "expected"), [
    (10, 10, (1.0, 1.0)),
    (12, 10, (1.0, 1.0)),          # 1.2 already in [1, 4/3]
    (4, 3, (1.0, 1.0)),            # exactly 4/3
    (20, 5, (1.0, 6 * 20 / 35)),   # desirable-heavy: raise undesirable
    (5, 20, (7 * 20 / 30, 1.0)),   # undesirable-heavy: raise desirable
    (9, 10, (7 * 10 / 54, 1.0)),
    (0, 5, (1.0, 1.0)), (5, 0, (1.0, 1.0)), (0, 0, (1.0, 1.0)),
])
def test_kto_weights_examples(d, u, expected):
    assert kto_weights(d, u) == pytest.approx(expected)
    if d and u:
        dw, uw = kto_weights(d, u)
        assert 1 <= dw * d / (uw * u) <= 4 / 3


@given(st.integers(1, 10**6), st.integers(1, 10**6))
def test_kto_weights_ratio_always_within_trl_band(d, u):
    dw, uw = kto_weights(d, u)
    assert 1 - 1e-9 <= (dw * d) / (uw * u) <= 4 / 3 + 1e-9
    assert min(dw, uw) == 1.0 and max(dw, uw) >= 1.0  # the larger side keeps 1.0


@pytest.mark.parametrize("bad", [(-1, 3), (3, -2), (1.5, 2), (True, 2)])
def test_kto_weights_rejects_bad_counts(bad):
    with pytest.raises(ValueError):
        kto_weights(*bad)


# --- rule 5 / output 3: DPO ----------------------------------------------------------------------

def test_dpo_pairs_from_verdicts_winner_chosen_loser_rejected(text):
    build = build_feedback_dataset([
        verdict(text["refund"], text["refund_bad"], text["refund_good"], "b", id=1),
        verdict(text["password"], text["password_good"], text["password_bad"], "a", id=2),
    ], method="dpo")
    assert build.dpo == [
        {"prompt": text["refund"], "chosen": [{"role": "assistant", "content": text["refund_good"]}],
         "rejected": [{"role": "assistant", "content": text["refund_bad"]}]},
        {"prompt": text["password"], "chosen": [{"role": "assistant", "content": text["password_good"]}],
         "rejected": [{"role": "assistant", "content": text["password_bad"]}]},
    ]
    assert build.rating_ids == (1, 2) and build.report["sources"]["dpo"] == {"verdict": 2}


def test_correction_is_chosen_over_both_answers_of_its_ab_turn(records, text):
    build = build_feedback_dataset(records, method="dpo")
    pairs = [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in build.dpo]
    assert pairs == [  # in rating-id order
        (text["refund_fix"], text["refund_bad"]),    # correction 7, matched to A/B turn 1 by message id 12
        (text["refund_fix"], text["refund_good"]),   # ... and chosen over the other answer too
        (text["refund_good"], text["refund_bad"]),   # verdict 8 (b won)
        (text["password_good"], text["password_bad"]),
        (text["cancel_good"], text["cancel_bad"]),
    ]
    assert build.provenance["dpo"] == [(7,), (7,), (8,), (9,), (10,)]


def test_correction_matches_ab_turn_by_context_without_message_ids(text):
    build = build_feedback_dataset([
        verdict(text["refund"], text["refund_good"], text["refund_bad"], "a", id=1),
        correction(text["refund"], "  " + text["refund_bad"] + "\n", text["refund_fix"], id=2),
    ], method="dpo")
    rejected = [r["rejected"][0]["content"] for r in build.dpo if r["chosen"][0]["content"] == text["refund_fix"]]
    assert rejected == [text["refund_bad"], text["refund_good"]]


def test_correction_outside_ab_is_chosen_over_the_answer_it_corrects(text):
    build = build_feedback_dataset([correction(text["refund"], text["refund_bad"], text["refund_fix"], id=1)],
                                   method="sft+dpo")
    assert answers(build.sft, "messages") == [text["refund_fix"]]
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in build.dpo] == [
        (text["refund_fix"], text["refund_bad"])]


def test_tie_is_skipped_but_its_correction_still_gives_two_pairs(text):
    tie = verdict(text["address"], text["address_good"], text["address_alt"], "tie", ids=(31, 32), id=1)
    build = build_feedback_dataset([tie], method="dpo")
    assert build.dpo == [] and left_out(build) == {1: "tie"}
    better = ("Yes, until it is out for delivery: open the DHL link in your shipping email and pick "
              "'Change delivery address'.")
    fix = correction(text["address"], text["address_alt"], better, message_id=32, id=2)
    build = build_feedback_dataset([tie, fix], method="dpo")
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in build.dpo] == [
        (better, text["address_alt"]), (better, text["address_good"])]
    assert left_out(build) == {1: "tie"} and build.rating_ids == (2,)


def test_both_bad_becomes_kto_negatives_not_dpo_pairs(text):
    both_bad = verdict(text["password"], text["password_bad"], "Passwords cannot be reset.", "both_bad", id=1)
    dpo = build_feedback_dataset([both_bad], method="dpo")
    assert dpo.dpo == [] and left_out(dpo) == {1: "not_used_by_method"}
    assert "KTO" in dpo.report["left_out"][0]["detail"]
    kto = build_feedback_dataset([both_bad], method="sft+kto")
    assert [(r["completion"][0]["content"], r["label"]) for r in kto.kto] == [
        (text["password_bad"], False), ("Passwords cannot be reset.", False)]
    assert kto.sft == [] and kto.rating_ids == (1,) and kto.report["sources"]["kto"] == {"verdict": 1}


def test_both_bad_with_a_correction_gives_pairs_and_negatives(text):
    both_bad = verdict(text["refund"], text["refund_bad"], "Refunds take 90 days.", "both_bad", ids=(12, 13), id=1)
    fix = correction(text["refund"], text["refund_bad"], text["refund_fix"], message_id=12, id=2)
    build = build_feedback_dataset([both_bad, fix], method="dpo")
    assert [r["rejected"][0]["content"] for r in build.dpo] == [text["refund_bad"], "Refunds take 90 days."]
    assert build.rating_ids == (2,)


# --- rule 4: conflicts between people ------------------------------------------------------------

def test_thumbs_conflict_between_two_people_is_dropped_and_reported(text):
    build = build_feedback_dataset([
        thumb(text["refund"], text["refund_good"], "up", user="ana", id=1),
        thumb(text["refund"], text["refund_good"], "down", user="ben", id=2),
        thumb(text["password"], text["password_good"], "up", user="ben", id=3),
    ], method="sft+kto")
    assert answers(build.sft, "messages") == [text["password_good"]]
    assert [r["completion"][0]["content"] for r in build.kto] == [text["password_good"]]
    assert left_out(build) == {1: "conflict", 2: "conflict"}
    assert "ana: up" in build.report["left_out"][0]["detail"] and "ben: down" in build.report["left_out"][0]["detail"]
    assert build.report["left_out_by_reason"] == {"conflict": 2}


def test_thumbs_majority_wins_and_the_minority_is_outvoted(text):
    build = build_feedback_dataset([
        thumb(text["refund"], text["refund_good"], "up", user="ana", id=1),
        thumb(text["refund"], text["refund_good"], "down", user="ben", id=2),
        thumb(text["refund"], text["refund_good"], "up", user="carla", id=3),
    ], method="kto")
    assert [r["label"] for r in build.kto] == [True]
    assert build.provenance["kto"] == [(1, 3)] and left_out(build) == {2: "outvoted"}


def test_verdicts_disagreeing_are_a_conflict_even_with_sides_swapped(text):
    build = build_feedback_dataset([
        verdict(text["refund"], text["refund_good"], text["refund_bad"], "a", user="ana", id=1),
        # ben saw the same two answers on the other sides and preferred the short one
        verdict(text["refund"], text["refund_bad"], text["refund_good"], "a", user="ben", model_a="base",
                model_b="acme-v1", id=2),
    ], method="dpo")
    assert build.dpo == [] and left_out(build) == {1: "conflict", 2: "conflict"}


def test_verdicts_agreeing_with_sides_swapped_give_one_pair(text):
    build = build_feedback_dataset([
        verdict(text["refund"], text["refund_good"], text["refund_bad"], "a", user="ana", id=1),
        verdict(text["refund"], text["refund_bad"], text["refund_good"], "b", user="ben", id=2),
        verdict(text["refund"], text["refund_bad"], text["refund_good"], "tie", user="carla", id=3),
    ], method="dpo")
    assert len(build.dpo) == 1 and build.dpo[0]["chosen"][0]["content"] == text["refund_good"]
    assert build.provenance["dpo"] == [(1, 2)] and build.report["duplicates"]["dpo"] == 1
    assert left_out(build) == {3: "outvoted"}


def test_one_persons_both_bad_against_anothers_thumbs_up_is_a_conflict(text):
    build = build_feedback_dataset([
        thumb(text["password"], text["password_good"], "up", user="ana", id=1),
        verdict(text["password"], text["password_good"], text["password_bad"], "both_bad", user="ben", id=2),
    ], method="sft+kto")
    assert build.sft == []
    assert [(r["completion"][0]["content"], r["label"]) for r in build.kto] == [(text["password_bad"], False)]
    assert left_out(build) == {1: "conflict"} and build.rating_ids == (2,)


# --- rule 3: a person changing their rating ------------------------------------------------------

def test_a_changed_rating_counts_once_with_its_latest_value(text):
    build = build_feedback_dataset([
        thumb(text["refund"], text["refund_good"], "up", user="ana", id=1, at="2025-03-05T10:00:00"),
        thumb(text["refund"], text["refund_good"], "down", user="ana", id=2, at="2025-03-05T10:05:00"),
        thumb(text["refund"], text["refund_good"], "up", user="ben", id=3),
        thumb(text["refund"], text["refund_good"], "down", user="carla", id=4),
    ], method="kto")
    # ana's latest is down: down 2 (ana, carla) against up 1 (ben); ana's first rating does not vote
    assert [r["label"] for r in build.kto] == [False]
    assert left_out(build) == {1: "superseded", 3: "outvoted"}
    assert "#2" in build.report["left_out"][0]["detail"]


def test_updated_at_orders_changes_over_id_and_created_at(text):
    # rating 1 was edited after rating 2 was written (another message with the same answer)
    build = build_feedback_dataset([
        thumb(text["refund"], text["refund_good"], "up", user="ana", message_id=11, id=1,
              at="2025-03-05T09:00:00+00:00", updated_at="2025-03-05T12:00:00Z"),
        thumb(text["refund"], text["refund_good"], "down", user="ana", message_id=17, id=2,
              at="2025-03-05T10:00:00+00:00"),
    ], method="kto")
    assert [r["label"] for r in build.kto] == [True] and left_out(build) == {2: "superseded"}


def test_corrections_by_different_people_are_all_used_and_one_person_counts_once(text):
    other = "Yes: within 30 days of delivery you get a full refund. Send your order number and I'll start it."
    build = build_feedback_dataset([
        correction(text["refund"], text["refund_bad"], "draft", user="ana", id=1, at="2025-03-05T09:00:00"),
        correction(text["refund"], text["refund_bad"], text["refund_fix"], user="ana", id=2, at="2025-03-05T09:01:00"),
        correction(text["refund"], text["refund_bad"], other, user="ben", id=3),
    ], method="sft")
    assert answers(build.sft, "messages") == [text["refund_fix"], other]
    assert left_out(build) == {1: "superseded"}


# --- rule 8: duplicates --------------------------------------------------------------------------

def test_duplicates_are_dropped_counted_and_kept_in_lineage(text):
    build = build_feedback_dataset([
        thumb(text["refund"], text["refund_good"], "up", user="ana", message_id=11, id=1),
        # the same answer again in another chat, with a trailing newline and double space
        thumb(text["refund"], text["refund_good"].replace(" ", "  ", 1) + "\n", "up", user="ben", message_id=51, id=2),
        # a correction that ends up with the same text as a liked answer
        correction(text["refund"], text["refund_bad"], text["refund_good"], user="carla", id=3),
    ], method="sft+kto")
    assert answers(build.sft, "messages") == [text["refund_good"]]
    assert build.provenance["sft"] == [(1, 2, 3)] and build.provenance["kto"] == [(1, 2)]
    assert build.report["duplicates"] == {"sft": 2, "kto": 1, "replay": 0}
    assert build.rating_ids == (1, 2, 3) and left_out(build) == {}


def test_duplicate_pairs_from_two_ab_turns_are_one_pair(text):
    build = build_feedback_dataset([
        verdict(text["password"], text["password_good"], text["password_bad"], "a", user="ana", ab_turn_id=1, id=1),
        verdict(text["password"], text["password_good"], text["password_bad"], "a", user="ben", ab_turn_id=7, id=2),
    ], method="dpo")
    assert len(build.dpo) == 1 and build.report["duplicates"]["dpo"] == 1 and build.rating_ids == (1, 2)


# --- rule 1: incomplete and invalid ratings ------------------------------------------------------

def test_incomplete_and_invalid_ratings_are_left_out_with_reasons(text):
    ends_with_assistant = text["address"][:3]
    build = build_feedback_dataset([
        thumb([], text["refund_good"], "up", id=1),
        thumb(ends_with_assistant, text["refund_good"], "up", id=2),
        thumb(text["refund"], "   ", "up", id=3),
        thumb(text["refund"], text["refund_good"], "sideways", id=4),
        verdict(text["refund"], text["refund_good"], "", "a", id=5),
        verdict(text["refund"], text["refund_good"], text["refund_good"] + " ", "a", id=6),
        correction(text["refund"], text["refund_bad"], text["refund_bad"], id=7),
        correction(text["refund"], text["refund_bad"], "", id=8),
        thumb([{"role": "tool", "content": "{}"}, *text["refund"][1:]], text["refund_good"], "up", id=9),
        thumb(text["refund"], text["refund_good"], "up", id=10, at="yesterday"),
        RatingRecord(id=11, kind="emoji", user="ana", created_at="2025-03-05T10:00:00", value="👍",
                     context=text["refund"]),
    ], method="sft+dpo")
    assert build.sft == [] and build.dpo == [] and build.rating_ids == ()
    assert left_out(build) == {
        1: "incomplete", 2: "incomplete", 3: "incomplete", 4: "invalid", 5: "incomplete",
        6: "identical_answers", 7: "correction_unchanged", 8: "incomplete", 9: "invalid", 10: "invalid",
        11: "invalid"}
    assert "context[0]" in build.report["left_out"][8]["detail"]


# --- rule 9: replay ------------------------------------------------------------------------------

def _liked(text, n):
    return [thumb(text["refund"] [:1] + [{"role": "user", "content": f"Refund question number {i}?"}],
                  f"Refund answer {i}: within 30 days you get your money back.", "up", id=i) for i in range(1, n + 1)]


def _earlier(n):
    return [{"messages": [{"role": "user", "content": f"How do I reset password {i}?"},
                          {"role": "assistant", "content": f"Use 'Forgot password' ({i})."}]} for i in range(n)]


@pytest.mark.parametrize(("share", "new", "expected"), [(0.2, 8, 2), (0.5, 8, 8), (0.25, 6, 2), (0.0, 8, 0)])
def test_replay_share_of_the_final_sft_set(text, share, new, expected):
    build = build_feedback_dataset(_liked(text, new), method="sft", replay=_earlier(30), replay_share=share)
    assert build.replay_count == expected and len(build.sft) == new + expected
    assert build.new_sft_count == new and build.report["examples"] == {"sft": new, "replay": expected}
    assert build.sft[new:] == [r for r in _earlier(30) if r in build.sft[new:]]  # replayed rows as given
    assert build.provenance["sft"][new:] == [()] * expected
    if expected:
        assert abs(expected / len(build.sft) - share) < 0.1


def test_replay_is_deterministic_with_a_seed_and_varies_between_seeds(text):
    def chosen(seed):
        b = build_feedback_dataset(_liked(text, 8), method="sft", replay=_earlier(40), replay_share=0.2, seed=seed)
        return [r["messages"][0]["content"] for r in b.sft[8:]]

    assert chosen(3) == chosen(3)
    assert len({tuple(chosen(seed)) for seed in range(6)}) > 1


def test_replay_drops_copies_of_new_examples_accepts_message_lists_and_is_ignored_without_sft(text):
    liked = _liked(text, 4)
    new_copy = build_feedback_dataset(liked[:1], method="sft").sft[0]
    pool = [new_copy, new_copy["messages"], *_earlier(10)]
    build = build_feedback_dataset(liked, method="sft", replay=pool, replay_share=0.5)
    assert build.report["duplicates"]["replay"] == 2 and build.replay_count == 4
    assert all(r not in build.sft[:4] for r in build.sft[4:])
    dpo = build_feedback_dataset(liked, method="dpo", replay=pool)
    assert dpo.replay_count == 0 and dpo.report["notes"] == ["replay ignored: method 'dpo' has no SFT part"]
    nothing_new = build_feedback_dataset([], method="sft", replay=_earlier(10))
    assert nothing_new.sft == [] and "nothing replayed" in nothing_new.report["notes"][0]


@pytest.mark.parametrize("share", [1.0, -0.1, 1.5])
def test_replay_share_out_of_range_is_refused(share):
    with pytest.raises(ValueError, match="replay_share"):
        build_feedback_dataset([], method="sft", replay_share=share)


# --- rule 11: too little data --------------------------------------------------------------------

def test_dpo_refusal_names_the_minimum_the_count_and_its_sources(text):
    build = build_feedback_dataset([
        verdict(text["refund"], text["refund_good"], text["refund_bad"], "a", id=1),
        verdict(text["password"], text["password_good"], text["password_bad"], "a", id=2),
        verdict(text["cancel"], text["cancel_good"], text["cancel_bad"], "a", id=3),
    ], method="dpo")
    assert check_enough(build, "dpo") == (
        "DPO needs at least 8 preference pairs; the feedback since the last build has 3 (from 3 A/B verdicts). "
        "Collect more A/B votes or corrections.")


def test_dpo_refusal_on_the_fixture_suggests_the_method_that_is_ready(records):
    build = build_feedback_dataset(records, method="dpo")
    assert check_enough(build) == (
        "DPO needs at least 8 preference pairs; the feedback since the last build has 5 "
        "(from 3 A/B verdicts and 1 correction). Collect more A/B votes or corrections, "
        "or choose SFT (5 examples ready).")


def test_kto_refusal_says_which_label_is_short(records):
    build = build_feedback_dataset(records, method="kto")
    assert check_enough(build, "kto") == (
        "KTO needs at least 4 desirable (thumbs-up) and 4 undesirable (thumbs-down) examples, so that batches "
        "of 4 can mix both for its KL estimate; the feedback since the last build has 4 desirable and 3 "
        "undesirable (from 7 thumbs). Collect more thumbs-down ratings, or choose SFT (5 examples ready).")


def test_kto_refusal_with_no_negatives_and_both_short(text):
    only_up = build_feedback_dataset(_liked(text, 5), method="kto")
    assert "has 5 desirable and 0 undesirable (from 5 thumbs). Collect more thumbs-down ratings, or choose SFT" \
        in check_enough(only_up)
    both_bad = verdict(text["password"], text["password_bad"], "Passwords cannot be reset.", "both_bad", id=9)
    little = build_feedback_dataset([thumb(text["refund"], text["refund_good"], "up", id=1), both_bad], method="kto")
    assert check_enough(little).endswith(
        "has 1 desirable and 2 undesirable (from 1 thumb and 1 'both bad' verdict). "
        "Collect more thumbs-up and thumbs-down ratings.")


def test_sft_refusal_and_the_combined_methods(text):
    build = build_feedback_dataset([
        thumb(text["refund"], text["refund_good"], "up", id=1),
        correction(text["refund"], text["refund_bad"], text["refund_fix"], id=2),
    ], method="sft+dpo", replay=_earlier(20), replay_share=0.5)
    assert build.replay_count == 2  # replay does not count towards the minimum
    message = check_enough(build)
    assert message == (
        "SFT needs at least 4 examples; the feedback since the last build has 2 (from 1 thumbs-up and "
        "1 correction). Collect more thumbs-up ratings or corrections. "
        "DPO needs at least 8 preference pairs; the feedback since the last build has 1 (from 1 correction). "
        "Collect more A/B votes or corrections.")
    assert check_enough(build, "sft").startswith("SFT needs") and check_enough(build, "dpo").startswith("DPO needs")
    assert check_enough(build, "kto") == "This build was made for method 'sft+dpo'; build again for 'kto' to check it."


def test_empty_feedback_refusal_has_no_source_clause():
    build = build_feedback_dataset([], method="sft", scope="the feedback since 2025-03-01")
    assert check_enough(build) == (
        "SFT needs at least 4 examples; the feedback since 2025-03-01 has 0. "
        "Collect more thumbs-up ratings or corrections.")


def test_enough_data_passes_and_minimums_can_be_overridden(records, text):
    assert check_enough(build_feedback_dataset(records, method="sft")) is None
    loose = build_feedback_dataset(records, method="sft+dpo", min_examples={"dpo": 5})
    assert loose.minimums == {**DEFAULT_MINIMUMS, "dpo": 5} and check_enough(loose) is None
    assert check_enough(build_feedback_dataset(records, method="kto", min_examples={"kto_undesirable": 3})) is None
    strict = build_feedback_dataset(records, method="sft", min_examples={"sft": 6})
    assert check_enough(strict).startswith("SFT needs at least 6 examples; the feedback since the last build has 5")
    with pytest.raises(ValueError, match="unknown minimum"):
        build_feedback_dataset(records, min_examples={"ppo": 3})
    with pytest.raises(ValueError, match="positive integer"):
        build_feedback_dataset(records, min_examples={"sft": 0})


# --- the report ----------------------------------------------------------------------------------

def test_report_counts_by_kind_user_model_and_lists_what_was_left_out(records):
    build = build_feedback_dataset(records, method="sft+dpo")
    rep = build.report
    assert rep["ratings"] == 12 and rep["ratings_used"] == 8 and rep["ratings_left_out"] == 4
    assert build.rating_ids == (1, 3, 5, 7, 8, 9, 10, 12)
    assert rep["examples"] == {"sft": 5, "dpo": 5, "replay": 0}
    assert rep["sources"] == {"sft": {"thumb": 4, "correction": 1}, "dpo": {"verdict": 3, "correction": 1}}
    assert rep["used_by_kind"] == {"thumb": 4, "correction": 1, "verdict": 3}
    assert rep["used_by_user"] == {"ana": 3, "ben": 2, "carla": 2, "dave": 1}
    assert rep["used_by_model"] == {"acme-v1": 7, "base": 4}  # a verdict counts for both its models
    assert left_out(build) == {2: "not_used_by_method", 4: "not_used_by_method", 6: "not_used_by_method",
                               11: "tie"}
    assert rep["available"] == {"sft": 5, "kto_desirable": 4, "kto_undesirable": 3, "dpo": 5}
    json.dumps(rep)  # what `tuneloop feedback build --json` prints
    text_report = format_report(build)
    assert "SFT: 5 examples (from 4 thumbs-up and 1 correction)" in text_report
    assert "#2 thumb by ana: not_used_by_method" in text_report and "Not enough data: DPO needs" in text_report


_CTXS = [[{"role": "user", "content": q}] for q in ("Refund for order 7?", "Reset my password?")]
_ANSWERS = ["Yes, within 30 days.", "Contact support.", "Use 'Forgot password'.", "No."]


@st.composite
def _rating(draw, rid):
    ctx, user = draw(st.sampled_from(_CTXS)), draw(st.sampled_from(["ana", "ben", "carla", ""]))
    at = f"2025-03-0{draw(st.integers(1, 9))}T10:00:00"
    kind = draw(st.sampled_from(["thumb", "verdict", "correction"]))
    if kind == "thumb":
        return thumb(ctx, draw(st.sampled_from(_ANSWERS)), draw(st.sampled_from(["up", "down"])),
                     user=user, at=at, id=rid)
    if kind == "correction":
        return correction(ctx, draw(st.sampled_from(_ANSWERS)), draw(st.sampled_from(_ANSWERS + ["Fixed."])),
                          user=user, at=at, message_id=draw(st.integers(1, 4)), id=rid)
    a, b = draw(st.sampled_from(_ANSWERS)), draw(st.sampled_from(_ANSWERS))
    return verdict(ctx, a, b, draw(st.sampled_from(["a", "b", "tie", "both_bad"])), user=user, at=at,
                   ids=(draw(st.integers(1, 4)), draw(st.integers(1, 4))), id=rid)


@hyp_settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 10**6), unique=True, max_size=25).flatmap(
    lambda ids: st.tuples(*[_rating(i) for i in ids])), st.sampled_from(list(METHODS)))
def test_every_rating_is_used_or_left_out_and_rows_are_consistent(records, method):
    build = build_feedback_dataset(records, method=method)
    out = [x["rating_id"] for x in build.report["left_out"]]
    assert sorted(out + list(build.rating_ids)) == sorted(r.id for r in records)
    assert all(x["reason"] in REASONS for x in build.report["left_out"])
    for part in ("sft", "kto", "dpo"):
        rows_ = getattr(build, part)
        assert len(rows_) == len(build.provenance[part])
        assert len({json.dumps(r, sort_keys=True) for r in rows_}) == len(rows_)  # no duplicate rows
    assert len({json.dumps([r["prompt"], r["completion"]]) for r in build.kto}) == len(build.kto)  # one label each
    assert all(r["chosen"] != r["rejected"] for r in build.dpo)
    assert all(r["messages"][-1]["role"] == "assistant" for r in build.sft)


def test_methods_and_bad_input():
    assert method_parts("sft+kto") == ("sft", "kto")
    with pytest.raises(ValueError, match="unknown method"):
        build_feedback_dataset([], method="ppo")
    r = thumb([{"role": "user", "content": "hi"}], "hello", "up", id=5)
    with pytest.raises(ValueError, match="duplicate rating ids"):
        build_feedback_dataset([r, r])
