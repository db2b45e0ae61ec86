"""What a run will cost before it starts: steps, tokens, truncated conversations and time, as pure arithmetic.

    est = estimate_run(config, stats, speed, device="cpu")   # RunEstimate: steps, tokens, seconds, ...

`stats` is what tokenizing the run's data found (`DataStats`, from training.data's split stats),
`speed` how fast this machine trains and evaluates (`Speed`: from the last runs on the same base
model, `speed_from_run`, or from a short probe, training.dryrun). Time is modelled as a fixed
start-up (loading the model, saving the adapter) plus seconds per trained token times the tokens
the run will train on, plus seconds per evaluated token times the tokens its held-out evaluations
read. Per token, not per step: a step's cost follows the length of its conversations, and a
preset or dataset change moves tokens per step a lot (docs/benchmarks.md has the error measured).

IO (tokenizing, the probe, reading past runs) is training.dryrun's; both doors show `RunEstimate`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from training.config import RunConfig

EVAL_TOKEN_COST = 0.35
"""Seconds per evaluated token as a share of seconds per trained token, when no evaluation was measured:
an evaluation is a forward pass only, a training step a forward and a backward pass (about 3x)."""


@dataclass(frozen=True)
class DataStats:
    """What tokenizing the run's conversations found (training.data.build_examples' counts)."""

    train_examples: int
    """Conversations that train (after the held-out split, minus dropped ones)."""
    train_tokens: int
    """Tokens of the training examples, after truncation: one epoch reads these."""
    eval_examples: int = 0
    eval_tokens: int = 0
    """Tokens of the held-out examples: one full evaluation reads these."""
    truncated: int = 0
    """Conversations cut at max_seq_len (at a whole turn), both sides of the split."""
    dropped: int = 0
    """Conversations left out: too long even for their first answer, or nothing to train."""
    conversations: int = 0
    """Conversations of the dataset version the run uses (before the split)."""

    @classmethod
    def from_split_stats(cls, stats: dict, *, conversations: int | None = None) -> "DataStats":
        """From training.data.Split.stats ({"train": {...}, "eval": {...}})."""
        tr, ev = stats.get("train", {}), stats.get("eval", {})

        def both(key: str) -> int:
            return int(tr.get(key, 0)) + int(ev.get(key, 0))

        return cls(train_examples=int(tr.get("examples", 0)), train_tokens=int(tr.get("tokens", 0)),
                   eval_examples=int(ev.get("examples", 0)), eval_tokens=int(ev.get("tokens", 0)),
                   truncated=both("truncated"), dropped=both("dropped_too_long") + both("dropped_nothing_to_train"),
                   conversations=conversations if conversations is not None else both("conversations"))


@dataclass(frozen=True)
class Speed:
    """How fast this machine trains this base model."""

    train_s_per_token: float
    """Seconds of training per trained token (forward, backward and optimizer step, no evaluation)."""
    eval_s_per_token: float
    """Seconds per token a held-out evaluation reads."""
    overhead_s: float
    """Fixed seconds of a run besides training and evaluation: starting, loading the model, saving."""
    source: str
    """Where it comes from, in words: "run 12 (same base model)" or "a 3-step probe"."""

    def __post_init__(self):
        for name in ("train_s_per_token", "eval_s_per_token", "overhead_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"Speed.{name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class RunEstimate:
    """What a planned run will do and, when a speed is known, how long it will take here."""

    steps: int
    """Optimizer steps (the progress bar's total)."""
    train_tokens: int
    """Tokens the run trains on in all (one epoch's times the epochs, or the steps' worth)."""
    tokens_per_step: float
    evaluations: int
    """Held-out evaluations: at the start, during the run on a sample, and at the end (training.evalplan)."""
    eval_tokens: int
    """Tokens those evaluations read in all."""
    train_examples: int
    eval_examples: int
    truncated: int
    dropped: int
    conversations: int
    seconds: float | None = None
    """Estimated wall time of the run, None without a speed."""
    train_seconds: float | None = None
    eval_seconds: float | None = None
    overhead_seconds: float | None = None
    seconds_per_step: float | None = None
    speed_source: str | None = None
    note: str | None = None
    """What the estimate leaves out, in words (e.g. a preference phase's time)."""

    def to_json(self) -> dict:
        return asdict(self)


def conversations_per_step(config: RunConfig) -> int:
    """Conversations each optimizer step sees (the same on CPU and GPU: training.recipe.batching_plan)."""
    return config.batch_size * config.grad_accum


def total_steps(config: RunConfig, n_train: int, *, device: str = "cpu", world_size: int = 1) -> int:
    """Optimizer steps the trainer will take (training.recipe's own arithmetic, so the two never disagree)."""
    from training.recipe import estimate_total_steps

    return estimate_total_steps(config, n_train, world_size=world_size, device=device)


def evaluation_plan(config: RunConfig, steps: int, held_out: int, *, world_size: int = 1):
    """The run's held-out evaluations (training.evalplan, the recipe's own plan, so the two never disagree)."""
    from training.evalplan import plan_evaluations

    return plan_evaluations(config, total_steps=steps, held_out=held_out,
                            per_step=conversations_per_step(config) * world_size)


def estimate_run(config: RunConfig, stats: DataStats, speed: Speed | None, *, device: str = "cpu",
                 world_size: int = 1) -> RunEstimate:
    """Steps, tokens and (with a speed) seconds of the run `config` on data `stats`. Pure.

    Trained tokens: epochs x one epoch's tokens, or with max_steps the steps x conversations per
    step x the mean tokens of a conversation (a short run reads part of an epoch, a long one
    wraps around). Evaluations follow training.evalplan: a sample of the held-out side during the
    run, all of it at the end.
    """
    steps = total_steps(config, stats.train_examples, device=device, world_size=world_size)
    mean = stats.train_tokens / stats.train_examples if stats.train_examples else 0.0
    if config.max_steps:
        tokens = steps * conversations_per_step(config) * world_size * mean
    else:
        tokens = (config.epochs or 0) * stats.train_tokens
    per_step = tokens / steps if steps else 0.0
    plan = evaluation_plan(config, steps, stats.eval_examples, world_size=world_size)
    evals = plan.evaluations
    eval_mean = stats.eval_tokens / stats.eval_examples if stats.eval_examples else 0.0
    eval_tokens = plan.evaluated_conversations() * eval_mean  # in-run ones on a sample, the last on all
    base = dict(steps=steps, train_tokens=int(round(tokens)), tokens_per_step=round(per_step, 1),
                evaluations=evals, eval_tokens=int(eval_tokens), train_examples=stats.train_examples,
                eval_examples=stats.eval_examples, truncated=stats.truncated, dropped=stats.dropped,
                conversations=stats.conversations)
    if speed is None:
        return RunEstimate(**base)
    train_s = tokens * speed.train_s_per_token
    eval_s = eval_tokens * speed.eval_s_per_token
    total = speed.overhead_s + train_s + eval_s
    return RunEstimate(**base, seconds=total, train_seconds=train_s, eval_seconds=eval_s,
                       overhead_seconds=speed.overhead_s, seconds_per_step=train_s / steps if steps else None,
                       speed_source=speed.source)


def speed_from_run(run_id: int, *, tokens: int | None, train_seconds: float | None, wall_seconds: float | None,
                   eval_tokens: int | None = None, eval_seconds: float | None = None) -> Speed | None:
    """A finished run's measured speed, or None when it measured too little to say.

    `train_seconds` is training time without evaluation (the progress callback's clock);
    `wall_seconds` from the run's start to its end. Without measured evaluations, their cost per
    token is EVAL_TOKEN_COST of a trained token's; what the wall time holds beyond training and
    evaluation is the run's fixed overhead.
    """
    if not tokens or not train_seconds or train_seconds <= 0:
        return None
    per_token = train_seconds / tokens
    if eval_tokens and eval_seconds:
        eval_per_token = eval_seconds / eval_tokens
    else:
        eval_per_token, eval_seconds = per_token * EVAL_TOKEN_COST, (eval_tokens or 0) * per_token * EVAL_TOKEN_COST
    overhead = max((wall_seconds or 0) - train_seconds - (eval_seconds or 0), 0.0)
    return Speed(per_token, eval_per_token, overhead, f"run {run_id} (same base model)")
