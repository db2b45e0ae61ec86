"""The typed, validated configuration of one training run, and the presets users start from.

A `RunConfig` is everything a run needs to be reproduced: it is stored as JSON in `runs.config`
and written to `<run_dir>/config.json`. `__post_init__` refuses combinations that are wrong on
their own; `check_context` refuses those that are wrong for this server, model or dataset (rank
above the server's limit, sequence length above the model's, too few conversations to hold some
out). Both raise `ConfigError`, whose message names the field and says why.

    cfg = RunConfig.from_preset("standard", dataset="support@2", base_model="/models/smollm2", lora_rank=8)
    RunConfig.from_dict(json.loads(run["config"]))   # the same run again
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from store.settings import VLLM_LORA_RANKS

METHODS = ("sft", "kto", "dpo")
IMPLEMENTED_METHODS = ("sft",)  # kto/dpo plug in here in a later issue (training.recipe dispatches on method)
SCHEDULES = ("cosine", "linear", "constant", "constant_with_warmup")
# Training these would need `modules_to_save` (or new tokens), which vLLM refuses to serve.
NOT_SERVABLE_MODULES = ("lm_head", "embed_tokens", "wte", "wpe", "embed_out", "output")
MIN_SEQ_LEN = 32


class ConfigError(ValueError):
    """An invalid run configuration; `field` names the offending field."""

    def __init__(self, field: str, reason: str):
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


@dataclass
class RunConfig:
    """One training run: what it trains on, from what, and how."""

    # --- what ---
    dataset: str = ""
    """Dataset version to train on, as 'name' (latest) or 'name@N'; resolved to `dataset_version_id` when queued."""

    dataset_version_id: int | None = None
    """The resolved dataset version (set by the runner, so a re-run trains on exactly the same rows)."""

    base_model: str = ""
    """Base model: a local transformers directory (or a hub id where a hub is reachable)."""

    from_adapter: str | None = None
    """Name of an earlier adapter to continue from; its weights start this run and become its parent."""

    adapter_name: str | None = None
    """Name for the new adapter. None: '<family>-v<N>', family = dataset slug or the parent's family."""

    method: Literal["sft", "kto", "dpo"] = "sft"
    """Training objective. Only 'sft' (supervised, assistant tokens only) exists now; kto/dpo come later."""

    preset: str = "standard"
    """The preset the values started from (informational; the fields below are what counts)."""

    # --- LoRA ---
    lora_rank: int = 16
    """LoRA rank r: one of vLLM's allowed values and at most the server's max_lora_rank."""

    lora_alpha: float = 32.0
    """LoRA scaling numerator (the update is scaled by alpha / r); must be > 0."""

    lora_dropout: float = 0.05
    """Dropout on the LoRA input, in [0, 1)."""

    target_modules: str | list[str] = "all-linear"
    """Linear layers that get LoRA: 'all-linear' (every linear layer but the output head) or module names."""

    # --- optimisation ---
    learning_rate: float = 2e-4
    """Peak learning rate (AdamW)."""

    lr_schedule: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    """Learning-rate schedule after warmup."""

    warmup_ratio: float = 0.05
    """Share of optimizer steps spent warming the learning rate up from 0 (rounded down), in [0, 0.5]."""

    weight_decay: float = 0.0
    """AdamW weight decay."""

    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 turns clipping off)."""

    epochs: float | None = 3.0
    """Passes over the training conversations. Ignored when max_steps is set."""

    max_steps: int | None = None
    """Optimizer steps to train for; overrides epochs when set."""

    batch_size: int = 4
    """Conversations per micro-batch (concatenated padding-free into one row of tokens)."""

    grad_accum: int = 2
    """Micro-batches per optimizer step; the effective batch is batch_size x grad_accum conversations."""

    max_seq_len: int = 1024
    """Longest example in tokens; longer conversations are cut at the last whole turn that fits."""

    # --- evaluation and reproducibility ---
    eval_fraction: float = 0.1
    """Share of conversations held out for the eval loss, in [0, 0.5); 0 turns evaluation off."""

    eval_every: int | None = None
    """Optimizer steps between held-out evaluations. None: about five evaluations per run."""

    seed: int = 42
    """Seed for the held-out split, LoRA initialisation and data order: same seed, same run."""

    def __post_init__(self) -> None:
        _require(self.method in METHODS, "method", f"must be one of {', '.join(METHODS)}, got {self.method!r}")
        _require(self.method in IMPLEMENTED_METHODS, "method",
                 f"{self.method!r} training is not available yet; use 'sft'")
        _require(self.lora_rank in VLLM_LORA_RANKS, "lora_rank",
                 f"must be one of vLLM's allowed ranks {VLLM_LORA_RANKS}, got {self.lora_rank}")
        _require(self.lora_alpha > 0, "lora_alpha", f"must be > 0, got {self.lora_alpha}")
        _require(0 <= self.lora_dropout < 1, "lora_dropout", f"must be in [0, 1), got {self.lora_dropout}")
        self._check_target_modules()
        _require(self.learning_rate > 0 and math.isfinite(self.learning_rate), "learning_rate",
                 f"must be a positive number, got {self.learning_rate}")
        _require(self.lr_schedule in SCHEDULES, "lr_schedule",
                 f"must be one of {', '.join(SCHEDULES)}, got {self.lr_schedule!r}")
        _require(0 <= self.warmup_ratio <= 0.5, "warmup_ratio", f"must be in [0, 0.5], got {self.warmup_ratio}")
        _require(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        _require(self.max_grad_norm >= 0, "max_grad_norm", f"must be >= 0, got {self.max_grad_norm}")
        _require(self.epochs is not None or self.max_steps is not None, "epochs",
                 "set epochs or max_steps (both are unset, so the run would have no length)")
        if self.max_steps is not None:
            _require(self.max_steps >= 1, "max_steps", f"must be >= 1, got {self.max_steps}")
        elif self.epochs is not None:
            _require(self.epochs > 0, "epochs", f"must be > 0, got {self.epochs}")
        _require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        _require(self.grad_accum >= 1, "grad_accum", f"must be >= 1, got {self.grad_accum}")
        _require(self.max_seq_len >= MIN_SEQ_LEN, "max_seq_len",
                 f"must be at least {MIN_SEQ_LEN} tokens, got {self.max_seq_len}")
        _require(0 <= self.eval_fraction < 0.5, "eval_fraction",
                 f"must be in [0, 0.5) (0 turns evaluation off), got {self.eval_fraction}")
        if self.eval_every is not None:
            _require(self.eval_every >= 1, "eval_every", f"must be >= 1 step, got {self.eval_every}")

    def _check_target_modules(self) -> None:
        mods = self.target_modules
        if isinstance(mods, str):
            _require(mods == "all-linear", "target_modules",
                     f"must be 'all-linear' or a list of module names, got {mods!r}")
            return
        _require(bool(mods) and all(isinstance(m, str) and m for m in mods), "target_modules",
                 "must be a non-empty list of module names")
        bad = [m for m in mods if m.rsplit(".", 1)[-1] in NOT_SERVABLE_MODULES]
        _require(not bad, "target_modules",
                 f"{', '.join(bad)} would train embeddings or the output head, which vLLM cannot serve as LoRA")

    # --- context checks: need the server's limit, the model's and the dataset's size ---
    def check_context(self, *, max_lora_rank: int, model_max_len: int | None, conversations: int) -> None:
        """Refuse what is wrong for this server, model and dataset version (before any work starts)."""
        _require(self.lora_rank <= max_lora_rank, "lora_rank",
                 f"{self.lora_rank} is above the server's max_lora_rank {max_lora_rank}; "
                 f"vLLM could not load the adapter (use --rank {max_lora_rank} or lower, "
                 "or raise TUNELOOP_MAX_LORA_RANK)")
        if model_max_len:
            _require(self.max_seq_len <= model_max_len, "max_seq_len",
                     f"{self.max_seq_len} is above the base model's limit of {model_max_len} tokens")
        _require(conversations > 0, "dataset", f"{self.dataset or 'the dataset version'} has no conversations")
        held_out = held_out_count(conversations, self.eval_fraction)
        if self.eval_fraction > 0 and held_out == 0:
            need = math.ceil(0.5 / self.eval_fraction)
            raise ConfigError("eval_fraction",
                              f"holding out {self.eval_fraction:g} of {conversations} conversation(s) leaves none "
                              f"to evaluate on; it needs at least {need} conversations, or use --eval-fraction 0")

    # --- (de)serialisation ---
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(unknown[0], f"unknown config field (known: {', '.join(sorted(known))})")
        return cls(**data)

    @classmethod
    def from_preset(cls, preset: str = "standard", *, max_lora_rank: int | None = None,
                    **overrides: Any) -> "RunConfig":
        """A preset's values with `overrides` on top (None values in overrides are ignored).

        The preset's rank is lowered to `max_lora_rank` when that is smaller and no rank was given.
        Setting max_steps without epochs (or the reverse) wins over the preset's length.
        """
        if preset not in PRESETS:
            raise ConfigError("preset", f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        values = {**PRESETS[preset], "preset": preset}
        given = {k: v for k, v in overrides.items() if v is not None}
        if max_lora_rank is not None and "lora_rank" not in given:
            allowed = [r for r in VLLM_LORA_RANKS if r <= max_lora_rank]
            if allowed and values["lora_rank"] > max_lora_rank:
                ratio = values["lora_alpha"] / values["lora_rank"]
                values["lora_rank"] = allowed[-1]
                values["lora_alpha"] = ratio * allowed[-1]
        if "max_steps" in given and "epochs" not in given:
            values["epochs"] = None
        return cls.from_dict({**values, **given})


def held_out_count(conversations: int, eval_fraction: float) -> int:
    """How many conversations the held-out split takes: n x fraction rounded half up, leaving at least one to train."""
    if eval_fraction <= 0:
        return 0
    return min(int(conversations * eval_fraction + 0.5), max(conversations - 1, 0))


def _require(ok: bool, field_name: str, reason: str) -> None:
    if not ok:
        raise ConfigError(field_name, reason)


# Presets. LoRA on a small instruct model learns a support team's tone and rules from a few hundred
# chats in a few epochs at 1e-4..3e-4; alpha = 2r keeps the update scale the same across ranks.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": dict(
        # A first look in minutes: one pass, short context, rank 8.
        lora_rank=8, lora_alpha=16.0, lora_dropout=0.05, learning_rate=3e-4, lr_schedule="cosine",
        warmup_ratio=0.05, epochs=1.0, max_steps=None, batch_size=4, grad_accum=1, max_seq_len=512,
        eval_fraction=0.1,
    ),
    "standard": dict(
        # A few hundred conversations: three passes, effective batch 8, 1k tokens of context.
        lora_rank=16, lora_alpha=32.0, lora_dropout=0.05, learning_rate=2e-4, lr_schedule="cosine",
        warmup_ratio=0.05, epochs=3.0, max_steps=None, batch_size=4, grad_accum=2, max_seq_len=1024,
        eval_fraction=0.1,
    ),
    "thorough": dict(
        # Thousands of conversations or long chats: rank 32 (lowered to the server's limit), effective
        # batch 16, lower peak rate, 2k tokens of context, a smaller held-out share.
        lora_rank=32, lora_alpha=64.0, lora_dropout=0.05, learning_rate=1e-4, lr_schedule="cosine",
        warmup_ratio=0.03, epochs=4.0, max_steps=None, batch_size=8, grad_accum=2, max_seq_len=2048,
        eval_fraction=0.05,
    ),
}
DEFAULT_PRESET = "standard"
