"""Win rate and its Wilson score interval.

Run: .venv/bin/python -m pytest tests/test_store_winrate.py -q
"""

from __future__ import annotations

import pytest

from store.winrate import WinRate, wilson_interval


@pytest.mark.parametrize("wins, n, lo, hi", [
    # Reference values from the closed form (z = 1.96), as in Wilson (1927) and Agresti & Coull (1998).
    (5, 10, 0.2366, 0.7634),
    (0, 10, 0.0, 0.2775),
    (10, 10, 0.7225, 1.0),
    (1, 1, 0.2065, 1.0),
    (81, 263, 0.2553, 0.3662),
])
def test_wilson_interval_matches_reference_values(wins, n, lo, hi):
    got = wilson_interval(wins, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def test_wilson_interval_stays_in_unit_range_and_narrows_with_more_votes():
    widths = []
    for n in (4, 40, 400):
        lo, hi = wilson_interval(n // 2, n)
        assert 0 <= lo < 0.5 < hi <= 1
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]


def test_no_votes_means_no_information():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    wr = WinRate(wins=0, losses=0, ties=2, both_bad=1)
    assert wr.rate is None and wr.interval is None
    assert wr.describe() == "no decisive votes yet (2 ties, 1 both bad)"
    assert wr.verdict() == "no decisive votes yet"


@pytest.mark.parametrize("bad", [(-1, 3), (4, 3), (0, -1)])
def test_wilson_interval_refuses_impossible_counts(bad):
    with pytest.raises(ValueError):
        wilson_interval(*bad)


def test_ties_and_both_bad_are_reported_but_not_counted_in_the_rate():
    wr = WinRate(wins=6, losses=2, ties=3, both_bad=1)
    assert wr.decisive == 8 and wr.votes == 12
    assert wr.rate == 0.75
    lo, hi = wr.interval
    assert wr.describe() == f"75% (95% CI {lo:.0%}–{hi:.0%}), 8 decisive of 12 votes"


def test_verdict_says_better_only_when_the_whole_interval_is_above_half():
    assert WinRate(wins=3, losses=1).verdict().startswith("not clearly different")
    assert WinRate(wins=30, losses=5).verdict() == "better than the base model"
    assert WinRate(wins=2, losses=25).verdict() == "worse than the base model"
