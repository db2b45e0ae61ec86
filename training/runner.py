"""The job runner: plan and queue runs, start them detached one at a time, cancel, reconcile.

    run_id = start_run(settings, dataset="support@2", preset="quick", lora_rank=8)   # queued, then started
    progress(settings, run_id)        # status, step/total, latest loss, eval loss, lr, tok/s, ETA
    cancel(settings, run_id, keep_checkpoint=True)
    startup(settings)                 # on app/CLI start: fail runs whose process is gone, start queued ones

A run is its own process (`python -m training.run RUN_ID --data-dir DIR`), started in a new
session so it survives whoever asked for it, with stdout and stderr going to `<run_dir>/train.log`
and the caller's settings passed in its environment. At most `settings.train_concurrency` runs
(default 1) train at once; the others wait as queued and start in order, kicked by the process
that finishes a run and by every `startup`. With more than one GPU visible, the same entry point
is started through `accelerate launch` (data parallel).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlite_utils import Database

from store import runs
from store.adapters import AdapterNotFound, get_adapter, validate_adapter_name
from store.datasets import DatasetNotFound, resolve_version
from store.db import connect
from store.feedback import get_build, preference_counts
from store.settings import Settings
from training.config import DEFAULT_PRESET, ConfigError, RunConfig

LOST_PROCESS = "process ended without finishing (killed or out of memory)"
LOG_NAME = "train.log"
LOG_TAIL_LINES = 40
# A run marked running without a pid for this long lost its launcher before the process started.
LAUNCH_GRACE_S = 120


# --- planning: a validated config from what the user asked for ---
def plan_run(settings: Settings, *, dataset: str, preset: str = DEFAULT_PRESET, base_model: str | None = None,
             from_adapter: str | None = None, name: str | None = None, method: str | None = None,
             **overrides) -> RunConfig:
    """Resolve the dataset version, method, base model and parent adapter, and validate everything.

    For a feedback dataset version (`tuneloop feedback build`), what the caller leaves unset comes
    from its build: `method` (default: the build's method; for any other version "sft"),
    `from_adapter` (default: the adapter the build was made for, so the round trains on top of it;
    pass another adapter's name to continue from that one instead), the KTO desirable/undesirable
    weights (balanced by the build), and `eval_fraction` (default 0: a round's few rated examples
    all train; the preference phase never holds rows out). Every part of the method must have
    enough examples: SFT conversations, KTO rows, DPO pairs (RunConfig.check_examples).

    Raises ConfigError (field and reason) before anything is written or started.
    """
    with connect(settings.db_path) as db:
        try:
            ref = resolve_version(db, dataset)
        except (DatasetNotFound, ValueError) as exc:
            raise ConfigError("dataset", str(exc)) from None
        count = db.execute("select count(*) from version_conversations where version_id = ?", [ref.id]).fetchone()[0]
        counts = {"sft": count, **preference_counts(db, ref.id)}
        build = get_build(db, ref.id)
        from_build = build is not None and not from_adapter and bool(build["from_adapter"])
        if from_build:
            from_adapter = build["from_adapter"]
        parent = None
        if from_adapter:
            try:
                parent = get_adapter(db, from_adapter)
            except AdapterNotFound as exc:
                why = f" (the adapter feedback build {build['ref']} was made for)" if from_build else ""
                raise ConfigError("from_adapter", f"{exc}{why}") from None
            if base_model and base_model != parent["base_model"]:
                raise ConfigError("from_adapter", f"adapter {from_adapter!r} was trained on {parent['base_model']}, "
                                                  f"not {base_model}; a continued adapter keeps its base model")
        if name:
            _check_new_name(db, settings, name)
    base = parent["base_model"] if parent else (base_model or settings.base_model_path)
    if parent:
        overrides = {**overrides, **_parent_lora(parent, overrides)}
    chosen = method or (build["method"] if build else "sft")
    if chosen in ("kto", "dpo"):
        # Without an SFT phase, the run's length is the preference phase's: a length the user set
        # (--max-steps, --epochs, the Train tab's fields) is meant for it, not silently ignored.
        for src, dst in (("max_steps", "pref_max_steps"), ("epochs", "pref_epochs")):
            if overrides.get(src) is not None and overrides.get(dst) is None:
                overrides = {**overrides, dst: overrides[src]}
    if build:
        defaults = {"desirable_weight": build["desirable_weight"], "undesirable_weight": build["undesirable_weight"],
                    "eval_fraction": 0.0}
        overrides = {**overrides, **{k: v for k, v in defaults.items() if overrides.get(k) is None and v is not None}}
    cfg = RunConfig.from_preset(preset, max_lora_rank=settings.max_lora_rank, dataset=str(ref),
                                dataset_version_id=ref.id, base_model=base, from_adapter=from_adapter,
                                adapter_name=name, method=chosen,
                                **overrides)
    minimums = (build["report"].get("minimums") or None) if build else None
    cfg.check_examples(counts, feedback=build is not None, minimums=minimums)
    cfg.check_context(max_lora_rank=settings.max_lora_rank, model_max_len=model_max_len(base), conversations=count)
    return cfg


def _parent_lora(parent: dict, overrides: dict) -> dict:
    """A continued adapter keeps its parent's rank, alpha and modules; refuse a different rank."""
    import json

    cfg_path = Path(parent["path"]) / "adapter_config.json"
    if not cfg_path.is_file():
        raise ConfigError("from_adapter", f"adapter {parent['name']!r} has no adapter_config.json at {parent['path']}")
    lora = json.loads(cfg_path.read_text())
    keep = {"lora_rank": lora["r"], "lora_alpha": float(lora["lora_alpha"]),
            "target_modules": sorted(lora["target_modules"]) if isinstance(lora["target_modules"], list)
            else lora["target_modules"]}
    for key in ("lora_rank", "lora_alpha"):
        if overrides.get(key) is not None and overrides[key] != keep[key]:
            raise ConfigError(key, f"continuing adapter {parent['name']!r} keeps its {key}={keep[key]}; "
                                   f"drop the option or train a new adapter from the base model")
    return keep


def _check_new_name(db: Database, settings: Settings, name: str) -> None:
    try:
        validate_adapter_name(name, settings.served_base_name)
    except ValueError as exc:
        raise ConfigError("name", str(exc)) from None
    try:
        get_adapter(db, name)
    except AdapterNotFound:
        pass
    else:
        raise ConfigError("name", f"an adapter named {name!r} exists; names are never reused (vLLM caches by name)")
    if name in runs.pending_adapter_names(db):
        raise ConfigError("name", f"a queued or running run already produces an adapter named {name!r}")


def model_max_len(base_model: str) -> int | None:
    """The model's longest sequence, from its config.json (None when unknown, e.g. a hub id)."""
    import json

    path = Path(base_model) / "config.json"
    if not path.is_file():
        if Path(base_model).is_absolute() or base_model.startswith("."):
            raise ConfigError("base_model", f"no model at {base_model} (config.json missing)")
        return None
    cfg = json.loads(path.read_text())
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        if isinstance(cfg.get(key), int):
            return cfg[key]
    return None


# --- queueing and starting ---
def submit(settings: Settings, config: RunConfig, *, start: bool = True) -> int:
    """Queue a validated run (config saved in the row and in its folder); start it if a slot is free."""
    with connect(settings.db_path) as db:
        parent_id = get_adapter(db, config.from_adapter)["id"] if config.from_adapter else None
        run_id = runs.create_run(db, config=config.to_dict(), method=config.method,
                                 dataset_version_id=config.dataset_version_id, base_model=config.base_model,
                                 parent_adapter_id=parent_id, runs_dir=settings.runs_dir,
                                 name=config.adapter_name)
        run_dir = Path(runs.get_run(db, run_id)["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(config.to_json())
    if start:
        startup(settings)
    return run_id


def start_run(settings: Settings, *, dataset: str, start: bool = True, **options) -> int:
    """Plan, validate and queue a run in one call (what the CLI and the UI use). Returns the run id."""
    return submit(settings, plan_run(settings, dataset=dataset, **options), start=start)


def startup(settings: Settings) -> list[int]:
    """What every app or CLI start does: reconcile lost runs, then start queued runs in free slots."""
    reconcile(settings)
    return kick(settings)


def kick(settings: Settings) -> list[int]:
    """Start queued runs, oldest first, while fewer than `train_concurrency` run. Returns the started ids."""
    started = []
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    with connect(settings.db_path) as db:
        while True:
            with runs.write_lock(db):
                run = runs.claim_next_queued(db, max_running=settings.train_concurrency)
                if run is None:
                    break
                try:
                    proc = launch(settings, run)
                except OSError as exc:
                    runs.mark_failed(db, run["id"], f"could not start the training process: {exc}")
                    continue
                runs.set_pid(db, run["id"], proc.pid)
            started.append(run["id"])
    return started


def launch(settings: Settings, run: dict) -> subprocess.Popen:
    """Start the training process for a claimed run, detached, logging to its run folder."""
    run_dir = Path(run["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = launch_command(run["id"], data_dir=settings.data_dir, gpus=visible_gpus())
    env = {**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1"}
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # OpenMP threads that sleep rather than spin while waiting: with vLLM or anything else busy on
    # the same cores, spinning threads made CPU training steps 1.5-2.4x slower (measured here).
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    with open(run_dir / LOG_NAME, "ab") as logf:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=env,
                                cwd=_project_root(), start_new_session=True, close_fds=True)
    # Reap the child when it ends, so a long-lived app does not collect zombies (their pids look alive).
    threading.Thread(target=proc.wait, name=f"reap-run-{run['id']}", daemon=True).start()
    return proc


def launch_command(run_id: int, *, data_dir: Path | str, gpus: int = 0, python: str | None = None,
                   main_process_port: int | None = None) -> list[str]:
    """The command that trains `run_id`: the entry point, or `accelerate launch` over several GPUs."""
    python = python or sys.executable
    entry = ["training.run", str(run_id), "--data-dir", str(data_dir)]
    if gpus <= 1:
        return [python, "-m", *entry]
    cmd = [python, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "1",
           "--num_processes", str(gpus), "--mixed_precision", "no", "--dynamo_backend", "no"]
    if main_process_port:
        cmd += ["--main_process_port", str(main_process_port)]
    return cmd + ["--module", *entry]


def visible_gpus() -> int:
    """CUDA GPUs this process may use, without importing torch (CUDA_VISIBLE_DEVICES, else nvidia-smi)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v for v in visible.split(",") if v.strip() and v.strip() != "-1"]
        return len(ids)
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as TUNELOOP_* variables, so the training process sees exactly the caller's."""
    out = {}
    for key, value in settings.model_dump().items():
        if value is not None:
            out[f"TUNELOOP_{key.upper()}"] = str(value)
    return out


def _project_root() -> str:
    return str(Path(__file__).resolve().parent.parent)


# --- cancel, reconcile, progress ---
def cancel(settings: Settings, run_id: int, *, keep_checkpoint: bool = False) -> str:
    """Cancel a queued run at once or a running one at its next step (keeping the adapter so far if asked).

    Returns the status after the call: 'cancelled' for a queued run, 'running' while a running one stops.
    """
    with connect(settings.db_path) as db:
        return runs.request_cancel(db, run_id, keep_checkpoint=keep_checkpoint)


def reconcile(settings: Settings) -> list[int]:
    """Mark failed every run marked running whose process is gone, with the log tail. Returns their ids."""
    failed = []
    with connect(settings.db_path) as db:
        for run in runs.list_runs(db, status="running"):
            if run["pid"] is None:
                if _age_s(run["started_at"]) < LAUNCH_GRACE_S:
                    continue
            elif process_alive(run["pid"]):
                continue
            with runs.write_lock(db):
                if runs.get_run(db, run["id"])["status"] != "running":
                    continue  # it finished in the meantime
                runs.mark_failed(db, run["id"], LOST_PROCESS, log_tail=log_tail(run["run_dir"]))
            failed.append(run["id"])
    return failed


def process_alive(pid: int) -> bool:
    """True when `pid` is a live (not zombie) training process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path(f"/proc/{pid}")
    if not proc.exists():
        return True  # no procfs (macOS): trust the signal check
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return state not in ("Z", "X") and "training.run" in cmdline


def log_tail(run_dir: str | Path | None, lines: int = LOG_TAIL_LINES) -> str:
    if not run_dir:
        return ""
    path = Path(run_dir) / LOG_NAME
    if not path.is_file():
        return ""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 64 * 1024))
        text = f.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def progress(settings: Settings, run_id: int) -> dict:
    """A run's state for display: status, step/total, loss, eval loss, lr, tok/s, ETA, adapter, error."""
    with connect(settings.db_path) as db:
        return describe(db, runs.get_run(db, run_id))


def describe(db: Database, run: dict) -> dict:
    latest = runs.latest_metrics(db, run["id"])

    def value(name):
        return latest[name]["value"] if name in latest else None

    adapter = None
    if run.get("adapter_id"):
        adapter = get_adapter(db, run["adapter_id"])["name"]
    return {
        "id": run["id"], "status": run["status"], "method": run["method"],
        "dataset": run["config"].get("dataset"), "base_model": run["base_model"],
        "from_adapter": run["config"].get("from_adapter"), "preset": run["config"].get("preset"),
        "step": run["step"], "total_steps": run["total_steps"],
        "loss": value("loss"), "eval_loss": value("eval_loss"), "learning_rate": value("learning_rate"),
        "grad_norm": value("grad_norm"), "tokens_per_second": value("tokens_per_second"),
        "eta_seconds": value("eta_seconds") if run["status"] == "running" else None,
        "adapter": adapter, "cancel_requested": bool(run["cancel_requested"]),
        "error": run["error"], "log_tail": run["log_tail"] if run["status"] == "failed" else None,
        "metrics": run["metrics"], "run_dir": run["run_dir"],
        "created_at": run["created_at"], "started_at": run["started_at"], "finished_at": run["finished_at"],
    }


def wait(settings: Settings, run_id: int, *, poll_s: float = 1.0, timeout_s: float | None = None,
         on_progress=None) -> dict:
    """Follow a run until it ends (calling `on_progress(info)` when it changes); returns the final info."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    last = None
    while True:
        reconcile(settings)
        info = progress(settings, run_id)
        key = (info["status"], info["step"], info["loss"], info["eval_loss"])
        if on_progress and key != last:
            on_progress(info)
        last = key
        if info["status"] in runs.FINISHED:
            return info
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} still {info['status']} after {timeout_s} s")
        time.sleep(poll_s)


def _age_s(stamp: str | None) -> float:
    if not stamp:
        return float("inf")
    from datetime import datetime, timezone

    return (datetime.now(timezone.utc) - datetime.fromisoformat(stamp)).total_seconds()
