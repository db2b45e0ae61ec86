"""The pre-run estimate: pure arithmetic (training.estimate), and `tuneloop train --dry-run` on a tiny model.

Run: .venv/bin/python -m pytest tests/test_training_estimate.py -q
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from store import runs
from store.db import connect
from training.config import RunConfig
from training.estimate import DataStats, Speed, estimate_run, evaluation_plan, speed_from_run
from training_support import add_dataset, make_tiny_model, support_conversations
from ui.text import estimate_lines

cli = CliRunner()
STATS = DataStats(train_examples=90, train_tokens=90 * 200, eval_examples=10, eval_tokens=10 * 200, truncated=3,
                  dropped=1, conversations=101)
SPEED = Speed(train_s_per_token=0.01, eval_s_per_token=0.003, overhead_s=20.0, source="test")


def test_steps_tokens_and_time_follow_the_epochs():
    cfg = RunConfig.from_preset("quick")  # batch 4 x 1, one epoch
    est = estimate_run(cfg, STATS, SPEED)
    assert est.steps == 23  # ceil(90 / 4)
    assert est.train_tokens == 18000
    plan = evaluation_plan(cfg, 23, 10)  # the recipe's plan: in-run evaluations on a sample, then all at the end
    assert est.evaluations == plan.evaluations and plan.final
    assert est.eval_tokens == plan.evaluated_conversations() * 200
    assert est.train_seconds == pytest.approx(180.0)
    assert est.eval_seconds == pytest.approx(est.eval_tokens * 0.003)
    assert est.seconds == pytest.approx(20 + 180 + est.eval_seconds)
    assert est.seconds_per_step == pytest.approx(180 / 23)
    assert (est.truncated, est.dropped, est.conversations) == (3, 1, 101)


def test_max_steps_reads_the_steps_worth_of_tokens_and_more_epochs_scale_time():
    short = estimate_run(RunConfig.from_preset("quick", max_steps=5), STATS, SPEED)
    assert short.steps == 5 and short.train_tokens == 5 * 4 * 200
    two = estimate_run(RunConfig.from_preset("quick", epochs=2.0), STATS, SPEED)
    one = estimate_run(RunConfig.from_preset("quick", epochs=1.0), STATS, SPEED)
    assert two.train_seconds == pytest.approx(2 * one.train_seconds)
    assert two.steps == 46


def test_without_held_out_data_or_speed_there_is_no_evaluation_and_no_time():
    no_eval = DataStats(train_examples=8, train_tokens=800)
    est = estimate_run(RunConfig.from_preset("quick", eval_fraction=0.0), no_eval, None)
    assert (est.evaluations, est.eval_tokens, est.seconds) == (0, 0, None)
    assert any("time: unknown" in line for line in estimate_lines(est))


def test_eval_every_sets_the_number_of_evaluations():
    cfg = RunConfig.from_preset("quick", max_steps=30, eval_every=10, eval_sample=0)
    assert evaluation_plan(cfg, 30, 10).evaluations == 4  # 0, 10, 20, 30 on all of them
    assert evaluation_plan(cfg, 31, 10).evaluations == 5  # and the end
    assert evaluation_plan(cfg, 30, 0).evaluations == 0
    est = estimate_run(cfg, STATS, SPEED)
    assert (est.evaluations, est.eval_tokens) == (4, 4 * 2000)


def test_speed_from_a_past_run_splits_training_evaluation_and_start_up():
    speed = speed_from_run(7, tokens=10_000, train_seconds=100.0, wall_seconds=160.0, eval_tokens=2000,
                           eval_seconds=10.0)
    assert speed.train_s_per_token == pytest.approx(0.01)
    assert speed.eval_s_per_token == pytest.approx(0.005)
    assert speed.overhead_s == pytest.approx(50.0)
    assert "run 7" in speed.source
    assert speed_from_run(7, tokens=None, train_seconds=100.0, wall_seconds=160.0) is None
    with pytest.raises(ValueError, match="overhead_s"):
        Speed(0.1, 0.1, float("nan"), "x")


def test_split_stats_count_both_sides():
    stats = DataStats.from_split_stats({"train": {"examples": 9, "tokens": 900, "truncated": 2, "dropped_too_long": 1,
                                                  "dropped_nothing_to_train": 0, "conversations": 10},
                                        "eval": {"examples": 1, "tokens": 80, "truncated": 1,
                                                 "dropped_too_long": 0, "dropped_nothing_to_train": 0,
                                                 "conversations": 1}})
    assert (stats.train_examples, stats.eval_tokens, stats.truncated, stats.dropped, stats.conversations) == \
        (9, 80, 3, 1, 11)


def test_estimate_lines_say_steps_tokens_truncation_and_time():
    text = "\n".join(estimate_lines(estimate_run(RunConfig.from_preset("quick"), STATS, SPEED)))
    assert "23 optimizer steps" in text and "18,000 tokens" in text
    assert "3 conversations cut at the length limit" in text
    assert "about 3 min" in text and "s per step" in text and "speed from test" in text


# --- the dry run, through the CLI, on a tiny model ---
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture
def tiny_env(data_dir, tiny_model, monkeypatch):
    from store.settings import Settings

    monkeypatch.setenv("TUNELOOP_BASE_MODEL", str(tiny_model))
    monkeypatch.setenv("TUNELOOP_BASE_MODEL_NAME", "tiny")
    s = Settings(_env_file=None)
    with connect(s.db_path) as db:
        add_dataset(db, "Support Chats", support_conversations(20))
    return s


def test_dry_run_estimates_from_a_probe_and_writes_nothing(tiny_env):
    from ui.cli import app

    result = cli.invoke(app, ["train", "--dataset", "Support Chats", "--preset", "quick", "--max-seq-len", "256",
                              "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    est = out["estimate"]
    assert est["steps"] == 5  # 18 training conversations (2 held out), 4 per step
    assert est["train_examples"] == 18 and est["eval_examples"] == 2
    assert est["truncated"] > 0  # several chats are longer than 256 byte-tokens
    assert est["seconds"] > 0 and "probe" in est["speed_source"]
    assert out["config"]["max_seq_len"] == 256
    with connect(tiny_env.db_path) as db:
        assert runs.list_runs(db) == []
    assert not tiny_env.runs_dir.exists() or not any(tiny_env.runs_dir.iterdir())

    text = cli.invoke(app, ["train", "--dataset", "Support Chats", "--preset", "quick", "--dry-run", "--no-probe"])
    assert text.exit_code == 0, text.output
    assert "dry run (nothing started)" in text.output and "time: unknown" in text.output
    refused = cli.invoke(app, ["train", "--dataset", "Support Chats", "--rank", "64", "--dry-run"])
    assert refused.exit_code == 2 and "--rank" in refused.output


def test_dry_run_uses_the_last_runs_speed_when_there_is_one(tiny_env):
    from training.dryrun import preview

    with connect(tiny_env.db_path) as db:
        cfg = {"dataset": "Support Chats", "base_model": str(tiny_env.base_model)}
        run_id = runs.create_run(db, config=cfg, method="sft", dataset_version_id=1, base_model=tiny_env.base_model,
                                 parent_adapter_id=None, runs_dir=tiny_env.runs_dir)
        runs.mark_running(db, run_id)
        runs.add_metrics(db, run_id, 10, {"tokens_per_second": 500.0}, split="progress")
        runs.mark_finished(db, run_id, "completed", metrics={"steps": 10, "tokens": 5000, "eval_runtime_s": 2.0,
                                                             "eval_tokens": 1000})
    plan = preview(tiny_env, dataset="Support Chats", preset="quick", probe=False)
    est = plan.estimate
    assert est.speed_source == f"run {run_id} (same base model)"
    assert est.train_seconds == pytest.approx(est.train_tokens / 500.0)
    assert est.eval_seconds == pytest.approx(est.eval_tokens * 0.002)
