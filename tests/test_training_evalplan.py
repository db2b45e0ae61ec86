"""The held-out evaluations' bounded cost (training.evalplan) and the time left that counts them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from training.callbacks import StoreProgressCallback
from training.config import RunConfig
from training.evalplan import EVAL_COST, evaluation_seconds_left, plan_evaluations
from training.recipe import eval_sample


def cfg(**kw) -> RunConfig:
    return RunConfig.from_preset("quick", base_model="m", dataset="d@1", **kw)


def test_a_quick_run_spends_at_most_its_share_on_in_run_evaluations():
    # The run the issue measured: 30 steps of 4 conversations, 52 held out: six full evaluations before.
    plan = plan_evaluations(cfg(), total_steps=30, held_out=52, per_step=4)
    assert plan.sample == 16 and plan.final and plan.held_out == 52
    in_run_cost = plan.in_run * plan.sample * EVAL_COST
    assert in_run_cost <= 0.1 * 30 * 4 + plan.sample * EVAL_COST  # the start's evaluation is always made
    assert plan.evaluated_conversations() < 6 * 52 / 2


def test_a_long_run_evaluates_at_most_five_times_and_a_set_cadence_is_kept():
    plan = plan_evaluations(cfg(), total_steps=1000, held_out=40, per_step=8)
    assert plan.in_run == 5 and plan.every == 201 and plan.final
    assert plan_evaluations(cfg(eval_every=7), total_steps=30, held_out=10, per_step=4).every == 7
    whole = plan_evaluations(cfg(eval_sample=0), total_steps=10, held_out=30, per_step=4)
    assert whole.sample == 30
    assert plan_evaluations(cfg(), total_steps=10, held_out=0, per_step=4).evaluations == 0


def test_the_sample_is_fixed_by_the_seed():
    rows = list(range(50))
    assert eval_sample(rows, 16, 42) == eval_sample(rows, 16, 42) and len(eval_sample(rows, 16, 42)) == 16
    assert eval_sample(rows, 99, 42) == rows


def test_time_left_counts_the_evaluations_to_come():
    plan = plan_evaluations(cfg(eval_every=10), total_steps=30, held_out=32, per_step=4)
    assert evaluation_seconds_left(plan, step=5, total_steps=30, seconds_each=2.0) == 3 * 2.0 + 2.0 * 32 / 16
    assert evaluation_seconds_left(plan, step=30, total_steps=30, seconds_each=2.0) == 4.0  # the final one
    assert evaluation_seconds_left(plan, step=5, total_steps=30, seconds_each=None) == 0.0


def test_the_progress_callback_reports_eta_with_evaluations(monkeypatch):
    cb = StoreProgressCallback(":memory:", 1)
    sent = []
    monkeypatch.setattr(cb, "report_progress", lambda **kw: None)
    monkeypatch.setattr(cb, "report_metrics", lambda step, values, split: sent.append(values))
    monkeypatch.setattr(cb, "cancel_asked", lambda: False)
    cb.plan_evaluations(plan_evaluations(cfg(eval_every=10), total_steps=20, held_out=16, per_step=4))
    state = SimpleNamespace(global_step=0, max_steps=20, num_input_tokens_seen=0, is_world_process_zero=True)
    control = SimpleNamespace(should_training_stop=False)
    cb.on_train_begin(None, state, control)
    cb.on_log(None, state, control, logs={"eval_loss": 2.0, "eval_runtime": 30.0})
    state.global_step, state.num_input_tokens_seen = 1, 100
    cb._last -= 5.0  # the step took five seconds
    cb.on_step_end(None, state, control)
    eta = sent[-1]["eta_seconds"]
    assert eta == pytest.approx(19 * 5.0 + 30.0 + 30.0, rel=0.05)  # steps, the step-10 evaluation, the final one
    assert sent[-1]["tokens_per_second"] == pytest.approx(20, rel=0.05)


@pytest.mark.slow
def test_a_real_run_evaluates_its_sample_in_the_run_then_the_whole_split_and_its_speed_leaves_them_out(tmp_path):
    # Issue 14, bugs 4 and 6: in-run evaluations read the seeded sample, the reported held-out loss the whole
    # split, and the run's trained tokens/s counts training time only (it used to read 55 where the UI said 105).
    from training import recipe
    from training_support import make_tiny_model, support_conversations

    model = make_tiny_model(tmp_path / "tiny-llama")
    config = RunConfig.from_preset("quick", base_model=str(model), dataset="d@1", max_steps=4, eval_every=2,
                                   eval_sample=3, eval_fraction=0.4, max_seq_len=256, warmup_ratio=0)
    session = recipe.setup(config, support_conversations(16), output_dir=tmp_path / "trainer")
    try:
        held = session.split.eval
        assert session.eval_plan.sample == 3 < len(held) and len(session.trainer.eval_dataset) == 3
        result = recipe.train(session)
        evals = [h for h in session.trainer.state.log_history if "eval_loss" in h]
        assert [h["step"] for h in evals] == [0, 2, 4, 4]  # start and every 2 steps on the sample, then all
        whole = session.trainer.evaluate(eval_dataset=held)["eval_loss"]
        sample = session.trainer.evaluate()["eval_loss"]
    finally:
        recipe.cleanup(session)
    assert result.eval_loss == pytest.approx(whole) and result.eval_loss != pytest.approx(sample)
    in_run_s = sum(h["eval_runtime"] for h in evals[:-1])
    assert result.tokens_per_second == pytest.approx(result.tokens / (result.train_runtime_s - in_run_s))
    assert result.tokens_per_second > result.tokens / result.train_runtime_s
