"""Training on a Ray cluster: with TUNELOOP_RAY_ADDRESS set, a run is a Ray job instead of a local process.

    TUNELOOP_RAY_ADDRESS=http://head:8265 TUNELOOP_ADAPTER_STORE=/mnt/adapters tuneloop train start ...

`preflight` refuses before anything is queued when the cluster does not answer, has no alive node
with the CPUs/GPUs a run asks for (TUNELOOP_RAY_NUM_CPUS/_GPUS), or there is no adapter store for
the adapter to come back through. `launch` (called by training.queue for a claimed run) writes the
run's bundle (training.remote_run: config, conversations, preference rows), submits it through
Ray's Jobs API with the same entry point as a local run (`python -m training.worker RUN_ID
--job-bundle bundle.json`, shipped with its code as the job's working_dir and py_modules), and
starts a local follower, `python -m training.worker RUN_ID --ray-job JOB_ID`, detached like a
local run so training.queue's reconcile sees it as the run's process (training.ray_follow: the
only writer of the run's rows, from the job's log).
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from store.adapters import get_adapter
from store.datasets import iter_version_conversations
from store.db import connect
from store.feedback import iter_preference_examples
from store.settings import Settings
from training.config import ConfigError, RunConfig
from training.launch import LOG_NAME, WORKER_MODULE, run_plan, settings_env, worker_command
from training.parallelism import Plan
from training.remote_run import BUNDLE_FILE, write_bundle

log = logging.getLogger("tuneloop.train")

PROBE_TIMEOUT_S = 5.0
# Ray's stop_job sends SIGTERM, then SIGKILL after this many seconds: long enough for the run to stop
# at its next step and stage the adapter so far (a CPU step here is about 7 s).
STOP_WAIT_S = 120
JOB_ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_WAIT_POLICY": "PASSIVE",
           "PYTHONUNBUFFERED": "1", "RAY_JOB_STOP_WAIT_TIME_S": str(STOP_WAIT_S)}


QUIET_RAY_LOGGERS = ("ray.dashboard.modules.dashboard_sdk", "ray._private.runtime_env.packaging")


class RayUnavailable(ConnectionError):
    """The cluster cannot take the run now (a queued run that reaches it is marked failed with this)."""


# ---------------------------------------------------------------- before anything starts

def fitting_nodes(nodes: list[dict], *, cpus: float, gpus: float) -> list[dict]:
    """Alive nodes whose total resources hold one job asking for `cpus` CPUs and `gpus` GPUs (pure)."""
    out = []
    for n in nodes:
        total = n.get("resources_total") or {}
        if n.get("state") == "ALIVE" and total.get("CPU", 0) >= cpus and total.get("GPU", 0) >= gpus:
            out.append(n)
    return out


def cluster_nodes(address: str) -> list[dict]:
    """The cluster's nodes from its dashboard's state API; RayUnavailable when it does not answer."""
    url = address.rstrip("/")
    try:
        with httpx.Client(timeout=PROBE_TIMEOUT_S) as client:
            client.get(f"{url}/api/version").raise_for_status()
            response = client.get(f"{url}/api/v0/nodes", params={"limit": 1000})
            response.raise_for_status()
            return response.json()["data"]["result"]["result"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        raise RayUnavailable(f"the Ray cluster at {address} does not answer ({exc.__class__.__name__}): start it "
                             "(`ray start --head --dashboard-host ...`) or fix TUNELOOP_RAY_ADDRESS") from None


def preflight(settings: Settings) -> None:
    """Refuse a run the cluster cannot take, before it is queued (ConfigError naming the setting)."""
    if not settings.adapter_store:
        raise ConfigError("ray_address", "training on a Ray cluster needs an adapter store the cluster and this "
                                         "machine share (TUNELOOP_ADAPTER_STORE): the adapter comes back through it")
    try:
        nodes = cluster_nodes(settings.ray_address)
    except RayUnavailable as exc:
        raise ConfigError("ray_address", str(exc)) from None
    cpus, gpus = settings.ray_num_cpus, settings.ray_num_gpus
    if not fitting_nodes(nodes, cpus=cpus, gpus=gpus):
        have = ", ".join(f"{int((n.get('resources_total') or {}).get('CPU', 0))} CPU/"
                         f"{int((n.get('resources_total') or {}).get('GPU', 0))} GPU"
                         for n in nodes if n.get("state") == "ALIVE") or "no alive node"
        raise ConfigError("ray_address", f"no node of the Ray cluster at {settings.ray_address} has {cpus:g} CPUs "
                                         f"and {gpus:g} GPUs for a run (it has: {have}); lower "
                                         "TUNELOOP_RAY_NUM_CPUS/TUNELOOP_RAY_NUM_GPUS or add a node")


# ---------------------------------------------------------------- submitting

def job_client(address: str):
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError:
        raise RayUnavailable("Ray is not installed here: pip install 'tuneloop[ray]'") from None
    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError) as exc:
        raise RayUnavailable(f"the Ray cluster at {address} does not answer: {exc}") from None


def write_run_bundle(settings: Settings, run: dict) -> Path:
    """`<run_dir>/job/bundle.json`: what the job trains on (read here, where the database is)."""
    config = RunConfig.from_dict(run["config"])
    with connect(settings.db_path) as db:
        conversations = ([{"id": c["id"], "messages": c["messages"]}
                          for c in iter_version_conversations(db, config.dataset_version_id)]
                         if "sft" in config.parts else [])
        kind = config.preference_kind
        pref_rows = list(iter_preference_examples(db, config.dataset_version_id, kind)) if kind else []
        parent = get_adapter(db, run["parent_adapter_id"])["name"] if run["parent_adapter_id"] else None
    return write_bundle(Path(run["run_dir"]) / "job" / BUNDLE_FILE, run_id=run["id"], config=config,
                        conversations=conversations, pref_rows=pref_rows, parent_adapter=parent, settings=settings)


def job_entrypoint(run_id: int, *, gpus: int = 0, plan: Plan | None = None) -> str:
    """The same entry point as a local run, reading its bundle from the job's working directory; over
    several GPUs of the worker, through `accelerate launch` (DDP, or FSDP as `plan` says), as a local run
    (training.launch)."""
    return shlex.join(worker_command([str(run_id), "--job-bundle", BUNDLE_FILE], gpus=gpus, plan=plan,
                                     python="python"))


def job_plan(settings: Settings, run: dict) -> tuple[int, Plan]:
    """(GPUs, plan) of a run's job: the GPUs it asks for, each of TUNELOOP_RAY_GPU_MEMORY_GIB (the app cannot see
    the workers' GPUs), by the same rule as a local run; the base model is at the same path on the workers."""
    gpus = int(settings.ray_num_gpus)  # a fraction of a GPU is one process; accelerate wants a whole count
    return gpus, run_plan(settings, run, gpus=gpus, gpu_memory=int(settings.ray_gpu_memory_gib * 2**30))


