"""The job runner: planning refusals, launch commands, and real detached runs of a tiny model.

The slow tests start real `python -m training.worker` processes (a 2-layer Llama built locally, so
each run is mostly process start-up): queued runs start in order, a cancel ends a run as
cancelled, a SIGKILLed run ends as failed at the next start.

Run: .venv/bin/python -m pytest tests/test_training_queue.py -q
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from store import runs
from store.adapters import get_adapter
from store.db import connect
from store.settings import Settings
from training import launch, planning, queue
from training.config import ConfigError
from training_support import add_dataset, make_tiny_model, support_conversations


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture
def tiny_settings(data_dir, tiny_model):
    s = Settings(_env_file=None, data_dir=data_dir, base_model=str(tiny_model), base_model_name="tiny")
    with connect(s.db_path) as db:
        add_dataset(db, "Support Chats", support_conversations(12))
    return s


# --- pure ---
def test_launch_command_single_process_and_accelerate_over_gpus():
    one = launch.launch_command(7, data_dir="/data", gpus=1, python="/py")
    assert one == ["/py", "-m", "training.worker", "7", "--data-dir", "/data"]
    assert launch.launch_command(7, data_dir="/data", gpus=0, python="/py") == one
    four = launch.launch_command(7, data_dir="/data", gpus=4, python="/py", main_process_port=29611)
    assert four == ["/py", "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "1",
                    "--num_processes", "4", "--mixed_precision", "no", "--dynamo_backend", "no",
                    "--main_process_port", "29611", "--module", "training.worker", "7", "--data-dir", "/data"]


def test_accelerate_accepts_the_command_it_is_given():
    """accelerate's own parser reads our arguments as meant (no GPU needed to parse)."""
    from accelerate.commands.launch import launch_command_parser

    cmd = launch.launch_command(3, data_dir="/d", gpus=2, python="py")
    args = launch_command_parser().parse_args(cmd[3:])
    assert (args.multi_gpu, args.num_processes, args.module) == (True, 2, True)
    assert args.training_script == "training.worker"
    assert args.training_script_args == ["3", "--data-dir", "/d"]


def test_visible_gpus_follows_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,3")
    assert launch.visible_gpus() == 3
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert launch.visible_gpus() == 0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert launch.visible_gpus() == 0


def test_settings_reach_the_training_process_through_its_environment(tiny_settings, monkeypatch):
    env = launch.settings_env(tiny_settings.model_copy(update={"max_lora_rank": 32, "train_concurrency": 2}))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    again = Settings(_env_file=None)
    assert again.data_dir == tiny_settings.data_dir
    assert (again.max_lora_rank, again.train_concurrency, again.base_model) == (32, 2, tiny_settings.base_model)


# --- planning refusals (nothing written, nothing started) ---
@pytest.mark.parametrize("options, field, text", [
    ({"dataset": "nope"}, "dataset", "not found"),
    ({"dataset": "Support Chats", "lora_rank": 32}, "lora_rank", "above the server's max_lora_rank 16"),
    ({"dataset": "Support Chats", "max_seq_len": 4096}, "max_seq_len", "base model's limit of 1024"),
    ({"dataset": "Support Chats", "eval_fraction": 0.02}, "eval_fraction", "leaves none"),
    ({"dataset": "Support Chats", "from_adapter": "ghost"}, "from_adapter", "no adapter named"),
    ({"dataset": "Support Chats", "name": "Bad Name"}, "name", "not allowed"),
    ({"dataset": "Support Chats", "name": "tiny"}, "name", "base model's name"),
    ({"dataset": "Support Chats", "base_model": "/no/such/model"}, "base_model", "no model at"),
])
def test_bad_plans_are_refused_before_anything_starts(tiny_settings, options, field, text):
    with pytest.raises(ConfigError) as err:
        queue.start_run(tiny_settings, preset="quick", **options)
    assert err.value.field == field and text in str(err.value)
    with connect(tiny_settings.db_path) as db:
        assert runs.list_runs(db) == []


def test_empty_dataset_version_is_refused(tiny_settings):
    with connect(tiny_settings.db_path) as db:
        add_dataset(db, "empty", [])
    with pytest.raises(ConfigError, match="^dataset: empty@1 has no conversations"):
        queue.start_run(tiny_settings, dataset="empty")


def test_plan_resolves_the_version_and_saves_the_config(tiny_settings):
    run_id = queue.start_run(tiny_settings, dataset="Support Chats", preset="quick", max_steps=2, start=False)
    with connect(tiny_settings.db_path) as db:
        run = runs.get_run(db, run_id)
    assert run["status"] == "queued"
    assert run["config"]["dataset"] == "Support Chats@1" and run["config"]["dataset_version_id"] == 1
    assert run["config"]["base_model"] == tiny_settings.base_model
    import json
    from pathlib import Path

    assert json.loads((Path(run["run_dir"]) / "config.json").read_text()) == run["config"]


