"""Small shared pieces for the serving tests: settings on a fake base model, fake adapter folders, free ports,
real servers started in their own process group."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

FAKE_VLLM = str(Path(__file__).with_name("fake_vllm.py"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_base_model(root: Path, name: str = "TinyBase") -> Path:
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text("{}")
    return d


def fake_adapter(path: Path, base: str | Path, *, rank: int = 8, **config) -> Path:
    """An adapter folder with the files vLLM looks at (the weights file is empty: nothing loads it)."""
    path.mkdir(parents=True, exist_ok=True)
    cfg = {"peft_type": "LORA", "r": rank, "lora_alpha": 16, "base_model_name_or_path": str(base),
           "target_modules": ["q_proj", "v_proj"], "modules_to_save": None, "task_type": "CAUSAL_LM"}
    cfg.update(config)
    (path / "adapter_config.json").write_text(json.dumps(cfg))
    (path / "adapter_model.safetensors").write_bytes(b"")
    return path


def make_settings(data_dir: Path, base_dir: Path, **overrides):
    from store.settings import Settings

    fields = dict(data_dir=data_dir, base_model=str(base_dir), base_model_name="base")
    fields.update(overrides)
    return Settings(_env_file=None, **fields)


def fake_command(port: int, *extra: str):
    """A VllmCommand that runs tests/fake_vllm.py instead of vLLM."""
    from serving.vllm_args import VllmCommand

    return VllmCommand(argv=[sys.executable, FAKE_VLLM, "--port", str(port), "--served-model-name", "base", *extra],
                       env={"FAKE_MARKER": "1"}, port=port)


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def start_server(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    """A real server (vLLM replica, router) in its own process group, logging to `log`."""
    return subprocess.Popen(cmd, env={**os.environ, **env}, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def kill_server(proc: subprocess.Popen | None) -> None:
    """SIGKILL the server's whole process group (vLLM's engine core is a child of its API process)."""
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def answers_health(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
