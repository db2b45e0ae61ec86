"""Training on a Ray cluster (training.ray_backend, training.remote_run): refusals, events, and real Ray jobs.

The slow test starts a local Ray head on loopback (`ray start --head --block`, in its own process
group, ended at the end), submits real tiny-model runs through the Ray backend and checks that
progress reaches the database while they run, that an adapter comes back registered and published,
that a real vLLM replica reading the adapter store serves it with no load call, that cancel stops a
run and that a job killed mid-run ends failed with its log tail.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from store import runs
from store.adapters import get_adapter
from store.db import connect
from store.settings import Settings
from training import queue, ray_backend, ray_follow
from training.config import ConfigError
from training.remote_run import LineProgressCallback, event_line, parse_event
from serving_helpers import answers_health, free_port, kill_server, start_server
from training_support import add_dataset, make_tiny_model, support_conversations


# --- pure ---

def test_events_round_trip_and_ordinary_lines_are_not_events():
    line = event_line("metrics", step=3, split="train", values={"loss": 2.5})
    assert parse_event(f"2026-01-01 INFO ... {line}") == {"kind": "metrics", "step": 3, "split": "train",
                                                          "values": {"loss": 2.5}}
    assert parse_event("step 3/10 loss=2.5") is None
    assert parse_event("TUNELOOP_EVENT {not json") is None


def test_line_callback_reports_on_stdout_instead_of_the_store():
    out = io.StringIO()
    cb = LineProgressCallback(7, out=out)
    cb.report_progress(step=2, total_steps=10)
    cb.report_metrics(2, {"loss": 1.5}, split="train")
    events = [parse_event(line) for line in out.getvalue().splitlines()]
    assert events == [{"kind": "progress", "step": 2, "total_steps": 10},
                      {"kind": "metrics", "step": 2, "split": "train", "values": {"loss": 1.5}}]
    assert cb.cancel_asked() is False


def test_fitting_nodes_need_an_alive_node_with_enough_cpus_and_gpus():
    nodes = [{"state": "ALIVE", "resources_total": {"CPU": 2.0}},
             {"state": "DEAD", "resources_total": {"CPU": 8.0, "GPU": 1.0}},
             {"state": "ALIVE", "resources_total": {"CPU": 4.0, "GPU": 2.0}}]
    assert len(ray_backend.fitting_nodes(nodes, cpus=2, gpus=0)) == 2
    assert ray_backend.fitting_nodes(nodes, cpus=4, gpus=2) == [nodes[2]]
    assert ray_backend.fitting_nodes(nodes, cpus=1, gpus=4) == []


def test_the_job_runs_the_same_entry_point_with_its_bundle():
    assert ray_backend.job_entrypoint(12) == "python -m training.worker 12 --job-bundle bundle.json"
    # Several GPUs of one worker: DDP through accelerate, as a local multi-GPU run.
    multi = ray_backend.job_entrypoint(12, gpus=4)
    assert multi.startswith("python -m accelerate.commands.launch --multi_gpu --num_machines 1 --num_processes 4")
    assert multi.endswith("--module training.worker 12 --job-bundle bundle.json")
    env = ray_backend.runtime_env(Path("/x/job"))
    assert env["working_dir"] == "/x/job" and [Path(p).name for p in env["py_modules"]] == ["training", "store"]
    assert int(env["env_vars"]["RAY_JOB_STOP_WAIT_TIME_S"]) > 10  # time to stop at a step boundary


def test_only_the_first_process_of_a_multi_gpu_job_reports_the_end_and_stages_the_adapter(monkeypatch, tmp_path):
    from training import remote_run
    from training.results import RunMetrics

    trained = []

    def fake_execute(bundle, callback, *, train_phases, main_process=True):
        trained.append(main_process)
        return "completed", (".staging/run-5-x" if main_process else None), RunMetrics(steps=3).to_dict()

    bundle = tmp_path / "bundle.json"
    bundle.write_text(json.dumps({"run_id": 5}))
    monkeypatch.setattr(remote_run, "execute", fake_execute)
    for rank in ("1", "0"):
        monkeypatch.setenv("RANK", rank)
        out = io.StringIO()
        monkeypatch.setattr(sys, "stdout", out)
        assert remote_run.main(5, str(bundle), train_phases=None) == 0
        ends = [e for e in map(parse_event, out.getvalue().splitlines()) if e and e["kind"] == "end"]
        assert len(ends) == (1 if rank == "0" else 0)
    assert trained == [False, True] and ends[0]["staged"] == ".staging/run-5-x"


# --- refusals before anything starts ---

@pytest.fixture
def tiny_model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


def _settings(data_dir, tiny_model, **extra):
    s = Settings(_env_file=None, data_dir=data_dir, base_model=str(tiny_model), base_model_name="tiny", **extra)
    with connect(s.db_path) as db:
        add_dataset(db, "Support Chats", support_conversations(12))
    return s


def _no_runs(settings) -> bool:
    with connect(settings.db_path) as db:
        return runs.list_runs(db) == []


def test_an_unreachable_cluster_is_refused_before_anything_is_queued(data_dir, tiny_model, tmp_path):
    s = _settings(data_dir, tiny_model, ray_address=f"http://127.0.0.1:{free_port()}",
                  adapter_store=str(tmp_path / "store"))
    with pytest.raises(ConfigError) as err:
        queue.start_run(s, dataset="Support Chats", preset="quick", max_steps=2)
    assert err.value.field == "ray_address" and "does not answer" in err.value.reason
    assert _no_runs(s)


def test_a_cluster_without_an_adapter_store_is_refused(data_dir, tiny_model):
    s = _settings(data_dir, tiny_model, ray_address="http://127.0.0.1:1")
    with pytest.raises(ConfigError, match="adapter store"):
        queue.start_run(s, dataset="Support Chats", preset="quick", max_steps=2)
    assert _no_runs(s)


def test_a_job_that_ended_without_its_end_event_fails_the_run_with_the_log_tail(data_dir, tiny_model, tmp_path):
    s = _settings(data_dir, tiny_model, adapter_store=str(tmp_path / "store"))
    run_id = queue.start_run(s, dataset="Support Chats", preset="quick", max_steps=2, start=False)
    with connect(s.db_path) as db:
        runs.mark_running(db, run_id, pid=None)
        run_dir = Path(runs.get_run(db, run_id)["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "train.log").write_text("step 3/10 loss=2.1\nKilled\n")
    status = ray_follow.finish(s, run_id, None, job_status="FAILED", job_message="Job entrypoint command failed",
                                cancel_requested=False)
    with connect(s.db_path) as db:
        run = runs.get_run(db, run_id)
    assert status == run["status"] == "failed"
    assert "Ray job ended FAILED" in run["error"] and "Killed" in run["log_tail"]


# --- a real local Ray head ---

@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    port, dash = free_port(), free_port()
    temp = tmp_path_factory.mktemp("ray")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
           "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--num-cpus", "2",
         "--port", str(port), "--dashboard-port", str(dash), "--include-dashboard", "true",
         "--dashboard-host", "127.0.0.1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats",
         "--object-store-memory", "100000000", "--temp-dir", str(temp)],
        stdout=open(temp / "head.log", "wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if ray_backend.fitting_nodes(ray_backend.cluster_nodes(address), cpus=1, gpus=0):
                    break
            except ray_backend.RayUnavailable:
                pass
            assert head.poll() is None and time.monotonic() < deadline, (temp / "head.log").read_text()[-3000:]
            time.sleep(1)
        yield address
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # `ray start --block` ends the head's processes on SIGTERM
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)


def _wait_for(predicate, timeout=180.0, poll=0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(poll)
    raise TimeoutError("condition not met in time")


def _run(settings, run_id):
    with connect(settings.db_path) as db:
        return runs.get_run(db, run_id)


def _job_pid(run_id: int) -> int | None:
    """The job's training process (the entry point the Ray job runs for this run), if it runs."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--job-bundle" in cmd and str(run_id).encode() in cmd and b"-c" not in cmd:
            return int(proc.name)
    return None


