"""The pairwise judge's both-orders logic, win-rate intervals, Bradley-Terry, and every gate rule (pure)."""

from __future__ import annotations

import pytest

from fake_vllm import FakeVllm
from serving.evaluation.gate import GateRules, evaluate_gate
from serving.evaluation.judge import (JudgeClient, JudgeConfig, JudgeUnavailable, OrderVerdict, build_judge_messages,
                                      combine_orders, parse_judge_answer)
from serving.evaluation.stats import Comparison, fit_bradley_terry, judge_win_rate, leaderboard
from serving.evaluation.summary import JudgeSummary, SideSummary
from serving_helpers import free_port
from store.winrate import wilson_interval


# --- judge ---
@pytest.mark.parametrize("text,winner", [
    ('{"winner": "A", "reason": "states the rule"}', "A"),
    ('Sure! ```json\n{"winner": "b", "reason": "shorter"}\n```', "B"),
    ('{"winner": "tie", "reason": "same"}', "tie"),
    ("Winner: B\nIt is politer.", "B"),
    ("I think A is good but B is also good.", None),
    ("", None),
    ('{"winner": "C"}', None),
    ("Winner: A\nno wait\nWinner: B", None),
    ('Reply with JSON only: {"winner": "A" | "B" | "tie", "reason": "..."}', None),  # an echo of the prompt
])
def test_parse_judge_answer(text, winner):
    assert parse_judge_answer(text).winner == winner


def test_judge_prompt_holds_both_answers_and_the_reference():
    msgs = build_judge_messages([{"role": "user", "content": "Refund?"}], "ans-one", "ans-two", "30 days")
    text = msgs[-1]["content"]
    assert msgs[0]["role"] == "system" and text.index("ans-one") < text.index("ans-two") and "30 days" in text


def v(w, reason="r"):
    return OrderVerdict(w, reason, f"raw {w}")


@pytest.mark.parametrize("first,second,expected", [
    ("A", "B", "candidate"),  # candidate won in both orders
    ("B", "A", "baseline"),
    ("tie", "tie", "tie"),
    ("A", "A", "tie"),  # the judge picked the first position both times: position bias, a tie
    ("A", "tie", "tie"),
])
def test_both_orders_agree_or_make_a_tie(first, second, expected):
    assert combine_orders(v(first), v(second)).verdict == expected


def test_an_unparsable_order_is_recorded_with_its_raw_text():
    out = combine_orders(v("A"), OrderVerdict(None, "", "blah blah"))
    assert out.verdict == "unparsable" and "second order" in out.reason and "blah blah" in out.raw


def test_judge_client_over_http_unparsable_answers_and_a_down_endpoint():
    with FakeVllm(free_port()) as srv:  # it echoes the question: never a verdict
        judge = JudgeClient(JudgeConfig(srv.url, "base"))
        out = judge.judge([{"role": "user", "content": "Refund?"}], "yes", "no")
        assert out.verdict == "unparsable" and len(out.raw) == 2
        with pytest.raises(JudgeUnavailable, match="answered 404"):
            JudgeClient(JudgeConfig(srv.url, "no-such-model")).judge([{"role": "user", "content": "q"}], "a", "b")
    with pytest.raises(JudgeUnavailable, match="not reachable"):
        JudgeClient(JudgeConfig(f"http://127.0.0.1:{free_port()}", "m", timeout_s=2)).ask([])


def test_judge_config_needs_url_and_model_and_never_stores_the_key():
    with pytest.raises(ValueError, match="base_url"):
        JudgeConfig("", "m")
    assert JudgeConfig("http://x/v1", "m", api_key="secret").public() == {"base_url": "http://x/v1", "model": "m"}


# --- win rate ---
def test_judge_win_rate_excludes_ties_and_counts_unparsable_apart():
    t = judge_win_rate(["candidate", "candidate", "baseline", "tie", "unparsable", "error", None])
    assert (t.win_rate.wins, t.win_rate.losses, t.win_rate.ties, t.unparsable, t.errors) == (2, 1, 1, 1, 1)
    assert t.win_rate.rate == pytest.approx(2 / 3)
    assert t.win_rate.interval == pytest.approx(wilson_interval(2, 3))
    with pytest.raises(ValueError, match="unknown judge verdict"):
        judge_win_rate(["maybe"])


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(8, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.4902, 0.9433)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(20, 20)
    assert hi == 1.0 and lo == pytest.approx(0.8389, abs=1e-4)


# --- Bradley-Terry ---
def test_bradley_terry_recovers_the_order_and_is_finite_for_a_clean_sweep():
    comps = ([Comparison("v3", "v2", "a", "judge")] * 8 + [Comparison("v3", "v2", "b", "people")] * 2
             + [Comparison("v2", "v1", "a", "judge")] * 7 + [Comparison("v2", "v1", "tie", "people")] * 3
             + [Comparison("v3", "v1", "a", "people")] * 5)
    board = leaderboard(comps, bootstrap=100, seed=1)
    assert [r.model for r in board] == ["v3", "v2", "v1"]
    for r in board:
        assert r.low <= r.rating <= r.high and r.high < 5000
    assert board[0].by_source == {"judge": 8, "people": 7}
    people = leaderboard(comps, sources=["people"], bootstrap=0)
    assert {r.model for r in people} == {"v1", "v2", "v3"} and all(set(r.by_source) == {"people"} for r in people)
    assert people[-1].model == "v1"  # lost or tied every game people played
    assert leaderboard([], bootstrap=10) == []


