"""Win rate of one model over another in A/B votes, with a Wilson score interval (pure math, no IO).

Only decisive votes count toward the rate: "A better" or "B better". Ties and "both bad" say nothing
about which model is better, so they are reported beside the rate, not folded into it. The Wilson
interval (rather than the normal approximation) stays inside [0, 1] and is honest for the handful of
votes a support team gives in a week. It lives in `store` so that store.lineage and the UI share it
(the UI may import store, never the reverse).

    .venv/bin/python -m pytest tests/test_store_winrate.py -q
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z_95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval for `successes` out of `n` trials; (0, 1) when n is 0."""
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # Clamp float noise at the edges (p = 0 or 1 give exactly 0 or 1 in exact arithmetic).
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class WinRate:
    """A model's A/B record against an opponent (by default the base model)."""

    wins: int
    losses: int
    ties: int = 0
    both_bad: int = 0

    @property
    def decisive(self) -> int:
        return self.wins + self.losses

    @property
    def votes(self) -> int:
        return self.wins + self.losses + self.ties + self.both_bad

    @property
    def rate(self) -> float | None:
        """Share of decisive votes the model won; None before any decisive vote."""
        return self.wins / self.decisive if self.decisive else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return wilson_interval(self.wins, self.decisive) if self.decisive else None

    def verdict(self, opponent: str = "the base model") -> str:
        """A sentence a support lead can act on: better, worse, or not known yet."""
        if not self.decisive:
            return "no decisive votes yet"
        lo, hi = self.interval
        if lo > 0.5:
            return f"better than {opponent}"
        if hi < 0.5:
            return f"worse than {opponent}"
        return "not clearly different yet: more votes needed"

    def short(self) -> str:
        """'75% (95% CI 30–95%)', or 'no decisive votes yet'."""
        if not self.decisive:
            return "no decisive votes yet"
        lo, hi = self.interval
        return f"{self.rate:.0%} (95% CI {lo:.0%}–{hi:.0%})"

    def describe(self) -> str:
        """'62% (95% CI 41-79%), 13 decisive of 15 votes'."""
        if not self.decisive:
            extra = f" ({self.ties} ties, {self.both_bad} both bad)" if self.votes else ""
            return f"no decisive votes yet{extra}"
        lo, hi = self.interval
        return (f"{self.rate:.0%} (95% CI {lo:.0%}–{hi:.0%}), "
                f"{self.decisive} decisive of {self.votes} votes")

    def to_json(self) -> dict:
        """Counts, rate and interval bounds (None before any decisive vote)."""
        lo, hi = self.interval or (None, None)
        return {"wins": self.wins, "losses": self.losses, "ties": self.ties, "both_bad": self.both_bad,
                "decisive": self.decisive, "votes": self.votes, "win_rate": self.rate, "ci_low": lo, "ci_high": hi}
