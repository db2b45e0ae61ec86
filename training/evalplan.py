"""When a run measures its held-out loss, and on how much of the held-out split: a bounded cost.

    plan = plan_evaluations(config, total_steps=30, held_out=52, per_step=8)
    plan.every, plan.sample, plan.in_run          # evaluate every 15 steps on 16 conversations, 2 times

The held-out loss is measured at the start (the starting point of the curve), every `every` steps on a
fixed sample of at most `config.eval_sample` conversations, and once at the end on the whole held-out
split (the figure a run reports). Without an explicit `eval_every`, evaluations are spaced so that the
in-run ones cost at most `config.eval_share` of the training compute: an evaluated conversation costs
about EVAL_COST of a trained one (a forward pass against forward, backward and optimizer step). Before
this bound, six full evaluations took 44% of a 30-step quick run (docs/benchmarks.md).

    .venv/bin/python -m pytest tests/test_training_evalplan.py -q
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from training.config import RunConfig

MAX_IN_RUN = 5
"""In-run evaluations (the one at the start included) at most, however cheap."""

EVAL_COST = 0.35
"""Compute of an evaluated conversation as a share of a trained one (forward only, against about 3x)."""


@dataclass(frozen=True)
class EvalPlan:
    every: int
    """Optimizer steps between in-run evaluations (the trainer's eval_steps; above total_steps: none after the
    start)."""
    sample: int
    """Held-out conversations each in-run evaluation reads (the fixed sample's size)."""
    held_out: int
    """Held-out conversations the final evaluation reads (all of them)."""
    in_run: int
    """Evaluations the trainer makes on the sample: at the start and at every multiple of `every`."""
    final: bool
    """Whether a final evaluation on the whole held-out split follows (not when the sample is the whole split
    and the trainer just evaluated at the last step)."""

    @property
    def evaluations(self) -> int:
        """All evaluations of the run."""
        return self.in_run + int(self.final)

    def evaluated_conversations(self) -> int:
        """Conversations all evaluations read together (what the estimate and the ETA count)."""
        return self.in_run * self.sample + (self.held_out if self.final else 0)


def plan_evaluations(config: RunConfig, *, total_steps: int, held_out: int, per_step: int) -> EvalPlan:
    """The evaluation plan of a run of `total_steps` optimizer steps of `per_step` conversations each. Pure."""
    if held_out <= 0 or total_steps <= 0:
        return EvalPlan(every=max(total_steps, 1), sample=0, held_out=0, in_run=0, final=False)
    sample = min(held_out, config.eval_sample) if config.eval_sample else held_out
    if config.eval_every:
        every = config.eval_every
    else:
        trained = total_steps * max(per_step, 1)
        affordable = config.eval_share * trained / (EVAL_COST * sample)  # in-run evaluations the budget pays for
        count = max(1, min(MAX_IN_RUN, math.floor(affordable)))
        every = math.ceil(total_steps / count) if count > 1 else total_steps + 1
        if total_steps % every == 0:  # not at the last step: the final evaluation reads the whole split then
            every += 1
    in_run = 1 + total_steps // every
    final = not (sample == held_out and total_steps % every == 0)
    return EvalPlan(every=every, sample=sample, held_out=held_out, in_run=in_run, final=final)


def evaluation_seconds_left(plan: EvalPlan | None, *, step: int, total_steps: int, seconds_each: float | None) -> float:
    """Seconds the evaluations after optimizer step `step` will still take, from the measured seconds of one
    in-run evaluation (the final one reads held_out/sample times as much). 0 when nothing is measured yet."""
    if plan is None or not seconds_each or not plan.sample:
        return 0.0
    left = max(total_steps // plan.every - step // plan.every, 0)  # in-run evaluations at later multiples
    final = seconds_each * plan.held_out / plan.sample if plan.final else 0.0
    return left * seconds_each + final
