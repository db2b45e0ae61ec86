"""The leaderboard from the store: people's A/B votes and judge verdicts as one Bradley-Terry fit.

    with connect(settings.db_path) as db:
        ratings = store_leaderboard(db, sources=("people", "judge"))   # [Rating(model, rating, low, high, ...)]
"""

from __future__ import annotations

from typing import Iterable

from serving.evaluation.stats import Comparison, Rating, leaderboard
from store.evaluations import judge_comparisons, people_comparisons


def store_comparisons(db) -> list[Comparison]:
    """Every pairwise outcome the store knows, labelled "people" or "judge"."""
    return [Comparison(**c) for c in [*people_comparisons(db), *judge_comparisons(db)]]


def store_leaderboard(db, *, sources: Iterable[str] | None = None, bootstrap: int = 200, seed: int = 0) -> list[Rating]:
    return leaderboard(store_comparisons(db), sources=sources, bootstrap=bootstrap, seed=seed)
