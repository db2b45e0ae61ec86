"""A run's cost before it starts (`tuneloop train --dry-run`, the Train tab's estimate): plan, tokenize, measure, estimate.

    plan = preview(settings, dataset="support@2", preset="quick")    # RunPreview: config + estimate
    plan.estimate.steps, plan.estimate.seconds

Nothing is queued or written: `preview` plans the run exactly as `tuneloop train` would
(training.planning), tokenizes its conversations with the base model's tokenizer and its split
(training.data), and finds this machine's speed: the newest finished run on the same base model
(`past_speed`, its measured seconds per trained token), else a short probe (`probe_speed`: the
model loaded with the run's LoRA, three real optimizer steps on the run's own examples and one
evaluation, timed; about 20-40 s for the default model on 2 CPU cores), else none. The arithmetic is
training.estimate's.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime

# As training.launch starts training processes: OpenMP threads that sleep rather than spin, so the probe
# measures the speed a run will have (spinning made CPU steps 1.5-2.4x slower next to other work). Only
# effective when torch is not imported yet (the CLI imports it later, in the probe).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from store import runs
from store.datasets import iter_version_conversations
from store.db import connect
from store.settings import Settings
from training.config import RunConfig
from training.estimate import DataStats, RunEstimate, Speed, estimate_run, speed_from_run
from training.planning import plan_run
from training.results import RunMetrics

log = logging.getLogger("tuneloop.train")

PROBE_STEPS = 3
"""Optimizer steps the probe takes; the first is not timed (it warms caches and allocators up)."""
PROBE_EVAL_EXAMPLES = 8
PROCESS_START_S = 12.0
"""Seconds a run's process spends before loading the model (starting Python, importing torch and transformers,
reading its data), which the probe, running in an already started process, does not see."""


@dataclass
class RunPreview:
    """A planned run (not queued) and what it will cost."""

    config: RunConfig
    estimate: RunEstimate
    speed: Speed | None = None
    """The speed the time came from (None: no time)."""

    def to_json(self) -> dict:
        return {"config": self.config.to_dict(), "estimate": self.estimate.to_json()}


def preview(settings: Settings, *, dataset: str, probe: bool = True, speed: Speed | None = None,
            fallback_speed: Speed | None = None, **options) -> RunPreview:
    """Plan the run as `start_run` would (same refusals), then estimate it; writes nothing.

    `speed`: use this one; otherwise the last runs', else `fallback_speed` (the Train tab keeps its
    last probe's), else a probe when `probe` is true.
    """
    from training import recipe

    config = plan_run(settings, dataset=dataset, **options)
    note = None
    if "sft" not in config.parts:
        return RunPreview(config, _preference_only(settings, config))
    split = tokenize(settings, config)
    stats = DataStats.from_split_stats(split.stats)
    if speed is None:
        with connect(settings.db_path) as db:
            speed = past_speed(db, config.base_model)
    if speed is None:
        speed = fallback_speed
    if speed is None and probe:
        speed = probe_speed(config, split)
    if config.preference_kind:
        note = f"the {config.preference_kind.upper()} phase after SFT is not in the time"
    est = estimate_run(config, stats, speed, device=recipe.device_kind())
    if config.preference_kind:
        pref = _preference_steps(settings, config)
        est = RunEstimate(**{**est.to_json(), "steps": est.steps + pref, "note": note})
    return RunPreview(config, est, speed)


def tokenize(settings: Settings, config: RunConfig):
    """The run's split, tokenized exactly as the recipe will (same seed, cut, eval items held out)."""
    from training import recipe
    from training.data import prepare_examples

    with connect(settings.db_path) as db:
        conversations = list(iter_version_conversations(db, config.dataset_version_id))
    tokenizer = recipe.load_tokenizer(config.base_model)
    split = prepare_examples(tokenizer, conversations, eval_fraction=config.eval_fraction, seed=config.seed,
                             max_seq_len=config.max_seq_len, never_train=config.excluded_conversation_ids)
    return split


