"""Typed results of a training run: what a finished phase or run measured, as stored with the run.

Runs store these as JSON (runs.metrics, adapter meta); readers go through `RunMetrics.from_dict`, so a
misspelt field is an AttributeError in a test, not a blank cell in a table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class RunMetrics:
    """One training phase's or one run's results."""

    steps: int = 0
    """Optimizer steps done."""
    total_steps: int = 0
    """Optimizer steps planned."""
    stopped_early: bool = False
    """Cancelled (or stopped by a callback) before total_steps."""
    train_loss: float | None = None
    """Mean training loss over the whole run (the trainer's `training_loss`)."""
    final_loss: float | None = None
    """Training loss at the last logged step."""
    eval_loss: float | None = None
    """Held-out loss at the end (None without a held-out split)."""
    eval_loss_start: float | None = None
    """Held-out loss before the first step, when it was measured."""
    tokens: int | None = None
    """Tokens the model read while training (inputs, padding excluded where the collator knows it)."""
    train_runtime_s: float | None = None
    """Seconds spent in the trainer's training loop."""
    tokens_per_second: float | None = None
    """Trained tokens per second of training time: tokens / (train_runtime_s less the in-run held-out
    evaluations). The live progress (training.callbacks) reports the same figure."""
    eval_runtime_s: float | None = None
    """Seconds spent in held-out evaluations, all of them (the estimate's measured evaluation speed)."""
    eval_tokens: int | None = None
    """Tokens those evaluations read in all."""
    method: str | None = None
    """The phase's method in a two-phase run ("sft"; the preference phase's is the run's)."""
    data: dict[str, Any] | None = None
    """What the data preparation reported (split sizes, truncations)."""
    phases: list["RunMetrics"] = field(default_factory=list)
    """Each phase's own results, for a two-phase method."""
    extra: dict[str, float] = field(default_factory=dict)
    """Method-specific figures (TRL's rewards/* for KTO and DPO)."""

    def __post_init__(self):
        if self.train_runtime_s and self.tokens and self.tokens_per_second is None:
            self.tokens_per_second = self.tokens / self.train_runtime_s

    @classmethod
    def from_dict(cls, data: dict | None) -> "RunMetrics":
        """From the stored JSON; keys that are not fields (e.g. rewards/chosen) go to `extra`."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        extra = {**data.pop("extra", {}), **{k: data.pop(k) for k in list(data) if k not in known}}
        phases = [cls.from_dict(p) for p in data.pop("phases", [])]
        return cls(**data, phases=phases, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["phases"] = [p.to_dict() for p in self.phases]
        return out

    @classmethod
    def combine(cls, phases: list["RunMetrics"], *, total_steps: int, planned_phases: int) -> "RunMetrics":
        """A two-phase run: sums of steps, tokens and time; the last phase's losses; each phase kept."""
        last = phases[-1]
        runtime = sum(p.train_runtime_s or 0 for p in phases)
        return cls(steps=sum(p.steps for p in phases), total_steps=total_steps,
                   stopped_early=len(phases) < planned_phases or any(p.stopped_early for p in phases),
                   train_loss=last.train_loss, final_loss=last.final_loss,
                   tokens=sum(p.tokens or 0 for p in phases), train_runtime_s=runtime or None, phases=phases)