def runtime_env(bundle_dir: Path) -> dict:
    """The bundle as the job's working_dir and this checkout's training/store code as py_modules, so the
    cluster runs exactly the app's code (its nodes need only the dependencies installed)."""
    root = Path(__file__).resolve().parent.parent
    return {"working_dir": str(bundle_dir), "py_modules": [str(root / "training"), str(root / "store")],
            "excludes": ["__pycache__"], "env_vars": dict(JOB_ENV)}


def launch(settings: Settings, run: dict) -> subprocess.Popen:
    """Submit a claimed run as a Ray job and start its local follower; returns the follower process."""
    bundle = write_run_bundle(settings, run)
    gpus, plan = job_plan(settings, run)
    client = job_client(settings.ray_address)
    # Ray logs each package it uploads at INFO ("Uploading package gcs://..."), into the CLI's output.
    for name in QUIET_RAY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        job_id = client.submit_job(entrypoint=job_entrypoint(run["id"], gpus=gpus, plan=plan),
                                   runtime_env=runtime_env(bundle.parent),
                                   submission_id=f"tuneloop-run-{run['id']}-{int(time.time())}",
                                   entrypoint_num_cpus=settings.ray_num_cpus,
                                   entrypoint_num_gpus=settings.ray_num_gpus or None,
                                   metadata={"tuneloop_run": str(run["id"])})
    except (RuntimeError, ConnectionError, ValueError) as exc:
        raise RayUnavailable(f"the Ray cluster at {settings.ray_address} refused the job: {exc}") from None
    run_dir = Path(run["run_dir"])
    with open(run_dir / LOG_NAME, "ab") as logf:
        logf.write(f"submitted to the Ray cluster at {settings.ray_address} as job {job_id}\n".encode())
        if gpus > 1:
            logf.write(f"{plan.reason}\n".encode())
    cmd = [sys.executable, "-m", WORKER_MODULE, str(run["id"]), "--data-dir", str(settings.data_dir),
           "--ray-job", job_id]
    env = {**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1"}
    with open(run_dir / "follower.log", "ab") as logf:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=env,
                                cwd=str(Path(__file__).resolve().parent.parent), start_new_session=True,
                                close_fds=True)
    threading.Thread(target=proc.wait, name=f"reap-follower-{run['id']}", daemon=True).start()
    return proc
