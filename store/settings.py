"""The one typed settings object, read from TUNELOOP_* environment variables and passed explicitly.

It lives in `store` because every other package depends on `store` and nothing else is shared:
`training`, `serving` and `ui` each read the fields they need from the instance they are handed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL_DIRNAME = "SmolLM2-135M-Instruct"
# vLLM accepts only these values for --max-lora-rank.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "tuneloop"


class Settings(BaseSettings):
    """Everything an installation can configure; `TUNELOOP_DATA_DIR=/srv/tuneloop` sets `data_dir`."""

    model_config = SettingsConfigDict(env_prefix="TUNELOOP_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir)
    """Holds the database, prepared models, run folders, adapters and logs."""

    base_model: str = ""
    """Base model: a local transformers model directory or a hub id. Empty: the embedded default."""

    base_model_name: str = ""
    """Name the base model is served and chosen under. Empty: derived from the model directory."""

    vllm_url: str = ""
    """URL of an existing vLLM server (e.g. http://gpu-box:8000). Empty: start one on loopback."""

    vllm_port: int = 8011
    """Loopback port of the vLLM server that tuneloop starts."""

    vllm_target: Literal["auto", "cpu", "gpu"] = "auto"
    """Which vLLM build the local server uses; auto picks gpu when CUDA is visible."""

    max_loras: int = Field(default=4, ge=1)
    """Adapters vLLM keeps active in one batch; requests for more wait."""

    max_cpu_loras: int = Field(default=16, ge=1)
    """Adapters vLLM keeps cached in memory; must be at least max_loras."""

    max_lora_rank: int = 16
    """Highest LoRA rank the server accepts; training refuses ranks above it."""

    max_model_len: int = Field(default=2048, ge=128)
    """Longest prompt plus answer the server handles, in tokens."""

    kv_cache_gib: int = Field(default=2, ge=1)
    """KV cache space for vLLM on CPU, in GiB."""

    vllm_dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    """Weights' dtype in vLLM. auto: the model's, but float32 on CPUs without native bf16 (AVX2 only)."""

    vllm_cpu_reserved_cores: int | None = Field(default=None, ge=0)
    """CPU cores vLLM-CPU keeps free of model threads (VLLM_CPU_NUM_OF_RESERVED_CPU). None: vLLM's default."""

    gpu_memory_utilization: float = Field(default=0.85, gt=0, le=1)
    """Share of GPU memory vLLM may take (GPU build only)."""

    tensor_parallel_size: int = Field(default=1, ge=1)
    """GPUs one vLLM server spreads the model over (GPU build only)."""

    host: str = "127.0.0.1"
    """Address the web app and its OpenAI-compatible API listen on."""

    port: int = 7860
    """Port of the web app and its OpenAI-compatible API (under /v1)."""

    api_key: str = ""
    """Key clients must send as a Bearer token to /v1 (the key named "default"; `tuneloop keys create` adds
    more). Empty and no other key: the /v1 API refuses every request."""

    capture: bool = True
    """Store every /v1 chat completion for review and the next round (off per deployment with
    `tuneloop deploy capture NAME --off`)."""

    capture_redact: bool = True
    """Pass captured traffic through the redaction engine (store.redaction, the imports' defaults) before it
    is stored; the client still gets the answer as the model wrote it."""

    capture_retention_days: float = Field(default=30, ge=0)
    """Captured traffic older than this that no rating, eval set or dataset uses is deleted. 0: kept forever."""

    api_max_request_bytes: int = Field(default=4_000_000, ge=1024)
    """Largest /v1 request body accepted; a bigger one is refused with 413."""

    admins: str = ""
    """With logins on: the users (comma-separated) who may manage API keys in the browser. Empty: the
    first user of TUNELOOP_USERS. Without logins (loopback only) whoever opens the app may."""

    users: str = ""
    """Optional logins for the web app, as 'name:password,name2:password2'. Empty: no login."""

    max_conversation_messages: int = Field(default=200, ge=2)
    """Imports report conversations with more messages than this."""

    max_conversation_chars: int = Field(default=32_000, ge=100)
    """Imports report conversations with more characters than this."""

    train_concurrency: int = Field(default=1, ge=1)
    """Training runs allowed to run at once on this machine; further runs wait as queued."""

    auto_eval_items: int = Field(default=8, ge=0)
    """Items the automatic evaluation at the end of a run asks both models (its held-out items first,
    then the default eval set's). 0 turns it off. On CPU, 8 items take about a minute."""

    default_eval_set: str = ""
    """The team's eval set (NAME or NAME@VERSION) every automatic evaluation includes. Empty: none."""

    eval_max_tokens: int = Field(default=160, ge=16)
    """Longest answer an evaluation asks for, in tokens."""

    checkpoint_budget_mb: float = Field(default=2048, ge=0)
    """Disk kept for the checkpoints of failed and cancelled runs (to resume them), newest runs first, in MB.
    0: runs save no checkpoints and cannot be resumed."""

    multi_gpu: Literal["auto", "ddp", "fsdp"] = "auto"
    """How a run over several GPUs of one machine or Ray worker splits the work: auto picks FSDP when the
    base model's bf16 weights would fill too much of one GPU, DDP otherwise (training.parallelism)."""

    # --- beyond one machine (docs/scaling-out.md) ---
    replica_urls: str = ""
    """vLLM replicas to serve from, as 'http://gpu1:8000,http://gpu2:8000' (started with the filesystem LoRA
    resolver over the adapter store). Set: no local vLLM is started and nothing is hot-loaded."""

    router_url: str = ""
    """A router in front of the replicas (vllm-router or any OpenAI-compatible balancer); /v1 goes through it."""

    adapter_store: str = ""
    """Where each adapter version is published under its name for the replicas (their
    VLLM_LORA_RESOLVER_CACHE_DIR): a shared directory, or an fsspec URL (s3://...) the replicas mount."""

    replica_model: str = ""
    """The --model value the replicas were started with: vLLM's resolver loads only adapters whose
    base_model_name_or_path equals it. Empty: base_model_path."""

    ray_address: str = ""
    """Ray cluster's dashboard address (http://head:8265): training runs are submitted there as Ray jobs."""

    ray_num_cpus: float = Field(default=1, ge=0)
    """CPUs a Ray training job asks for (entrypoint_num_cpus)."""

    ray_num_gpus: float = Field(default=0, ge=0)
    """GPUs a Ray training job asks for (entrypoint_num_gpus)."""

    ray_gpu_memory_gib: float = Field(default=80.0, gt=0)
    """Memory of one GPU of the Ray workers, in GiB: the app cannot see their GPUs, and a job over several of
    them picks DDP or FSDP by it (training.parallelism)."""

    @field_validator("max_lora_rank")
    @classmethod
    def _rank_vllm_accepts(cls, v: int) -> int:
        if v not in VLLM_LORA_RANKS:
            raise ValueError(f"max_lora_rank must be one of {VLLM_LORA_RANKS} (vLLM's allowed values), got {v}")
        return v

    @field_validator("max_cpu_loras")
    @classmethod
    def _cpu_loras_cover_active(cls, v: int, info) -> int:
        if v < info.data.get("max_loras", 1):
            raise ValueError("max_cpu_loras must be at least max_loras")
        return v

    # Derived paths: one place that knows the layout of the data directory.
    @property
    def db_path(self) -> Path:
        return self.data_dir / "tuneloop.db"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def adapters_dir(self) -> Path:
        return self.data_dir / "adapters"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def embedding_model_dir(self) -> Path:
        """all-MiniLM-L6-v2, extracted by `tuneloop setup` (serving.evaluation.embedding) for reference similarity."""
        return self.models_dir / "all-MiniLM-L6-v2"

    @property
    def default_model_dir(self) -> Path:
        return self.models_dir / DEFAULT_MODEL_DIRNAME

    @property
    def base_model_path(self) -> str:
        """What to hand `from_pretrained` and `vllm --model`: a directory path or a hub id."""
        return self.base_model or str(self.default_model_dir)

    @property
    def served_base_name(self) -> str:
        if self.base_model_name:
            return self.base_model_name
        return Path(self.base_model_path.rstrip("/")).name.lower()

    def login_pairs(self) -> list[tuple[str, str]]:
        pairs = []
        for item in filter(None, (p.strip() for p in self.users.split(","))):
            name, sep, password = item.partition(":")
            if not sep or not name or not password:
                raise ValueError(f"TUNELOOP_USERS entry {item!r} must be name:password")
            pairs.append((name, password))
        return pairs

    def admin_names(self) -> set[str]:
        """Who may manage API keys in the browser when logins are on (see `admins`)."""
        named = {n.strip() for n in self.admins.split(",") if n.strip()}
        if named:
            return named
        pairs = self.login_pairs()
        return {pairs[0][0]} if pairs else set()