def test_reconcile_fails_a_running_run_whose_process_is_gone(tiny_settings):
    run_id = queue.start_run(tiny_settings, dataset="Support Chats", preset="quick", start=False)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with connect(tiny_settings.db_path) as db:
        runs.claim_next_queued(db)
        runs.set_pid(db, run_id, gone.pid)
        run_dir = runs.get_run(db, run_id)["run_dir"]
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "train.log"), "w") as f:
        f.write("".join(f"line {i}\n" for i in range(100)))
    assert queue.reconcile(tiny_settings) == [run_id]
    with connect(tiny_settings.db_path) as db:
        run = runs.get_run(db, run_id)
    assert run["status"] == "failed" and run["error"] == queue.LOST_PROCESS
    assert run["log_tail"].splitlines()[-1] == "line 99" and len(run["log_tail"].splitlines()) == 40


def test_process_alive_is_false_for_a_process_that_is_not_a_training_run():
    assert launch.process_alive(os.getpid()) is False  # alive, but not `training.worker`
    assert launch.process_alive(2 ** 22 + 12345) is False


# --- real detached runs (tiny model) ---
def _wait_for(predicate, timeout=120.0, poll=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError("condition not met in time")


def _run(settings, run_id):
    with connect(settings.db_path) as db:
        return runs.get_run(db, run_id)


def _kill_if_running(settings, run_id):
    run = _run(settings, run_id)
    if run["pid"] and launch.process_alive(run["pid"]):
        os.killpg(run["pid"], signal.SIGKILL)


@pytest.mark.slow
def test_queued_runs_start_in_order_one_at_a_time(tiny_settings):
    ids = [queue.start_run(tiny_settings, dataset="Support Chats", preset="quick", max_steps=2, eval_fraction=0,
                            seed=i) for i in range(3)]
    try:
        statuses = [_run(tiny_settings, i)["status"] for i in ids]
        assert statuses[0] == "running" and statuses[1:] == ["queued", "queued"]
        final = [queue.wait(tiny_settings, i, poll_s=0.3, timeout_s=180) for i in ids]
    finally:
        for i in ids:
            _kill_if_running(tiny_settings, i)
    assert [f.status for f in final] == ["completed"] * 3, [f.error for f in final]
    rows = [_run(tiny_settings, i) for i in ids]
    for earlier, later in zip(rows, rows[1:]):
        assert earlier["finished_at"] <= later["started_at"]
    assert [f.adapter for f in final] == ["support-chats-v1", "support-chats-v2", "support-chats-v3"]
    with connect(tiny_settings.db_path) as db:
        adapter = get_adapter(db, "support-chats-v2")
    assert adapter["run_id"] == ids[1] and adapter["meta"]["config"]["seed"] == 1


@pytest.mark.slow
def test_cancel_mid_way_ends_cancelled_and_can_keep_the_adapter(tiny_settings):
    first = queue.start_run(tiny_settings, dataset="Support Chats", preset="quick", max_steps=100_000)
    second = queue.start_run(tiny_settings, dataset="Support Chats", preset="quick", max_steps=100_000)
    try:
        _wait_for(lambda: _run(tiny_settings, first)["step"] >= 2)
        assert queue.cancel(tiny_settings, first) == "running"
        done = queue.wait(tiny_settings, first, poll_s=0.3, timeout_s=60)
        assert done.status == "cancelled" and done.adapter is None
        assert 2 <= done.step < 100_000
        # The finishing process started the queued run; cancel it keeping what it trained.
        _wait_for(lambda: _run(tiny_settings, second)["step"] >= 1)
        assert queue.cancel(tiny_settings, second, keep_checkpoint=True) == "running"
        kept = queue.wait(tiny_settings, second, poll_s=0.3, timeout_s=60)
    finally:
        _kill_if_running(tiny_settings, first)
        _kill_if_running(tiny_settings, second)
    assert kept.status == "cancelled" and kept.adapter == "support-chats-v1"
    with connect(tiny_settings.db_path) as db:
        adapter = get_adapter(db, kept.adapter)
    assert adapter["meta"]["partial"] is True
    assert os.path.isfile(os.path.join(adapter["path"], "adapter_model.safetensors"))


@pytest.mark.slow
def test_killed_run_ends_failed_after_the_next_start(tiny_settings):
    run_id = queue.start_run(tiny_settings, dataset="Support Chats", preset="quick", max_steps=100_000)
    try:
        _wait_for(lambda: _run(tiny_settings, run_id)["step"] >= 1)
        pid = _run(tiny_settings, run_id)["pid"]
        os.kill(pid, signal.SIGKILL)
        _wait_for(lambda: not launch.process_alive(pid), timeout=30)
        assert _run(tiny_settings, run_id)["status"] == "running"  # nobody noticed yet
        queue.startup(tiny_settings)
    finally:
        _kill_if_running(tiny_settings, run_id)
    run = _run(tiny_settings, run_id)
    assert run["status"] == "failed" and run["error"] == queue.LOST_PROCESS
    assert "step" in run["log_tail"]  # the training log's last lines


@pytest.mark.slow
def test_a_crashing_run_ends_failed_with_the_reason_and_log_tail(tiny_settings, tmp_path):
    import shutil

    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_settings.base_model, broken)
    settings = tiny_settings.model_copy(update={"base_model": str(broken)})
    run_id = queue.start_run(settings, dataset="Support Chats", preset="quick", max_steps=2, start=False)
    (broken / "model.safetensors").unlink()  # the model disappears after the run was queued
    queue.startup(settings)
    done = queue.wait(settings, run_id, poll_s=0.3, timeout_s=120)
    assert done.status == "failed"
    assert done.error.startswith("OSError") and "broken-model" in done.error
    assert "Traceback" in done.log_tail