@pytest.mark.slow
def test_runs_on_a_ray_cluster_report_progress_cancel_and_fail(ray_head, data_dir, tiny_model, default_model_dir,
                                                              tmp_path):
    from serving.fleet import replica_command
    from ui.web.tabs.train import run_summary

    store = tmp_path / "store"
    store.mkdir()
    s = _settings(data_dir, tiny_model, ray_address=ray_head, adapter_store=str(store), train_concurrency=2)
    with pytest.raises(ConfigError, match="no node of the Ray cluster"):  # asks for a GPU the cluster lacks
        queue.start_run(s.model_copy(update={"ray_num_gpus": 1}), dataset="Support Chats", preset="quick")
    assert _no_runs(s)

    # The run that completes trains the default model, so that a real vLLM replica reading the store
    # (started now, booting while the job trains) can serve what the job wrote.
    real = s.model_copy(update={"base_model": str(default_model_dir), "base_model_name": "smollm2", "kv_cache_gib": 1,
                                "max_model_len": 1024, "max_loras": 1, "max_cpu_loras": 1, "max_lora_rank": 8})
    port, replica_log = free_port(), tmp_path / "replica.log"
    replica_url = f"http://127.0.0.1:{port}"
    cmd = replica_command(real, port=port)
    replica = start_server(cmd.argv, cmd.env, replica_log)
    done_id = queue.start_run(real, dataset="Support Chats", preset="quick", max_steps=4, max_seq_len=256,
                              eval_fraction=0.25)
    try:
        # Progress rows while it runs: written here, by the follower, from the job's stdout.
        _wait_for(lambda: _run(s, done_id)["status"] == "running" and _run(s, done_id)["step"] >= 1, timeout=300)
        with connect(s.db_path) as db:
            assert runs.run_metrics(db, done_id, "tokens_per_second") and runs.run_metrics(db, done_id, "eta_seconds")
        info = queue.wait(s, done_id, poll_s=0.5, timeout_s=400)
        assert info.status == "completed", (info.error, info.log_tail)
        assert info.step == 4 and info.loss is not None and info.ray_job.startswith(f"tuneloop-run-{done_id}-")
        assert f"on the Ray cluster as job `{info.ray_job}`" in run_summary(_run(s, done_id), info)
        with connect(s.db_path) as db:  # held-out loss, at the start and the end, as a local run reports it
            held_out = [r for r in runs.run_metrics(db, done_id, "eval_loss") if r["split"] == "eval"]
        assert {r["step"] for r in held_out} >= {0, 4}, held_out
        with connect(s.db_path) as db:
            adapter = get_adapter(db, info.adapter)
        assert Path(adapter["path"], "adapter_model.safetensors").is_file()
        published = json.loads((store / info.adapter / "adapter_config.json").read_text())
        assert published["base_model_name_or_path"] == str(default_model_dir)  # the replica's --model
        assert not list((store / ".staging").iterdir())  # the staged copy was taken back and removed
        assert "submitted to the Ray cluster" in Path(info.run_dir, "train.log").read_text()

        # Served: the replica loads it from the store on the first request, with no load call from anyone.
        assert _wait_for(lambda: replica.poll() is not None or answers_health(replica_url), timeout=400, poll=2)
        assert replica.poll() is None, replica_log.read_text()[-3000:]
        r = httpx.post(f"{replica_url}/v1/chat/completions", timeout=120,
                       json={"model": info.adapter, "max_tokens": 8, "temperature": 0,
                             "messages": [{"role": "user", "content": "Where is my order?"}]})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"], r.text
        assert f"Resolved and loaded LoRA adapter '{info.adapter}'" in replica_log.read_text()
        kill_server(replica)

        # Two long runs side by side: one cancelled, one whose job process is killed.
        cancel_id = queue.start_run(s, dataset="Support Chats", preset="quick", max_steps=100_000, eval_fraction=0)
        kill_id = queue.start_run(s, dataset="Support Chats", preset="quick", max_steps=100_000, eval_fraction=0)
        _wait_for(lambda: _run(s, cancel_id)["step"] >= 2 and _run(s, kill_id)["step"] >= 2)
        assert queue.cancel(s, cancel_id) == "running"
        os.kill(_job_pid(kill_id), signal.SIGKILL)
        cancelled = queue.wait(s, cancel_id, poll_s=0.5, timeout_s=180)
        killed = queue.wait(s, kill_id, poll_s=0.5, timeout_s=180)
    finally:
        kill_server(replica)
        for run_id in runs_ids(s):
            run = _run(s, run_id)
            if run["status"] == "running" and run["pid"]:
                os.killpg(run["pid"], signal.SIGKILL)
    assert cancelled.status == "cancelled" and cancelled.adapter is None and cancelled.step >= 2
    assert killed.status == "failed" and "Ray job ended FAILED" in killed.error
    assert "step" in killed.log_tail or "TUNELOOP_EVENT" in killed.log_tail


def runs_ids(settings) -> list[int]:
    with connect(settings.db_path) as db:
        return [r["id"] for r in runs.list_runs(db)]
