"""Planning a run: from what the user asked for (dataset, preset, method, adapter, overrides) to a validated RunConfig.

The rules are pure functions (`feedback_defaults`, `parent_lora`, `preference_length`) that both doors
reach through `plan_run`; the web app's Train tab asks `feedback_defaults` too when a feedback version
is picked, so the form shows what the run will do. `plan_run` reads what it needs from the store and
the model's files, then applies the rules; it writes nothing.

    cfg = plan_run(settings, dataset="feedback@3")          # method, adapter and weights from the build
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlite_utils import Database

from store import runs
from store.adapters import AdapterNotFound, get_adapter, validate_adapter_name
from store.datasets import DatasetNotFound, iter_version_conversations, resolve_version, version_conversation_count
from store.evaluations import eval_prompt_keys
from store.db import connect
from store.feedback import get_build, preference_counts
from store.settings import Settings
from training.config import DEFAULT_PRESET, ConfigError, RunConfig
from training.evalsets import exclude_eval_overlap


def feedback_defaults(build: dict | None) -> dict:
    """What a feedback dataset version brings to a run the user left unset (empty for imported data).

    Its method and the adapter it was built for (the round trains on top of it), the KTO weights the
    build balanced, and no held-out share: a round's few rated examples all train.
    """
    if build is None:
        return {}
    out = {"method": build["method"], "from_adapter": build["from_adapter"] or None, "eval_fraction": 0.0,
           "desirable_weight": build.get("desirable_weight"), "undesirable_weight": build.get("undesirable_weight")}
    return {k: v for k, v in out.items() if v is not None}


def preference_length(method: str, overrides: dict) -> dict:
    """Without an SFT phase, a length the user set (steps, epochs) is the preference phase's, not silently ignored."""
    if method not in ("kto", "dpo"):
        return overrides
    for src, dst in (("max_steps", "pref_max_steps"), ("epochs", "pref_epochs")):
        if overrides.get(src) is not None and overrides.get(dst) is None:
            overrides = {**overrides, dst: overrides[src]}
    return overrides


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
    if base_model:  # a registered base model's name (training.base_models), or a directory
        from training.base_models import resolve

        base_model = resolve(settings, base_model)
    with connect(settings.db_path) as db:
        try:
            ref = resolve_version(db, dataset)
        except (DatasetNotFound, ValueError) as exc:
            raise ConfigError("dataset", str(exc)) from None
        excluded = eval_overlap(db, ref.id)
        count = version_conversation_count(db, ref.id) - len(excluded)
        counts = {"sft": count, **preference_counts(db, ref.id)}
        build = get_build(db, ref.id)
        defaults = feedback_defaults(build)
        from_build = not from_adapter and "from_adapter" in defaults
        if from_build:
            from_adapter = defaults["from_adapter"]
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
        overrides = {**overrides, **parent_lora(parent["name"], _adapter_lora_config(parent), overrides)}
    chosen = method or defaults.get("method", "sft")
    overrides = preference_length(chosen, overrides)
    for key in ("desirable_weight", "undesirable_weight", "eval_fraction"):
        if overrides.get(key) is None and key in defaults:
            overrides = {**overrides, key: defaults[key]}
    cfg = RunConfig.from_preset(preset, max_lora_rank=settings.max_lora_rank, dataset=str(ref),
                                dataset_version_id=ref.id, base_model=base, from_adapter=from_adapter,
                                adapter_name=name, method=chosen, excluded_conversation_ids=excluded,
                                **overrides)
    minimums = (build["report"].get("minimums") or None) if build else None
    cfg.check_examples(counts, feedback=build is not None, minimums=minimums)
    cfg.check_context(max_lora_rank=settings.max_lora_rank, model_max_len=model_max_len(base), conversations=count)
    return cfg


def eval_overlap(db: Database, version_id: int) -> list[int]:
    """Ids of the version's conversations that hold an eval item's prompt (any eval set): never trained on."""
    keys = eval_prompt_keys(db)
    if not keys:
        return []
    conversations = list(iter_version_conversations(db, version_id))
    _kept, dropped = exclude_eval_overlap(conversations, keys)
    return sorted(c["id"] for c in dropped)


def parent_lora(name: str, lora: dict, overrides: dict) -> dict:
    """A continued adapter keeps its parent's rank, alpha and modules (from its adapter_config.json); refuse others."""
    keep = {"lora_rank": lora["r"], "lora_alpha": float(lora["lora_alpha"]),
            "target_modules": sorted(lora["target_modules"]) if isinstance(lora["target_modules"], list)
            else lora["target_modules"]}
    for key in ("lora_rank", "lora_alpha"):
        if overrides.get(key) is not None and overrides[key] != keep[key]:
            raise ConfigError(key, f"continuing adapter {name!r} keeps its {key}={keep[key]}; "
                                   f"drop the option or train a new adapter from the base model")
    return keep


def _adapter_lora_config(parent: dict) -> dict:
    cfg_path = Path(parent["path"]) / "adapter_config.json"
    if not cfg_path.is_file():
        raise ConfigError("from_adapter", f"adapter {parent['name']!r} has no adapter_config.json at {parent['path']}")
    return json.loads(cfg_path.read_text())


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
