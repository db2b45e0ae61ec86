"""The promotion gate: stated, configurable rules comparing a candidate's eval figures with the baseline's.

Pure. A rule whose figures were not measured (no judge, no references, no held-out loss, a check
only one side has) is skipped and says why; a skipped rule does not block. Every result carries
the figures it compared, so a refusal can be shown with its numbers.

Rules (defaults in GateRules):
- judge_win_rate: with a judge, the lower bound of the candidate's 95% win-rate interval (ties
  excluded) is at least `min_judge_win_lower` (0.5). No decisive verdict at all fails: no evidence.
- check:<name>: no named check's pass rate is lower than the baseline's by more than `max_check_drop`.
- similarity: mean reference similarity is not lower by more than `max_similarity_drop`.
- heldout_loss: held-out loss is not higher than the baseline's by more than `max_loss_increase`.
- invented: the share of answers with an invented link, e-mail address or phone number is not
  higher than the baseline's by more than `max_invented_increase`.

    decision = evaluate_gate(GateRules(), summary.candidate, summary.baseline, judge=summary.judge)
    decision.passed, [r.message for r in decision.failing]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from serving.evaluation.summary import EvalSummary, JudgeSummary, SideSummary


@dataclass(frozen=True)
class GateRules:
    """What a candidate must show to be promoted; every margin is an absolute difference."""

    min_judge_win_lower: float | None = 0.5
    """Lowest accepted lower bound of the judge win rate's 95% interval. None turns the rule off."""
    max_check_drop: float | None = 0.0
    """How much lower than the baseline's a named check's pass rate may be (0.1 = 10 points). None: off."""
    max_similarity_drop: float | None = 0.02
    """How much lower the mean reference similarity may be. None: off."""
    max_loss_increase: float | None = 0.0
    """How much higher the held-out loss may be. None: off."""
    max_invented_increase: float | None = 0.0
    """How much higher the share of answers with invented links/e-mails/phones may be. None: off."""

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and (not isinstance(value, (int, float)) or value < 0 or value > 1e6):
                raise ValueError(f"gate rule {f.name} must be a non-negative number or None, got {value!r}")
        if self.min_judge_win_lower is not None and self.min_judge_win_lower > 1:
            raise ValueError(f"gate rule min_judge_win_lower is a rate in [0, 1], got {self.min_judge_win_lower}")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict | None) -> "GateRules":
        """Rules from stored or user-given JSON; unknown keys are an error naming them."""
        data = data or {}
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown gate rule(s): {', '.join(sorted(unknown))}")
        return cls(**data)


@dataclass(frozen=True)
class RuleResult:
    name: str
    passed: bool
    figures: dict = field(default_factory=dict)
    message: str = ""
    skipped: bool = False


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    results: list[RuleResult]

    @property
    def failing(self) -> list[RuleResult]:
        return [r for r in self.results if not r.passed]

    def describe(self) -> str:
        if self.passed:
            return "the gate passed: " + "; ".join(r.message for r in self.results if not r.skipped)
        return "the gate refused: " + "; ".join(r.message for r in self.failing)

    def to_json(self) -> dict:
        return asdict(self)


def _skip(name: str, why: str) -> RuleResult:
    return RuleResult(name, True, {}, f"{name}: not checked ({why})", skipped=True)


def _judge_rule(rules: GateRules, judge: JudgeSummary | None) -> RuleResult:
    name = "judge_win_rate"
    if rules.min_judge_win_lower is None:
        return _skip(name, "rule turned off")
    if judge is None or not judge.used:
        return _skip(name, "no judge was used")
    figures = {"wins": judge.wins, "losses": judge.losses, "ties": judge.ties, "unparsable": judge.unparsable,
               "win_rate": judge.win_rate, "ci_low": judge.ci_low, "ci_high": judge.ci_high,
               "required_ci_low": rules.min_judge_win_lower}
    if not judge.wins + judge.losses:
        return RuleResult(name, False, figures, f"{name}: no decisive judge verdict ({judge.ties} ties, "
                                                f"{judge.unparsable} unparsable): no evidence the candidate is better")
    ok = judge.ci_low >= rules.min_judge_win_lower
    verb = "at least" if ok else "below"
    return RuleResult(name, ok, figures,
                      f"{name}: {judge.win_rate:.0%} (95% CI {judge.ci_low:.0%}-{judge.ci_high:.0%}) over "
                      f"{judge.wins + judge.losses} decisive verdicts; lower bound {verb} "
                      f"{rules.min_judge_win_lower:.0%}")


def _drop_rule(name: str, label: str, cand: float | None, base: float | None, margin: float | None,
               *, higher_is_better: bool = True, fmt: str = "{:.3f}") -> RuleResult:
    if margin is None:
        return _skip(name, "rule turned off")
    if cand is None or base is None:
        return _skip(name, f"{label} not measured for {'the candidate' if cand is None else 'the baseline'}")
    change = cand - base if higher_is_better else base - cand  # negative = worse
    ok = change >= -margin - 1e-12
    figures = {"candidate": cand, "baseline": base, "allowed_margin": margin}
    word = "lower" if higher_is_better else "higher"
    msg = (f"{name}: {label} {fmt.format(cand)} vs baseline {fmt.format(base)}"
           + ("" if ok else f", {word} by more than the allowed {fmt.format(margin)}"))
    return RuleResult(name, ok, figures, msg)


def evaluate_gate(rules: GateRules, candidate: SideSummary, baseline: SideSummary, *,
                  judge: JudgeSummary | None = None) -> GateDecision:
    """Apply every rule; the gate passes when no rule fails (skipped rules do not block)."""
    results = [_judge_rule(rules, judge)]
    shared = sorted(set(candidate.check_pass_rates) & set(baseline.check_pass_rates))
    for check in shared:
        results.append(_drop_rule(f"check:{check}", f"pass rate of {check!r}", candidate.check_pass_rates[check],
                                  baseline.check_pass_rates[check], rules.max_check_drop, fmt="{:.0%}"))
    for check in sorted(set(candidate.check_pass_rates) ^ set(baseline.check_pass_rates)):
        results.append(_skip(f"check:{check}", "only one side was checked"))
    results.append(_drop_rule("similarity", "mean reference similarity", candidate.mean_similarity,
                              baseline.mean_similarity, rules.max_similarity_drop))
    results.append(_drop_rule("heldout_loss", "held-out loss", candidate.heldout_loss, baseline.heldout_loss,
                              rules.max_loss_increase, higher_is_better=False))
    invented = _drop_rule("invented", "share of answers with invented links/e-mails/phones",
                          candidate.invented_rate if candidate.items else None,
                          baseline.invented_rate if baseline.items else None,
                          rules.max_invented_increase, higher_is_better=False, fmt="{:.0%}")
    if invented.figures:
        invented.figures.update(candidate_counts=candidate.invented_counts, baseline_counts=baseline.invented_counts)
    results.append(invented)
    return GateDecision(all(r.passed for r in results), results)


def gate_summary(rules: GateRules, summary: EvalSummary) -> GateDecision:
    """The gate on one eval run's summary (candidate vs its baseline)."""
    return evaluate_gate(rules, summary.candidate, summary.baseline, judge=summary.judge)
