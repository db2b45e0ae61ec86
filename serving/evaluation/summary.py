"""Per-item results -> an eval run's summary: per side means and rates, the judge's win rate, people's votes.

Pure. `EvalSummary.to_json()` is what the store keeps in `eval_runs.summary` and what
`tuneloop eval run --json` prints; `from_json` reads it back for the gate and the UI.

    summary = summarize(results, judge_used=True, people=WinRate(3, 1))
    summary.candidate.check_pass_rates, summary.judge.win_rate.interval
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from statistics import fmean
from typing import Iterable, Sequence

from serving.evaluation.scoring import SideScores
from serving.evaluation.stats import judge_win_rate
from store.winrate import WinRate

INVENTED_KINDS = ("links", "emails", "phones")


@dataclass(frozen=True)
class ItemResult:
    """One eval item, both answers, their scores and the judge's verdict."""

    item_id: int
    position: int
    candidate_answer: str
    baseline_answer: str
    candidate_finish: str | None
    baseline_finish: str | None
    candidate: SideScores
    baseline: SideScores
    verdict: str | None = None
    """candidate | baseline | tie | unparsable | error; None without a judge."""
    reason: str | None = None
    judge_raw: list[str] | None = None

    def to_row(self) -> dict:
        """The shape `store.evaluations.record_item_result` writes."""
        return {"item_id": self.item_id, "position": self.position, "candidate_answer": self.candidate_answer,
                "baseline_answer": self.baseline_answer, "candidate_finish": self.candidate_finish,
                "baseline_finish": self.baseline_finish,
                "scores": {"candidate": self.candidate.to_json(), "baseline": self.baseline.to_json()},
                "verdict": self.verdict, "reason": self.reason, "judge_raw": self.judge_raw}


@dataclass(frozen=True)
class SideSummary:
    """One model's figures over the items it answered."""

    items: int = 0
    mean_similarity: float | None = None
    """None when no item has a reference (or no embedding model was available)."""
    mean_rouge_l: float | None = None
    check_pass_rates: dict[str, float] = field(default_factory=dict)
    check_counts: dict[str, list[int]] = field(default_factory=dict)
    """{check name: [passed, items with that check]}"""
    invented_rate: float = 0.0
    """Share of answers with at least one invented link, e-mail address or phone number."""
    invented_counts: dict[str, int] = field(default_factory=lambda: {k: 0 for k in INVENTED_KINDS})
    mean_chars: float = 0.0
    mean_words: float = 0.0
    empty_rate: float = 0.0
    cut_off_rate: float = 0.0
    heldout_loss: float | None = None
    """Filled in by the caller when comparable losses exist (a run's loss on its held-out split)."""


@dataclass(frozen=True)
class JudgeSummary:
    used: bool
    model: str | None = None
    wins: int = 0
    losses: int = 0
    ties: int = 0
    unparsable: int = 0
    errors: int = 0
    win_rate: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None

    def describe(self) -> str:
        if not self.used:
            return "no judge was used"
        rate = WinRate(self.wins, self.losses, self.ties)
        extra = [f"{n} {what}" for n, what in ((self.unparsable, "unparsable"), (self.errors, "judge errors")) if n]
        return rate.describe() + (f"; {', '.join(extra)}" if extra else "")


@dataclass(frozen=True)
class EvalSummary:
    items: int
    candidate: SideSummary
    baseline: SideSummary
    judge: JudgeSummary
    people: dict | None = None
    """People's A/B record of candidate vs baseline (store.winrate.WinRate.to_json()), when there are votes."""
    has_references: bool = False
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "EvalSummary":
        return cls(items=data["items"], candidate=SideSummary(**data["candidate"]),
                   baseline=SideSummary(**data["baseline"]), judge=JudgeSummary(**data["judge"]),
                   people=data.get("people"), has_references=data.get("has_references", False),
                   notes=list(data.get("notes") or []))


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return fmean(vals) if vals else None


def summarize_side(scores: Sequence[SideScores]) -> SideSummary:
    n = len(scores)
    if not n:
        return SideSummary()
    counts: dict[str, list[int]] = {}
    for s in scores:
        for name, ok in s.checks.items():
            c = counts.setdefault(name, [0, 0])
            c[0] += int(ok)
            c[1] += 1
    invented = {k: sum(len(s.invented.get(k, [])) for s in scores) for k in INVENTED_KINDS}
    return SideSummary(
        items=n,
        mean_similarity=_mean(s.similarity for s in scores),
        mean_rouge_l=_mean(s.rouge_l for s in scores),
        check_pass_rates={k: v[0] / v[1] for k, v in sorted(counts.items())},
        check_counts={k: v for k, v in sorted(counts.items())},
        invented_rate=sum(s.invented_count > 0 for s in scores) / n,
        invented_counts=invented,
        mean_chars=fmean(s.chars for s in scores), mean_words=fmean(s.words for s in scores),
        empty_rate=sum(s.empty for s in scores) / n, cut_off_rate=sum(s.cut_off for s in scores) / n,
    )


def summarize(results: Sequence[ItemResult], *, judge_model: str | None = None, people: WinRate | None = None,
              notes: Sequence[str] = ()) -> EvalSummary:
    """The run's summary; `judge_model` None means no judge was used (and the summary says so)."""
    notes = list(notes)
    judge = JudgeSummary(used=False)
    if judge_model is not None:
        tally = judge_win_rate(r.verdict for r in results)
        wr = tally.win_rate
        lo, hi = wr.interval or (None, None)
        judge = JudgeSummary(True, judge_model, wr.wins, wr.losses, wr.ties, tally.unparsable, tally.errors,
                             wr.rate, lo, hi)
        if tally.unparsable:
            notes.append(f"{tally.unparsable} judge answer(s) could not be read (kept in the per-item view)")
    else:
        notes.append("no judge was used: the win rate is not measured")
    has_refs = any(r.candidate.rouge_l is not None for r in results)
    if not has_refs and results:
        notes.append("no item has a reference answer: similarity and ROUGE-L are not measured")
    return EvalSummary(
        items=len(results), candidate=summarize_side([r.candidate for r in results]),
        baseline=summarize_side([r.baseline for r in results]), judge=judge,
        people=people.to_json() if people is not None and people.votes else None,
        has_references=has_refs, notes=notes,
    )