def test_bradley_terry_two_models_matches_the_closed_form_without_prior():
    comps = [Comparison("a", "b", "a", "judge")] * 3 + [Comparison("a", "b", "b", "judge")]
    s = fit_bradley_terry(["a", "b"], comps, prior=0.0, iterations=2000)
    import math
    assert math.exp(s["a"] - s["b"]) == pytest.approx(3.0, rel=1e-3)


def test_comparison_validation():
    with pytest.raises(ValueError):
        Comparison("a", "a", "a", "judge")
    with pytest.raises(ValueError):
        Comparison("a", "b", "both_bad", "people")


# --- gate ---
def side(**kw) -> SideSummary:
    base = dict(items=10, mean_similarity=0.7, check_pass_rates={"states rule": 0.6}, invented_rate=0.1)
    return SideSummary(**{**base, **kw})


def judge(wins, losses, ties=0, unparsable=0) -> JudgeSummary:
    t = judge_win_rate(["candidate"] * wins + ["baseline"] * losses + ["tie"] * ties + ["unparsable"] * unparsable)
    lo, hi = t.win_rate.interval or (None, None)
    return JudgeSummary(True, "j", wins, losses, ties, unparsable, 0, t.win_rate.rate, lo, hi)


def rule(decision, name):
    return next(r for r in decision.results if r.name == name)


def test_gate_passes_a_clearly_better_candidate():
    d = evaluate_gate(GateRules(), side(check_pass_rates={"states rule": 0.9}, mean_similarity=0.8, heldout_loss=2.0),
                      side(heldout_loss=2.5), judge=judge(18, 2))
    assert d.passed, d.describe()
    assert rule(d, "judge_win_rate").figures["ci_low"] >= 0.5


def test_judge_rule_fails_a_low_lower_bound_and_no_decisive_verdicts_and_skips_without_judge():
    d = evaluate_gate(GateRules(), side(), side(), judge=judge(6, 4))
    r = rule(d, "judge_win_rate")
    assert not d.passed and not r.passed and "below 50%" in r.message and r.figures["wins"] == 6
    r = rule(evaluate_gate(GateRules(), side(), side(), judge=judge(0, 0, ties=5, unparsable=2)), "judge_win_rate")
    assert not r.passed and "no decisive judge verdict" in r.message
    r = rule(evaluate_gate(GateRules(), side(), side(), judge=JudgeSummary(False)), "judge_win_rate")
    assert r.passed and r.skipped and "no judge" in r.message
    assert rule(evaluate_gate(GateRules(min_judge_win_lower=None), side(), side(), judge=judge(0, 9)),
                "judge_win_rate").skipped


def test_check_rule_fails_a_drop_beyond_the_margin_and_skips_one_sided_checks():
    cand = side(check_pass_rates={"states rule": 0.4, "polite": 1.0})
    d = evaluate_gate(GateRules(max_check_drop=0.1), cand, side())
    r = rule(d, "check:states rule")
    assert not d.passed and r.figures == {"candidate": 0.4, "baseline": 0.6, "allowed_margin": 0.1}
    assert "lower by more than" in r.message
    assert rule(d, "check:polite").skipped
    assert evaluate_gate(GateRules(max_check_drop=0.25), cand, side()).passed


def test_similarity_rule_margin_and_missing_references():
    assert not rule(evaluate_gate(GateRules(), side(mean_similarity=0.6), side()), "similarity").passed
    assert rule(evaluate_gate(GateRules(), side(mean_similarity=0.69), side()), "similarity").passed
    r = rule(evaluate_gate(GateRules(), side(mean_similarity=None), side(mean_similarity=None)), "similarity")
    assert r.passed and r.skipped


def test_heldout_loss_rule_only_when_both_have_it():
    assert not rule(evaluate_gate(GateRules(), side(heldout_loss=2.6), side(heldout_loss=2.5)), "heldout_loss").passed
    assert rule(evaluate_gate(GateRules(), side(heldout_loss=2.4), side(heldout_loss=2.5)), "heldout_loss").passed
    assert rule(evaluate_gate(GateRules(), side(heldout_loss=2.4), side()), "heldout_loss").skipped


def test_invented_rule_fails_more_invented_links_than_the_baseline():
    d = evaluate_gate(GateRules(), side(invented_rate=0.3, invented_counts={"links": 3, "emails": 0, "phones": 0}),
                      side())
    r = rule(d, "invented")
    assert not d.passed and r.figures["candidate_counts"]["links"] == 3
    assert evaluate_gate(GateRules(max_invented_increase=0.25), side(invented_rate=0.3), side()).passed


def test_gate_rules_are_validated_and_round_trip():
    with pytest.raises(ValueError, match="max_check_drop"):
        GateRules(max_check_drop=-1)
    with pytest.raises(ValueError, match="unknown gate rule"):
        GateRules.from_json({"min_win": 0.6})
    rules = GateRules(min_judge_win_lower=0.6, max_similarity_drop=None)
    assert GateRules.from_json(rules.to_json()) == rules