def past_speed(db, base_model: str) -> Speed | None:
    """The measured speed of the newest completed SFT run on `base_model` (None when there is none)."""
    for run in runs.list_runs(db, status="completed", limit=20):
        if run["base_model"] != base_model or run["method"] != "sft":
            continue
        speed = run_speed(db, run)
        if speed is not None:
            return speed
    return None


def run_speed(db, run: dict) -> Speed | None:
    """One finished run's speed: its trained tokens over its training clock (evaluation excluded), its wall time."""
    metrics = RunMetrics.from_dict(run["metrics"])
    latest = runs.latest_metrics(db, run["id"])
    tps = latest.get("tokens_per_second", {}).get("value")
    train_s = metrics.tokens / tps if (metrics.tokens and tps) else None
    wall = None
    if run.get("started_at") and run.get("finished_at"):
        wall = (datetime.fromisoformat(run["finished_at"]) - datetime.fromisoformat(run["started_at"])).total_seconds()
    return speed_from_run(run["id"], tokens=metrics.tokens, train_seconds=train_s, wall_seconds=wall,
                          eval_tokens=metrics.eval_tokens, eval_seconds=metrics.eval_runtime_s)


def probe_speed(config: RunConfig, split) -> Speed:
    """Time a few real optimizer steps and one evaluation of this run's model on its own examples."""
    from transformers import TrainerCallback
    from transformers.utils import logging as hf_logging

    from training import recipe
    from training.data import Split

    rng = random.Random(config.seed)
    per_step = config.batch_size * config.grad_accum
    train = rng.sample(split.train, min(len(split.train), per_step * PROBE_STEPS))
    held = (split.eval or split.train)[:PROBE_EVAL_EXAMPLES]
    probe_cfg = RunConfig.from_dict({**config.to_dict(), "max_steps": PROBE_STEPS, "epochs": None,
                                     "eval_fraction": 0.0, "eval_every": None})

    class Clock(TrainerCallback):
        def __init__(self):
            self.marks: list[tuple[float, int]] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append((time.monotonic(), state.num_input_tokens_seen or 0))

    clock = Clock()
    hf_logging.disable_progress_bar()  # no weight-loading bars on a --json answer
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tuneloop-probe-") as tmp:
        session = recipe.setup(probe_cfg, [], output_dir=tmp, callbacks=[clock], split=Split(train, [], {}))
        loaded = time.monotonic() - t0
        session.trainer.train()
        e0 = time.monotonic()
        session.trainer.evaluate(eval_dataset=held)
        eval_s = time.monotonic() - e0
        recipe.cleanup(session)
    marks = clock.marks
    if len(marks) >= 2:
        (t_a, n_a), (t_b, n_b) = marks[0], marks[-1]
        per_token = (t_b - t_a) / max(n_b - n_a, 1)
    else:  # a one-step run: time it whole
        per_token = (marks[0][0] - t0 - loaded) / max(marks[0][1], 1)
    eval_tokens = sum(len(e["input_ids"]) for e in held)
    return Speed(per_token, eval_s / max(eval_tokens, 1), loaded + PROCESS_START_S,
                 f"a {PROBE_STEPS}-step probe just now")


def _preference_steps(settings: Settings, config: RunConfig) -> int:
    from store.feedback import iter_preference_examples
    from training import preference

    with connect(settings.db_path) as db:
        rows = list(iter_preference_examples(db, config.dataset_version_id, config.preference_kind))
    return preference.planned_steps(config, len(rows))


def _preference_only(settings: Settings, config: RunConfig) -> RunEstimate:
    steps = _preference_steps(settings, config)
    return RunEstimate(steps=steps, train_tokens=0, tokens_per_step=0.0, evaluations=0, eval_tokens=0,
                       train_examples=0, eval_examples=0, truncated=0, dropped=0, conversations=0,
                       note=f"a {config.method.upper()} run: steps only, its time is not estimated yet")
