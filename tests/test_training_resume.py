"""Checkpoints and resume: the budget rule, the refusals, and a real run SIGKILLed mid-way and resumed.

The slow test starts a real `python -m training.worker` on the tiny Llama of tests/training_support.py
(like tests/test_training_queue.py), kills its process after a checkpoint, and resumes it with
`tuneloop runs resume` to the same final step count.

Run: .venv/bin/python -m pytest tests/test_training_resume.py -q
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from store import runs
from store.db import connect
from store.settings import Settings
from training import launch, queue
from training.checkpoints import Kept, enforce_budget, latest_checkpoint, over_budget, save_every
from training_support import add_dataset, make_tiny_model, support_conversations

cli = CliRunner()


def test_about_ten_checkpoints_per_run():
    assert save_every(3) == 1 and save_every(100) == 10 and save_every(101) == 11


def test_budget_keeps_the_newest_runs_checkpoints():
    kept = [Kept(1, 40, Path("a")), Kept(2, 40, Path("b")), Kept(3, 40, Path("c"))]
    assert [k.run_id for k in over_budget(kept, 100)] == [1]
    assert [k.run_id for k in over_budget(kept, 0)] == [3, 2, 1]
    assert over_budget(kept, 120) == []


def _fake_checkpoint(run_dir: Path, step: int, size: int = 1000) -> Path:
    ckpt = run_dir / "trainer" / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text("{}")
    (ckpt / "adapter_model.safetensors").write_bytes(b"\0" * size)
    return ckpt


def test_latest_checkpoint_and_the_budget_on_disk(tmp_path):
    runs_dir = tmp_path / "runs"
    _fake_checkpoint(runs_dir / "1", 4)
    _fake_checkpoint(runs_dir / "2", 8, size=2 * 1024 * 1024)
    _fake_checkpoint(runs_dir / "3", 2)
    (runs_dir / "3" / "trainer" / "checkpoint-6").mkdir()  # a half-written one (no trainer_state.json)
    _fake_checkpoint(runs_dir / "4", 2)
    assert latest_checkpoint(runs_dir / "3").name == "checkpoint-2"
    assert latest_checkpoint(runs_dir / "9") is None
    cleared = enforce_budget(runs_dir, 1.0, finished={1: "completed", 2: "failed", 3: "cancelled"})
    assert sorted(cleared) == [1, 2]  # completed: not needed; run 2's 2 MB is over a 1 MB budget
    assert latest_checkpoint(runs_dir / "1") is None and latest_checkpoint(runs_dir / "2") is None
    assert latest_checkpoint(runs_dir / "3") is not None
    assert latest_checkpoint(runs_dir / "4") is not None  # still running: never touched


def test_resume_is_refused_with_the_reason(data_dir):
    s = Settings(_env_file=None)
    with connect(s.db_path) as db:
        run_id = runs.create_run(db, config={"dataset": "x"}, method="sft", dataset_version_id=None, base_model="m",
                                 parent_adapter_id=None, runs_dir=s.runs_dir)
        with pytest.raises(queue.ResumeRefused, match="only a failed or cancelled run"):
            queue.resume(s, run_id)
        runs.mark_failed(db, run_id, "boom")
    with pytest.raises(queue.ResumeRefused, match="no checkpoint"):
        queue.resume(s, run_id)
    assert queue.progress(s, run_id).resume_step is None
    _fake_checkpoint(s.runs_dir / str(run_id), 6)
    assert queue.progress(s, run_id).resume_step == 6
    assert queue.resume_problem({"id": 1, "status": "failed", "method": "dpo"}, 6).startswith("run 1 is a dpo run")
    from ui.cli import app

    result = cli.invoke(app, ["runs", "resume", "999"])
    assert result.exit_code == 1 and "no run 999" in result.output


# --- the real thing ---
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


def _run(settings, run_id):
    with connect(settings.db_path) as db:
        return runs.get_run(db, run_id)


def _wait_for(cond, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_checkpoint_to_the_same_final_step(data_dir, tiny_model, monkeypatch):
    monkeypatch.setenv("TUNELOOP_BASE_MODEL", str(tiny_model))
    monkeypatch.setenv("TUNELOOP_BASE_MODEL_NAME", "tiny")
    s = Settings(_env_file=None)
    with connect(s.db_path) as db:
        add_dataset(db, "Support Chats", support_conversations(12))
    total = 60  # checkpoints every 6 steps
    run_id = queue.start_run(s, dataset="Support Chats", preset="quick", max_steps=total, max_seq_len=256,
                             eval_fraction=0.2)
    run_dir = Path(_run(s, run_id)["run_dir"])
    try:
        _wait_for(lambda: latest_checkpoint(run_dir) is not None)
        pid = _run(s, run_id)["pid"]
        os.kill(pid, signal.SIGKILL)
        _wait_for(lambda: not launch.process_alive(pid), timeout=30)
        killed_at = _run(s, run_id)["step"]
        assert 0 < killed_at < total
        from ui.cli import app

        result = cli.invoke(app, ["runs", "resume", str(run_id), "--wait", "--json"])
    finally:
        run = _run(s, run_id)
        if run["pid"] and launch.process_alive(run["pid"]):
            os.killpg(run["pid"], signal.SIGKILL)
    assert result.exit_code == 0, result.output
    done = json.loads(result.output[result.output.index("{"):])
    assert done["status"] == "completed", done
    assert (done["step"], done["total_steps"]) == (total, total)
    assert done["adapter"] == "support-chats-v1"
    log = (run_dir / "train.log").read_text()
    assert "resuming from checkpoint-" in log
    resumed_from = int(log.split("resuming from checkpoint-")[1].split()[0])
    assert 0 < resumed_from <= killed_at
    with connect(s.db_path) as db:
        steps = [m["step"] for m in runs.run_metrics(db, run_id, "loss")]
    assert steps[-1] == total and set(range(1, total + 1)) <= set(steps)  # every step trained, none skipped
    assert latest_checkpoint(run_dir) is None  # completed: its checkpoint is deleted, the adapter stays
