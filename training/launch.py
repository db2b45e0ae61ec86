"""Starting a run's training process, and knowing whether it still lives: commands, GPUs, /proc, the log.

A run is its own process (`python -m training.worker RUN_ID --data-dir DIR`), started in a new
session so it survives whoever asked for it, with stdout and stderr going to `<run_dir>/train.log`
and the caller's settings passed in its environment. With more than one GPU visible, the same entry
point is started through `accelerate launch`, one process per GPU: DDP, or FSDP when the base model's
weights would fill too much of one GPU (training.parallelism decides; TUNELOOP_MULTI_GPU overrides).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from store.logtail import tail
from store.settings import Settings
from training.config import RunConfig
from training.parallelism import Plan, plan_for

LOG_NAME = "train.log"
LOG_TAIL_LINES = 40
WORKER_MODULE = "training.worker"


def launch(settings: Settings, run: dict) -> subprocess.Popen:
    """Start the training process for a claimed run, detached, logging to its run folder."""
    run_dir = Path(run["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    gpus = visible_gpus()
    plan = run_plan(settings, run, gpus=gpus, gpu_memory=gpu_memory()) if gpus > 1 else None
    cmd = launch_command(run["id"], data_dir=settings.data_dir, gpus=gpus, plan=plan)
    env = {**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1"}
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # OpenMP threads that sleep rather than spin while waiting: with vLLM or anything else busy on
    # the same cores, spinning threads made CPU training steps 1.5-2.4x slower (measured here).
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    with open(run_dir / LOG_NAME, "ab") as logf:
        if plan is not None:
            logf.write(f"{plan.reason}\n".encode())
            logf.flush()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=env,
                                cwd=_project_root(), start_new_session=True, close_fds=True)
    # Reap the child when it ends, so a long-lived app does not collect zombies (their pids look alive).
    threading.Thread(target=proc.wait, name=f"reap-run-{run['id']}", daemon=True).start()
    return proc


def run_plan(settings: Settings, run: dict, *, gpus: int, gpu_memory: int | None) -> Plan:
    """DDP or FSDP for `run` over `gpus` GPUs of `gpu_memory` bytes (training.parallelism), by its base model."""
    config = RunConfig.from_dict(run["config"])
    return plan_for(config.base_model or settings.base_model_path, gpus=gpus, gpu_memory=gpu_memory,
                    override=settings.multi_gpu, preference=config.preference_kind is not None)


def launch_command(run_id: int, *, data_dir: Path | str, gpus: int = 0, plan: Plan | None = None,
                   python: str | None = None, main_process_port: int | None = None) -> list[str]:
    """The command that trains `run_id`: the entry point, or `accelerate launch` over several GPUs."""
    return worker_command([str(run_id), "--data-dir", str(data_dir)], gpus=gpus, plan=plan, python=python,
                          main_process_port=main_process_port)


def worker_command(args: list[str], *, gpus: int = 0, plan: Plan | None = None, python: str | None = None,
                   main_process_port: int | None = None) -> list[str]:
    """`python -m training.worker ARGS`, or the same under `accelerate launch` over several GPUs: DDP, or FSDP
    when `plan` says so. A local run and a Ray job (training.ray_backend) both start this way."""
    python = python or sys.executable
    entry = [WORKER_MODULE, *args]
    if gpus <= 1:
        return [python, "-m", *entry]
    fsdp = plan is not None and plan.strategy == "fsdp"
    # bf16 or not is the Trainer's choice (recipe.setup), by what the GPU supports.
    cmd = [python, "-m", "accelerate.commands.launch", "--use_fsdp" if fsdp else "--multi_gpu", "--num_machines",
           "1", "--num_processes", str(gpus), "--mixed_precision", "no", "--dynamo_backend", "no"]
    if fsdp:
        cmd += fsdp_flags(plan.layer_cls)
    if main_process_port:
        cmd += ["--main_process_port", str(main_process_port)]
    return cmd + ["--module", *entry]


def fsdp_flags(layer_cls: str | None) -> list[str]:
    """accelerate's FSDP settings for LoRA, as PEFT's FSDP guide has them: each decoder layer a fully sharded unit
    (the trainer also makes each LoRA layer its own, peft's fsdp_auto_wrap_policy), all processes starting from
    the first one's weights, and a full state dict so the first process can write the adapter (recipe.train)."""
    flags = ["--fsdp_version", "1", "--fsdp_sharding_strategy", "FULL_SHARD",
             "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP"]
    if layer_cls:  # without it accelerate and peft wrap the model's own `_no_split_modules`
        flags += ["--fsdp_transformer_layer_cls_to_wrap", layer_cls]
    return flags + ["--fsdp_backward_prefetch", "BACKWARD_PRE", "--fsdp_use_orig_params", "true",
                    "--fsdp_cpu_ram_efficient_loading", "true", "--fsdp_sync_module_states", "true",
                    "--fsdp_state_dict_type", "FULL_STATE_DICT"]


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


def gpu_memory() -> int | None:
    """Memory of the smallest GPU, in bytes, from nvidia-smi; None when it does not answer.

    Not torch.cuda: the app would import torch and set up CUDA in its own long-lived process for one number,
    and visible_gpus already asks nvidia-smi. All GPUs are asked, not only CUDA_VISIBLE_DEVICES' (nvidia-smi
    numbers them in PCI order, CUDA may not): the smallest is the safe side of the FSDP rule.
    """
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    mib = [int(v) for v in out.split() if v.strip().isdigit()]
    return min(mib) * 2**20 if mib else None


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as TUNELOOP_* variables, so the training process sees exactly the caller's."""
    out = {}
    for key, value in settings.model_dump().items():
        if value is not None:
            out[f"TUNELOOP_{key.upper()}"] = str(value)
    return out


def _project_root() -> str:
    return str(Path(__file__).resolve().parent.parent)


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
    return state not in ("Z", "X") and WORKER_MODULE in cmdline


def log_tail(run_dir: str | Path | None, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a run's train.log ("" when there is none)."""
    return tail(Path(run_dir) / LOG_NAME, lines) if run_dir else ""
