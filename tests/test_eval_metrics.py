"""Per-answer metrics, named checks, grounding checks, scoring and the run summary (pure)."""

from __future__ import annotations

import pytest

from serving.evaluation.checks import (GroundingIndex, InvalidCheck, find_emails, find_links, find_phones, parse_checks,
                                       run_checks)
from serving.evaluation.metrics import answer_stats, rouge_l
from serving.evaluation.scoring import SideScores, score_answer
from serving.evaluation.summary import EvalSummary, ItemResult, summarize
from store.winrate import WinRate


def test_rouge_l_identical_disjoint_partial_and_empty():
    assert rouge_l("Refunds within 30 days.", "refunds within 30 days") == pytest.approx(1.0)
    assert rouge_l("hello there", "completely different words") == 0.0
    # LCS "refund within 30 days" is 4 of 4 and 4 of 8 tokens: P=1, R=0.5, F=2/3.
    assert rouge_l("refund within 30 days", "you can get a refund within 30 days") == pytest.approx(2 / 3)
    assert rouge_l("", "anything") == 0.0 and rouge_l("anything", "") == 0.0


def test_rouge_l_reads_non_ascii_words():
    assert rouge_l("Grüße aus München", "grüße aus münchen") == pytest.approx(1.0)
    assert rouge_l("返品は30日以内", "返品は30日以内") == pytest.approx(1.0)


def test_answer_stats_length_empty_and_cut_off():
    s = answer_stats("  Two words ", "stop")
    assert (s.chars, s.words, s.empty, s.cut_off) == (9, 2, False, False)
    assert answer_stats("   ", "stop").empty and answer_stats(None, None).empty
    assert answer_stats("unfinished", "length").cut_off


CHECKS = [
    {"name": "states the 30-day refund rule", "kind": "must_mention", "value": ["30 days", "30-day"]},
    {"name": "no chargeback talk", "kind": "must_not_mention", "value": "chargeback"},
    {"name": "gives an order link", "kind": "regex", "value": r"shop\.example\.com/orders/\d+"},
]


def test_named_checks_are_case_insensitive_and_take_alternatives():
    checks = parse_checks(CHECKS)
    assert run_checks(checks, "You have a 30-DAY window. See https://SHOP.example.com/orders/12") == {
        "states the 30-day refund rule": True, "no chargeback talk": True, "gives an order link": True}
    assert run_checks(checks, "No refunds. CHARGEBACKS are refused.") == {
        "states the 30-day refund rule": False, "no chargeback talk": False, "gives an order link": False}


@pytest.mark.parametrize("bad,fragment", [
    ("not a list", "must be a list"),
    ([{"kind": "must_mention", "value": "x"}], "check 0: 'name' is empty"),
    ([{"name": "n", "kind": "contains", "value": "x"}], "'kind' must be one of"),
    ([{"name": "n", "kind": "must_mention", "value": ""}], "'value' must be a non-empty"),
    ([{"name": "n", "kind": "regex", "value": "(unclosed"}], "not a valid regular expression"),
    ([{"name": "n", "kind": "regex", "value": ["a", "b"]}], "one pattern"),
    ([{"name": "n", "kind": "must_mention", "value": "a"}, {"name": "n", "kind": "must_mention", "value": "b"}],
     "two checks are named 'n'"),
])
def test_bad_checks_are_refused_naming_where_and_what(bad, fragment):
    with pytest.raises(InvalidCheck, match="item 4") as exc:
        parse_checks(bad, where="item 4")
    assert fragment in str(exc.value)


def test_finders_pick_links_emails_and_phones_not_dates_or_order_numbers():
    text = ("Write to Help@Shop.example.com or see https://shop.example.com/returns. "
            "Call +1 (555) 010-9999 or 020 7946 0018. Order 12345678 shipped 2024-05-01.")
    assert find_links(text) == ["https://shop.example.com/returns"]
    assert find_emails(text) == ["Help@Shop.example.com"]
    assert find_phones(text) == ["+1 (555) 010-9999", "020 7946 0018"]


def test_grounding_counts_only_what_the_teams_data_and_allow_list_lack():
    corpus = ["Our returns page is https://shop.example.com/returns/ and mail help@shop.example.com",
              "Call us on +44 20 7946 0018."]
    index = GroundingIndex.build(corpus, {"link": ["docs.example.org", "https://blog.example.com/posts/"],
                                          "email": ["@partner.example"], "phone": ["0800 123 4567"]})
    answer = ("See https://shop.example.com/returns, https://www.docs.example.org/a/b, "
              "https://blog.example.com/posts/42 and https://made-up.example.net/refunds. "
              "Mail HELP@shop.example.com, x@partner.example or fake@scam.example. "
              "Call 020 7946 0018, 0800 123 4567 or 555 123 4567.")
    invented = index.invented(answer)
    assert invented.links == ["https://made-up.example.net/refunds"]
    assert invented.emails == ["fake@scam.example"]
    assert invented.phones == ["555 123 4567"]
    assert invented.count == 3


def test_score_answer_and_summary_per_side():
    checks = parse_checks(CHECKS[:1])
    index = GroundingIndex.build(["https://shop.example.com"])
    good = score_answer("Refunds within 30 days.", "stop", reference="Refunds within 30 days.", checks=checks,
                        grounding=index, similarity=0.9)
    bad = score_answer("See https://fake.example.io now", "length", reference="Refunds within 30 days.",
                       checks=checks, grounding=index, similarity=0.1)
    assert good.rouge_l == pytest.approx(1.0) and good.checks == {"states the 30-day refund rule": True}
    assert bad.invented["links"] == ["https://fake.example.io"] and bad.cut_off
    no_ref = score_answer("x", "stop", reference=None, checks=[], grounding=None, similarity=0.5)
    assert no_ref.similarity is None and no_ref.rouge_l is None

    results = [ItemResult(1, 0, "a", "b", "stop", "length", good, bad, "candidate", "r"),
               ItemResult(2, 1, "a", "b", "stop", "stop", good, good, "tie", "r"),
               ItemResult(3, 2, "a", "b", "stop", "stop", bad, good, "unparsable", "?", ["raw"])]
    s = summarize(results, judge_model="judge-m", people=WinRate(2, 1))
    assert s.candidate.check_pass_rates == {"states the 30-day refund rule": pytest.approx(2 / 3)}
    assert s.baseline.check_counts == {"states the 30-day refund rule": [2, 3]}
    assert s.candidate.mean_similarity == pytest.approx((0.9 + 0.9 + 0.1) / 3)
    assert s.baseline.invented_rate == pytest.approx(1 / 3) and s.baseline.cut_off_rate == pytest.approx(1 / 3)
    assert (s.judge.wins, s.judge.losses, s.judge.ties, s.judge.unparsable) == (1, 0, 1, 1)
    assert s.people["wins"] == 2 and any("could not be read" in n for n in s.notes)
    assert EvalSummary.from_json(s.to_json()) == s


def test_summary_without_judge_or_references_says_so():
    plain = SideScores(chars=3, words=1)
    s = summarize([ItemResult(1, 0, "abc", "abc", "stop", "stop", plain, plain)])
    assert not s.judge.used and s.judge.describe() == "no judge was used"
    assert s.candidate.mean_similarity is None and not s.has_references
    assert any("no judge" in n for n in s.notes) and any("no item has a reference" in n for n in s.notes)
