"""Win rates with 95% intervals, and a Bradley-Terry leaderboard of people's A/B votes and judge verdicts.

Win rate: ties are excluded from the rate and reported beside it, as in `store.winrate` (the A/B
votes' rate the app already shows), so the judge's and people's rates mean the same thing: the share
of decisive comparisons the candidate won, with a Wilson interval. A tie says nothing about which
model is better; counting it as half a win would pull every rate towards 50% and make a judge that
often says "tie" look like evidence of "no worse". Unparsable verdicts and judge errors are counted
apart and never enter the rate.

Leaderboard: Bradley-Terry strengths fitted by Hunter's MM algorithm (ties count half a win to
each side), with 95% intervals from a seeded bootstrap over the comparisons, shown on the Elo-like
scale (1000 + 400 log10 strength). Each model also plays one virtual tie against a fixed anchor of
strength 1, a weak prior that keeps a model that won (or lost) everything finite and pins the
scale. Hand-written rather than `arena-rank` because that package pins numpy==2.3.3 and pulls jax,
optax, pandas and datasets for what is 30 lines of numpy here.

    judge_win_rate(["candidate", "tie", "baseline", "candidate"]).describe()
    leaderboard([Comparison("v2", "v1", "a", "judge"), ...])
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from store.winrate import WinRate

ELO_BASE = 1000.0
ELO_SCALE = 400.0


@dataclass(frozen=True)
class JudgeTally:
    """A judge's verdicts on one candidate/baseline pair: the rate over decisive ones, and the rest."""

    win_rate: WinRate
    unparsable: int = 0
    errors: int = 0

    def to_json(self) -> dict:
        return {**self.win_rate.to_json(), "unparsable": self.unparsable, "errors": self.errors}


def judge_win_rate(verdicts: Iterable[str | None]) -> JudgeTally:
    """Tally verdicts (candidate | baseline | tie | unparsable | error; None = not judged)."""
    counts = Counter(v for v in verdicts if v)
    unknown = set(counts) - {"candidate", "baseline", "tie", "unparsable", "error"}
    if unknown:
        raise ValueError(f"unknown judge verdict(s): {', '.join(sorted(unknown))}")
    return JudgeTally(WinRate(wins=counts["candidate"], losses=counts["baseline"], ties=counts["tie"]),
                      unparsable=counts["unparsable"], errors=counts["error"])


@dataclass(frozen=True)
class Comparison:
    """One pairwise outcome between models a and b: winner "a", "b" or "tie"; source "people" or "judge"."""

    a: str
    b: str
    winner: str
    source: str

    def __post_init__(self):
        if self.winner not in ("a", "b", "tie"):
            raise ValueError(f"a comparison's winner is 'a', 'b' or 'tie', not {self.winner!r}")
        if self.a == self.b:
            raise ValueError(f"a comparison needs two different models, got {self.a!r} twice")


@dataclass(frozen=True)
class Rating:
    model: str
    rating: float
    low: float
    high: float
    comparisons: int
    by_source: dict = field(default_factory=dict)
    """{"people": n, "judge": n}: how many comparisons of each source the model took part in."""

    def to_json(self) -> dict:
        return {"model": self.model, "rating": round(self.rating, 1), "low": round(self.low, 1),
                "high": round(self.high, 1), "comparisons": self.comparisons, "by_source": self.by_source}


def fit_bradley_terry(models: Sequence[str], comparisons: Sequence[Comparison], *, prior: float = 1.0,
                      iterations: int = 500, tol: float = 1e-9) -> dict[str, float]:
    """BT strengths by Hunter's MM updates: p_i <- W_i / sum_j n_ij / (p_i + p_j), anchored by `prior`
    virtual ties against a strength-1 opponent. Returns {model: log strength}."""
    import numpy as np

    index = {m: i for i, m in enumerate(models)}
    k = len(models)
    wins = np.full(k, prior / 2.0)  # the virtual ties: half a win each
    games = np.zeros((k, k))
    for c in comparisons:
        i, j = index[c.a], index[c.b]
        games[i, j] += 1
        games[j, i] += 1
        wins[i] += {"a": 1.0, "b": 0.0, "tie": 0.5}[c.winner]
        wins[j] += {"a": 0.0, "b": 1.0, "tie": 0.5}[c.winner]
    p = np.ones(k)
    for _ in range(iterations):
        denom = (games / (p[:, None] + p[None, :])).sum(axis=1) + prior / (p + 1.0)
        new = wins / denom
        if np.max(np.abs(np.log(new) - np.log(p))) < tol:
            p = new
            break
        p = new
    return {m: float(math.log(p[index[m]])) for m in models}


def to_elo(log_strength: float) -> float:
    return ELO_BASE + ELO_SCALE * log_strength / math.log(10)


def leaderboard(comparisons: Iterable[Comparison], *, sources: Iterable[str] | None = None, bootstrap: int = 200,
                seed: int = 0) -> list[Rating]:
    """Models by BT rating (best first), with bootstrap 95% intervals; only the given sources when set."""
    import numpy as np

    wanted = set(sources) if sources is not None else None
    data = [c for c in comparisons if wanted is None or c.source in wanted]
    if not data:
        return []
    models = sorted({c.a for c in data} | {c.b for c in data})
    point = fit_bradley_terry(models, data)
    rng = np.random.default_rng(seed)
    samples = {m: [] for m in models}
    for _ in range(bootstrap):
        picked = [data[i] for i in rng.integers(0, len(data), len(data))]
        fitted = fit_bradley_terry(models, picked)  # a model absent from the sample stays at the prior
        for m in models:
            samples[m].append(to_elo(fitted[m]))
    counts: dict[str, Counter] = {m: Counter() for m in models}
    for c in data:
        counts[c.a][c.source] += 1
        counts[c.b][c.source] += 1
    out = []
    for m in models:
        s = np.array(samples[m]) if bootstrap else np.array([to_elo(point[m])])
        out.append(Rating(m, to_elo(point[m]), float(np.quantile(s, 0.025)), float(np.quantile(s, 0.975)),
                          sum(counts[m].values()), dict(counts[m])))
    return sorted(out, key=lambda r: -r.rating)
