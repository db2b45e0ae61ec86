"""store.runs on a temp database: queue order, atomic claim, cancel, metrics.

Run: .venv/bin/python -m pytest tests/test_training_store.py -q
"""

from __future__ import annotations

import pytest

from store import runs


def _new(db, tmp_path, **kw):
    return runs.create_run(db, config={"seed": 1, **kw}, method="sft", dataset_version_id=None, base_model="/m",
                           parent_adapter_id=None, runs_dir=tmp_path / "runs")


def test_create_and_get(db, tmp_path):
    run_id = _new(db, tmp_path)
    run = runs.get_run(db, run_id)
    assert run["status"] == "queued" and run["config"] == {"seed": 1}
    assert run["run_dir"] == str(tmp_path / "runs" / str(run_id))
    with pytest.raises(runs.RunNotFound):
        runs.get_run(db, 999)


def test_claim_takes_oldest_and_respects_the_running_limit(db, tmp_path):
    a, b, c = (_new(db, tmp_path) for _ in range(3))
    assert runs.claim_next_queued(db, max_running=1)["id"] == a
    assert runs.claim_next_queued(db, max_running=1) is None
    assert runs.claim_next_queued(db, max_running=2)["id"] == b
    runs.mark_finished(db, a, "completed", metrics={"eval_loss": 1.0})
    runs.mark_failed(db, b, "boom", log_tail="tail")
    with runs.write_lock(db):
        assert runs.claim_next_queued(db, max_running=1)["id"] == c
    assert runs.get_run(db, c)["status"] == "running"
    assert runs.get_run(db, a)["metrics"] == {"eval_loss": 1.0}
    assert runs.get_run(db, b)["error"] == "boom"
    assert [r["id"] for r in runs.list_runs(db)] == [c, b, a]
    assert [r["id"] for r in runs.list_runs(db, status=("completed", "failed"))] == [b, a]


def test_cancel_queued_at_once_and_running_by_flag(db, tmp_path):
    a, b = _new(db, tmp_path), _new(db, tmp_path)
    runs.claim_next_queued(db)
    assert runs.request_cancel(db, b) == "cancelled"
    assert runs.get_run(db, b)["status"] == "cancelled"
    assert not runs.is_cancel_requested(db, a)
    assert runs.request_cancel(db, a, keep_checkpoint=True) == "running"
    assert runs.is_cancel_requested(db, a) and runs.get_run(db, a)["keep_checkpoint"] == 1
    runs.mark_finished(db, a, "cancelled")
    assert runs.request_cancel(db, a) == "cancelled"


def test_metrics_in_order_and_latest(db, tmp_path):
    a = _new(db, tmp_path)
    runs.add_metrics(db, a, 1, {"loss": 2.0, "learning_rate": 1e-4, "flag": True, "text": "x"})
    runs.add_metrics(db, a, 2, {"loss": 1.5})
    runs.add_metrics(db, a, 2, {"eval_loss": 1.7}, split="eval")
    assert [m["value"] for m in runs.run_metrics(db, a, "loss")] == [2.0, 1.5]
    latest = runs.latest_metrics(db, a)
    assert latest["loss"] == {"step": 2, "value": 1.5, "split": "train"}
    assert latest["eval_loss"]["split"] == "eval"
    assert "flag" not in latest and "text" not in latest
    runs.update_progress(db, a, step=2, total_steps=10)
    assert (runs.get_run(db, a)["step"], runs.get_run(db, a)["total_steps"]) == (2, 10)
