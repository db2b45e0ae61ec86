"""The typed, validated configuration of one training run, and the presets users start from.

A `RunConfig` is everything a run needs to be reproduced: it is stored as JSON in `runs.config`
and written to `<run_dir>/config.json`. `__post_init__` refuses combinations that are wrong on
their own; `check_context` refuses those that are wrong for this server, model or dataset (rank
above the server's limit, sequence length above the model's, too few conversations to hold some
out), and `check_examples` a dataset version with too few examples for a part of the method. All
raise `ConfigError`, whose message names the field and says why.

Methods (training.feedback_dataset.METHODS): "sft", the preference methods "kto" and "dpo", and
"sft+kto" / "sft+dpo" (SFT first, then the preference phase on its result: one run, one adapter).
The `beta`, `pref_*` and `*_weight` fields configure the preference phase; the SFT fields
(learning_rate, epochs, max_steps, eval_*) the SFT phase. Configs saved before the preference
fields existed still load: the missing fields take their defaults.

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
from training.feedback_dataset import DEFAULT_MINIMUMS, KTO_MIN_BATCH, method_parts
from training.feedback_dataset import METHODS as _METHOD_PARTS

METHODS = tuple(_METHOD_PARTS)  # sft, kto, dpo, sft+dpo, sft+kto
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

    excluded_conversation_ids: list[int] = dataclasses.field(default_factory=list)
    """Conversations of the version never trained on because they are eval items (training.planning): an
    adapter is never trained on what it will be judged on. Set by the planner; they are held out (evaluated
    for the held-out loss) beside the version's seeded split (training.data.split_conversations)."""

    base_model: str = ""
    """Base model: a local transformers directory (or a hub id where a hub is reachable)."""

    from_adapter: str | None = None
    """Name of an earlier adapter to continue from; its weights start this run and become its parent."""

    adapter_name: str | None = None
    """Name for the new adapter. None: '<family>-v<N>', family = dataset slug or the parent's family."""

    method: str = "sft"
    """Training objective: 'sft' (supervised, assistant tokens only); 'kto' (rated answers, desirable or
    not) and 'dpo' (chosen over rejected answer pairs), which need a feedback dataset version; 'sft+kto'
    and 'sft+dpo': SFT first, then the preference phase on the SFT result, as one run and one adapter."""

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
    """Conversations per micro-batch (SFT); KTO rows or DPO pairs per micro-batch (preference phase, at
    least 4 for KTO: its KL estimate pairs each answer with the other prompts of its micro-batch)."""

    grad_accum: int = 2
    """Micro-batches per optimizer step; the effective batch is batch_size x grad_accum conversations."""

    max_seq_len: int = 1024
    """Longest example in tokens; longer conversations are cut at the last whole turn that fits."""

    # --- evaluation and reproducibility ---
    eval_fraction: float = 0.1
    """Share of conversations held out for the eval loss, in [0, 0.5); 0 turns evaluation off."""

    eval_every: int | None = None
    """Optimizer steps between the in-run held-out evaluations. None: as often as `eval_share` allows, at most
    five times a run (training.evalplan)."""

    eval_sample: int = 16
    """Held-out conversations each in-run evaluation reads (a fixed seeded sample, the same every time, so the
    curve compares like with like); the held-out loss at the end always reads all of them. 0: all, every time."""

    eval_share: float = 0.1
    """The most the in-run evaluations may cost, as a share of the training compute, when eval_every is unset
    (an evaluation took 44% of a 30-step run before this bound). In (0, 1]."""

    seed: int = 42
    """Seed for the held-out split, LoRA initialisation and data order: same seed, same run."""

    # --- preference phase (kto, dpo, and the second phase of sft+kto / sft+dpo) ---
    # The reference model is the adapter the phase starts from (the parent, or the SFT phase's
    # result), frozen; there is no held-out split: a feedback round holds tens of rows, too few to
    # spare some and too few for an eval loss to mean much. TRL's reward metrics are logged instead.
    beta: float = 0.1
    """How strongly the preference phase is held to its reference: higher stays closer (TRL's default)."""

    pref_learning_rate: float = 2e-5
    """Peak learning rate of the preference phase. LoRA needs roughly 10x the rate of full fine-tuning
    (DPO recipes use 5e-7 full, 5e-6..5e-5 LoRA); a round is only a few steps over tens of rows, so the
    upper middle of that range, with beta holding it near the reference."""

    pref_epochs: float | None = 2.0
    """Passes over the KTO rows or DPO pairs. Two: preference losses fit a few repeated pairs fast
    (reward margins keep growing on memorised pairs), so more passes mostly memorise. Ignored when
    pref_max_steps is set."""

    pref_max_steps: int | None = None
    """Optimizer steps of the preference phase; overrides pref_epochs when set."""

    desirable_weight: float = 1.0
    """KTO: weight of the desirable (thumbs-up) rows' loss. The runner copies it from the feedback build,
    which balances it against the undesirable rows (training.feedback_dataset.kto_weights)."""

    undesirable_weight: float = 1.0
    """KTO: weight of the undesirable (thumbs-down) rows' loss; set like desirable_weight."""

    def __post_init__(self) -> None:
        _require(self.method in METHODS, "method", f"must be one of {', '.join(METHODS)}, got {self.method!r}")
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
        self._check_length("epochs", "max_steps", "the run")
        _require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        _require(self.grad_accum >= 1, "grad_accum", f"must be >= 1, got {self.grad_accum}")
        _require(self.max_seq_len >= MIN_SEQ_LEN, "max_seq_len",
                 f"must be at least {MIN_SEQ_LEN} tokens, got {self.max_seq_len}")
        _require(0 <= self.eval_fraction < 0.5, "eval_fraction",
                 f"must be in [0, 0.5) (0 turns evaluation off), got {self.eval_fraction}")
        if self.eval_every is not None:
            _require(self.eval_every >= 1, "eval_every", f"must be >= 1 step, got {self.eval_every}")
        _require(self.eval_sample >= 0, "eval_sample", f"must be >= 0 conversations (0: all), got {self.eval_sample}")
        _require(0 < self.eval_share <= 1, "eval_share", f"must be in (0, 1], got {self.eval_share}")
        self._check_preference()

    def _check_length(self, epochs_field: str, steps_field: str, what: str) -> None:
        """A phase's length: steps when set (>= 1), else epochs (> 0); one of them must be set."""
        epochs, steps = getattr(self, epochs_field), getattr(self, steps_field)
        _require(epochs is not None or steps is not None, epochs_field,
                 f"set {epochs_field} or {steps_field} (both are unset, so {what} would have no length)")
        if steps is not None:
            _require(steps >= 1, steps_field, f"must be >= 1, got {steps}")
        else:
            _require(epochs > 0, epochs_field, f"must be > 0, got {epochs}")

    def _check_preference(self) -> None:
        _require(self.beta > 0 and math.isfinite(self.beta), "beta", f"must be a positive number, got {self.beta}")
        _require(self.pref_learning_rate > 0 and math.isfinite(self.pref_learning_rate), "pref_learning_rate",
                 f"must be a positive number, got {self.pref_learning_rate}")
        self._check_length("pref_epochs", "pref_max_steps", "the preference phase")
        for name in ("desirable_weight", "undesirable_weight"):
            value = getattr(self, name)
            _require(value > 0 and math.isfinite(value), name, f"must be a positive number, got {value}")
        if "kto" in self.parts:
            _require(self.batch_size >= KTO_MIN_BATCH, "batch_size",
                     f"KTO needs at least {KTO_MIN_BATCH} rows per micro-batch (its KL estimate pairs each answer "
                     f"with the other prompts of the micro-batch), got {self.batch_size}")

    @property
    def parts(self) -> tuple[str, ...]:
        """The phases of this run's method, in training order: ("sft",), ("dpo",), ("sft", "kto"), ..."""
        return method_parts(self.method)

    @property
    def preference_kind(self) -> str | None:
        """The preference phase's kind ("kto" or "dpo"), or None when the method is plain "sft"."""
        return next((p for p in self.parts if p != "sft"), None)

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
        """Refuse what is wrong for this server, model and dataset version (before any work starts).

        `conversations` counts the version's SFT conversations; they are only checked (not empty,
        enough to hold some out) when the method has an SFT phase.
        """
        _require(self.lora_rank <= max_lora_rank, "lora_rank",
                 f"{self.lora_rank} is above the server's max_lora_rank {max_lora_rank}; "
                 f"vLLM could not load the adapter (choose a rank of {max_lora_rank} or lower, "
                 "or raise TUNELOOP_MAX_LORA_RANK)")
        if model_max_len:
            _require(self.max_seq_len <= model_max_len, "max_seq_len",
                     f"{self.max_seq_len} is above the base model's limit of {model_max_len} tokens")
        if "sft" not in self.parts:
            return
        _require(conversations > 0, "dataset", f"{self.dataset or 'the dataset version'} has no conversations")
        held_out = held_out_count(conversations, self.eval_fraction)
        if self.eval_fraction > 0 and held_out == 0:
            need = math.ceil(0.5 / self.eval_fraction)
            raise ConfigError("eval_fraction",
                              f"holding out {self.eval_fraction:g} of {conversations} conversation(s) leaves none "
                              f"to evaluate on; it needs at least {need} conversations, or a held-out share of 0")

    def check_examples(self, counts: dict[str, int], *, feedback: bool,
                       minimums: dict[str, int] | None = None) -> None:
        """Refuse a dataset version with too few examples for a part of the method (field "method").

        `counts`: {"sft", "kto_desirable", "kto_undesirable", "dpo"} of the version. A preference part
        needs a feedback version with at least `minimums` rows (default DEFAULT_MINIMUMS, the floors
        `tuneloop feedback build` applies; the runner passes the build's own); the SFT part of a
        feedback version too. An imported version's SFT part is only checked for being empty (by
        `check_context`).
        """
        need = {**DEFAULT_MINIMUMS, **(minimums or {})}
        where = self.dataset or "the dataset version"
        for part in self.parts:
            if part == "sft":
                if feedback and counts.get("sft", 0) < need["sft"]:
                    raise ConfigError("method", f"a {self.method} run on a feedback version needs at least "
                                                f"{need['sft']} SFT examples; {where} has {counts.get('sft', 0)}")
                continue
            if not feedback:
                raise ConfigError("method", f"a {self.method} run needs a feedback dataset version "
                                            f"(tuneloop feedback build); {where} is not one")
            if part == "dpo" and counts.get("dpo", 0) < need["dpo"]:
                raise ConfigError("method", f"a {self.method} run needs at least {need['dpo']} DPO pairs; "
                                            f"{where} has {counts.get('dpo', 0)}")
            if part == "kto":
                good, bad = counts.get("kto_desirable", 0), counts.get("kto_undesirable", 0)
                if good < need["kto_desirable"] or bad < need["kto_undesirable"]:
                    raise ConfigError("method", f"a {self.method} run needs at least {need['kto_desirable']} "
                                                f"desirable and {need['kto_undesirable']} undesirable KTO rows; "
                                                f"{where} has {good} and {bad}")

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

        The preset's rank is lowered to `max_lora_rank` when that is smaller and no rank was given;
        alpha follows the rank at the preset's alpha/rank ratio unless an alpha is given.
        Setting max_steps without epochs (or the reverse) wins over the preset's length; the same for
        pref_max_steps and pref_epochs.
        """
        if preset not in PRESETS:
            raise ConfigError("preset", f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        values = {**PRESETS[preset], "preset": preset}
        given = {k: v for k, v in overrides.items() if v is not None}
        # alpha/rank is the preset's choice of update scale: a rank picked without an alpha (by
        # either door, or the server's cap) keeps that scale. Both doors rely on this one rule.
        ratio = values["lora_alpha"] / values["lora_rank"]
        if max_lora_rank is not None and "lora_rank" not in given:
            allowed = [r for r in VLLM_LORA_RANKS if r <= max_lora_rank]
            if allowed and values["lora_rank"] > max_lora_rank:
                values["lora_rank"] = allowed[-1]
        if "lora_rank" in given:
            values["lora_rank"] = given["lora_rank"]
        values["lora_alpha"] = ratio * values["lora_rank"]
        if "max_steps" in given and "epochs" not in given:
            values["epochs"] = None
        if "pref_max_steps" in given and "pref_epochs" not in given:
            values["pref_epochs"] = None
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
        # A first look: one pass, short context, rank 8 (how long follows the data: 118 steps on 524 chats).
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
