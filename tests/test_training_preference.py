"""Preference training (KTO, DPO, SFT then DPO) on a feedback dataset version, on top of a parent adapter.

Fast tests: config validation, plan_run's defaults from the feedback build and its per-part
refusals (real SQLite store), prompt fitting, TRL's tokenization of our rows (the answer ends
with the end-of-turn token), the progress callback's step offset and cancel. Slow tests train a
2-layer Llama built locally for a few real steps through `training.worker` and check the run, the
metrics and the published adapter.

Run: .venv/bin/python -m pytest tests/test_training_preference.py -q
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

import pytest

from helpers_adapters import train_tiny_adapter
from store import runs
from store.adapters import get_adapter, register_adapter
from store.datasets import NewConversation
from store.db import connect
from store.feedback import save_feedback_version
from store.settings import Settings
from training import planning, preference, queue
from training.config import ConfigError, RunConfig
from training_support import add_dataset, make_tiny_model, support_conversations

SYSTEM = {"role": "system", "content": "You are the support assistant of Acme Shop."}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture
def tiny_settings(data_dir, tiny_model):
    return Settings(_env_file=None, data_dir=data_dir, base_model=str(tiny_model), base_model_name="tiny")


@pytest.fixture
def parent(tiny_settings, tiny_model):
    """A registered rank-8 adapter with random (non-zero) LoRA weights: the adapter a round improves."""
    path = train_tiny_adapter(tiny_model, tiny_settings.adapters_dir / "support-v1", rank=8, random_init=True)
    with connect(tiny_settings.db_path) as db:
        register_adapter(db, name="support-v1", family="support", version=1, base_model=str(tiny_model),
                         path=str(path), rank=8, run_id=None, dataset_version_id=None, parent_id=None)
        return get_adapter(db, "support-v1")


# --- feedback rows as `tuneloop feedback build` writes them ---
def _prompt(i: int) -> list[dict]:
    return [SYSTEM, {"role": "user", "content": f"Where is my order {i}?"}]


def _good(i: int) -> str:
    return f"Order {i} ships today; you get a tracking link by email."


def _bad(i: int) -> str:
    return f"No idea about order {i}."


def sft_rows(n: int) -> list[NewConversation]:
    out = []
    for i in range(n):
        messages = _prompt(i) + [{"role": "assistant", "content": _good(i), "weight": 1}]
        digest = hashlib.sha256(json.dumps(messages).encode()).hexdigest()
        out.append(NewConversation(content_hash=digest, messages=messages, source="feedback"))
    return out


def kto_rows(good: int, bad: int) -> list[dict]:
    return ([{"prompt": _prompt(i), "completion": [{"role": "assistant", "content": _good(i)}], "label": True}
             for i in range(good)]
            + [{"prompt": _prompt(100 + i), "completion": [{"role": "assistant", "content": _bad(100 + i)}],
                "label": False} for i in range(bad)])


def dpo_rows(n: int) -> list[dict]:
    return [{"prompt": _prompt(i), "chosen": [{"role": "assistant", "content": _good(i)}],
             "rejected": [{"role": "assistant", "content": _bad(i)}]} for i in range(n)]


def add_feedback(settings, *, method: str, sft: int = 0, kto: tuple[int, int] = (0, 0), dpo: int = 0,
                 from_adapter: str | None = "support-v1", weights: tuple[float, float] = (1.0, 1.0),
                 report: dict | None = None):
    with connect(settings.db_path) as db:
        return save_feedback_version(
            db, dataset="feedback", method=method, sft=sft_rows(sft), kto=kto_rows(*kto), dpo=dpo_rows(dpo),
            provenance={}, rating_ids=[], report=report or {}, since=None, from_adapter=from_adapter,
            desirable_weight=weights[0], undesirable_weight=weights[1])


# --- config ---
@pytest.mark.parametrize("method, parts", [
    ("sft", ("sft",)), ("kto", ("kto",)), ("dpo", ("dpo",)), ("sft+kto", ("sft", "kto")), ("sft+dpo", ("sft", "dpo")),
])
def test_every_method_is_accepted_with_its_phases(method, parts):
    cfg = RunConfig(method=method)
    assert cfg.parts == parts
    assert cfg.preference_kind == (parts[-1] if parts[-1] != "sft" else None)
    assert RunConfig.from_dict(json.loads(cfg.to_json())) == cfg


@pytest.mark.parametrize("kwargs, field, why", [
    ({"method": "ppo"}, "method", "one of sft, kto, dpo, sft+dpo, sft+kto"),
    ({"beta": 0}, "beta", "positive"),
    ({"beta": float("nan")}, "beta", "positive"),
    ({"pref_learning_rate": -1e-5}, "pref_learning_rate", "positive"),
    ({"pref_epochs": None, "pref_max_steps": None}, "pref_epochs", "both are unset"),
    ({"pref_max_steps": 0}, "pref_max_steps", ">= 1"),
    ({"pref_epochs": 0}, "pref_epochs", "> 0"),
    ({"desirable_weight": 0}, "desirable_weight", "positive"),
    ({"undesirable_weight": -1}, "undesirable_weight", "positive"),
    ({"method": "kto", "batch_size": 2}, "batch_size", "at least 4 rows per micro-batch"),
    ({"method": "sft+kto", "batch_size": 3}, "batch_size", "KL estimate"),
])
def test_invalid_preference_settings_are_refused_naming_the_field(kwargs, field, why):
    with pytest.raises(ConfigError) as err:
        RunConfig(**kwargs)
    assert err.value.field == field and why in str(err.value)


def test_batch_size_below_four_is_fine_without_kto():
    assert RunConfig(method="dpo", batch_size=1).batch_size == 1


def test_configs_saved_before_the_preference_fields_still_load():
    old = RunConfig.from_preset("quick", dataset="d@1", base_model="/m").to_dict()
    for key in ("beta", "pref_learning_rate", "pref_epochs", "pref_max_steps", "desirable_weight",
                "undesirable_weight"):
        del old[key]
    cfg = RunConfig.from_dict(old)
    assert (cfg.method, cfg.beta, cfg.pref_epochs) == ("sft", 0.1, 2.0)


def test_pref_max_steps_wins_over_the_default_pref_epochs():
    cfg = RunConfig.from_preset("quick", method="dpo", pref_max_steps=3)
    assert (cfg.pref_max_steps, cfg.pref_epochs) == (3, None)
    assert preference.planned_steps(cfg, 100) == 3


def test_planned_steps_follow_the_trainers_arithmetic():
    cfg = RunConfig(method="dpo", batch_size=4, grad_accum=2, pref_epochs=2.0)
    assert preference.planned_steps(cfg, 8, world_size=1) == 2  # 2 micro-batches = 1 step per pass
    assert preference.planned_steps(cfg, 9, world_size=1) == 4  # 3 micro-batches = 2 steps per pass
    assert preference.planned_steps(cfg, 1, world_size=1) == 2


def test_an_empty_sft_set_is_only_refused_when_the_method_trains_sft():
    RunConfig(method="dpo").check_context(max_lora_rank=16, model_max_len=None, conversations=0)
    with pytest.raises(ConfigError, match="^dataset: .*no conversations"):
        RunConfig(method="sft+dpo").check_context(max_lora_rank=16, model_max_len=None, conversations=0)


# --- plan_run on a feedback version (real store) ---
def test_a_feedback_version_gives_its_method_parent_weights_and_no_held_out_split(tiny_settings, parent):
    ref = add_feedback(tiny_settings, method="sft+kto", sft=4, kto=(6, 4), weights=(1.0, 1.29))
    cfg = planning.plan_run(tiny_settings, dataset="feedback", preset="quick")
    assert (cfg.method, cfg.from_adapter, cfg.dataset_version_id) == ("sft+kto", "support-v1", ref.id)
    assert (cfg.desirable_weight, cfg.undesirable_weight) == (1.0, 1.29)
    assert cfg.eval_fraction == 0 and cfg.lora_rank == 8  # the parent's rank
    # What the caller says wins.
    cfg = planning.plan_run(tiny_settings, dataset="feedback", preset="quick", method="sft", eval_fraction=0.2,
                          undesirable_weight=2.0)
    assert (cfg.method, cfg.eval_fraction, cfg.undesirable_weight) == ("sft", 0.2, 2.0)


def test_a_length_given_for_a_preference_only_run_sets_the_preference_phase(tiny_settings, parent):
    add_feedback(tiny_settings, method="sft+dpo", sft=4, dpo=8)
    cfg = planning.plan_run(tiny_settings, dataset="feedback", preset="quick", method="dpo", max_steps=6)
    assert (cfg.pref_max_steps, cfg.pref_epochs) == (6, None)
    cfg = planning.plan_run(tiny_settings, dataset="feedback", preset="quick", method="dpo", epochs=3.0)
    assert (cfg.pref_max_steps, cfg.pref_epochs) == (None, 3.0)
    # With an SFT phase the length is the SFT phase's, and the preference phase keeps its own.
    cfg = planning.plan_run(tiny_settings, dataset="feedback", preset="quick", max_steps=6)
    assert (cfg.max_steps, cfg.pref_max_steps, cfg.pref_epochs) == (6, None, 2.0)


def test_a_plain_dataset_still_defaults_to_sft_from_the_base_model(tiny_settings):
    with connect(tiny_settings.db_path) as db:
        add_dataset(db, "Support Chats", support_conversations(12))
    cfg = planning.plan_run(tiny_settings, dataset="Support Chats", preset="quick")
    assert (cfg.method, cfg.from_adapter, cfg.eval_fraction) == ("sft", None, 0.1)


@pytest.mark.parametrize("build, options, text", [
    (dict(method="dpo", dpo=5), {}, "needs at least 8 DPO pairs; feedback@1 has 5"),
    (dict(method="kto", kto=(6, 3)), {}, "needs at least 4 desirable and 4 undesirable KTO rows; feedback@1 has 6 and 3"),
    (dict(method="sft+dpo", sft=2, dpo=8), {}, "needs at least 4 SFT examples; feedback@1 has 2"),
    (dict(method="sft", sft=4), {"method": "dpo"}, "at least 8 DPO pairs; feedback@1 has 0"),
    (dict(method="dpo", dpo=3, report={"minimums": {"dpo": 4}}), {}, "at least 4 DPO pairs; feedback@1 has 3"),
])
def test_too_few_examples_for_a_part_are_refused_saying_how_many(tiny_settings, parent, build, options, text):
    add_feedback(tiny_settings, **build)
    with pytest.raises(ConfigError) as err:
        queue.start_run(tiny_settings, dataset="feedback", preset="quick", **options)
    assert err.value.field == "method" and text in str(err.value)
    with connect(tiny_settings.db_path) as db:
        assert runs.list_runs(db) == []


def test_preference_methods_need_a_feedback_version(tiny_settings):
    with connect(tiny_settings.db_path) as db:
        add_dataset(db, "Support Chats", support_conversations(12))
    for method in ("kto", "sft+dpo"):
        with pytest.raises(ConfigError, match=rf"^method: a {re.escape(method)} run needs a feedback dataset version "
                                              r"\(tuneloop feedback build\); Support Chats@1 is not one"):
            planning.plan_run(tiny_settings, dataset="Support Chats", method=method)


def test_the_builds_adapter_must_still_exist(tiny_settings):
    add_feedback(tiny_settings, method="dpo", dpo=8, from_adapter="gone-v3")
    with pytest.raises(ConfigError, match=r"^from_adapter: .*'gone-v3'.*feedback build feedback@1 was made for"):
        planning.plan_run(tiny_settings, dataset="feedback")


def test_cli_train_takes_the_method_and_refuses_with_field_and_reason(tiny_settings, parent, monkeypatch):
    from typer.testing import CliRunner

    from ui.cli import app

    monkeypatch.setenv("TUNELOOP_BASE_MODEL", tiny_settings.base_model)
    add_feedback(tiny_settings, method="dpo", dpo=5)
    cli = CliRunner()
    result = cli.invoke(app, ["train", "--dataset", "feedback", "--json"])
    assert result.exit_code == 2, result.output
    assert json.loads(result.output)["error"] == "refused: --method: a dpo run needs at least 8 DPO pairs; feedback@1 has 5"
    result = cli.invoke(app, ["train", "--dataset", "feedback", "--method", "kto", "--beta", "0"])
    assert result.exit_code == 2 and "beta: must be a positive number, got 0.0" in result.output
    add_feedback(tiny_settings, method="sft+dpo", sft=4, dpo=8)
    with connect(tiny_settings.db_path) as db:  # a run holding the only training slot: the new one stays queued
        runs.mark_running(db, runs.create_run(db, config={}, method="sft", dataset_version_id=None, base_model="/m",
                                              parent_adapter_id=None, runs_dir=tiny_settings.runs_dir))
    result = cli.invoke(app, ["train", "--dataset", "feedback", "--preset", "quick", "--beta", "0.2", "--pref-lr",
                              "1e-5", "--pref-max-steps", "5", "--json"])
    assert result.exit_code == 0, result.output
    with connect(tiny_settings.db_path) as db:
        run = runs.get_run(db, json.loads(result.output)["id"])
    cfg = run["config"]
    assert (run["status"], run["method"], cfg["from_adapter"], cfg["beta"], cfg["pref_learning_rate"]) == (
        "queued", "sft+dpo", "support-v1", 0.2, 1e-5)
    assert (cfg["pref_max_steps"], cfg["pref_epochs"]) == (5, None)
    help_text = cli.invoke(app, ["train", "--help"]).output
    assert "--method" in help_text and "--pref-lr" in help_text and "--beta" in help_text


# --- rows as TRL sees them ---
def test_fit_prompt_drops_the_oldest_exchanges_and_keeps_the_system_message():
    prompt = [SYSTEM, {"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"},
              {"role": "user", "content": "u2"}, {"role": "assistant", "content": "a2"},
              {"role": "user", "content": "u3"}]
    assert preference.fit_prompt(prompt, lambda p: True) == prompt
    assert preference.fit_prompt(prompt, lambda p: len(p) <= 4) == [SYSTEM, *prompt[3:]]
    assert preference.fit_prompt(prompt, lambda p: len(p) <= 2) == [SYSTEM, prompt[-1]]
    assert preference.fit_prompt(prompt, lambda p: False) is None


def test_prepare_shortens_or_leaves_out_rows_over_max_seq_len_and_mixes_kto_labels(tiny_model):
    from training.recipe import load_tokenizer

    tok = load_tokenizer(str(tiny_model))
    long_context = [SYSTEM, {"role": "user", "content": "x" * 300}, {"role": "assistant", "content": "y" * 300}]
    rows = kto_rows(4, 4)
    rows[0] = {**rows[0], "prompt": long_context + rows[0]["prompt"][1:]}  # fits without the old exchange
    rows[1] = {**rows[1], "completion": [{"role": "assistant", "content": "z" * 600}]}  # never fits
    cfg = RunConfig(method="kto", max_seq_len=512, seed=3)
    kept, stats = preference.prepare(cfg, tok, rows)
    assert stats == {"kind": "kto", "rows": 8, "trained": 7, "trimmed": 1, "left_out_too_long": 1,
                     "desirable": 3, "undesirable": 4, "repeated": 1}
    assert len(kept) == 8 and kept[-1] == kept[0]  # the last micro-batch of 4 is filled with the first row
    labels = [r["label"] for r in kept[:7]]
    assert labels != sorted(labels, reverse=True)  # shuffled: the build's grouping by label is gone
    shortened = next(r for r in kept if r["completion"] == rows[0]["completion"])
    assert shortened["prompt"] == [SYSTEM, rows[0]["prompt"][-1]]


@pytest.mark.parametrize("kind", ["kto", "dpo"])
def test_trl_trains_each_answer_through_the_end_of_turn_token_with_a_frozen_reference(tiny_model, kind, tmp_path):
    """The tokenized completions TRL trains end with <|im_end|> (then ChatML's newline); "ref" is frozen."""
    from training.recipe import load_model, load_tokenizer

    cfg = RunConfig(method=kind, base_model=str(tiny_model), lora_rank=8, lora_alpha=16.0, pref_max_steps=1)
    tok = load_tokenizer(cfg.base_model)
    rows, _ = preference.prepare(cfg, tok, kto_rows(4, 4) if kind == "kto" else dpo_rows(8))
    model = load_model(cfg)
    phase = preference.setup(cfg, rows, model=model, tokenizer=tok, output_dir=tmp_path)
    columns = ["completion_ids"] if kind == "kto" else ["chosen_ids", "rejected_ids"]
    for column in columns:
        for ids in phase.trainer.train_dataset[column]:
            assert ids[-2:] == [tok.eos_token_id, tok.convert_tokens_to_ids("Ċ")], tok.decode(ids)
            assert tok.decode(ids[:-2]) in {_good(i) for i in range(200)} | {_bad(i) for i in range(200)}
    assert set(model.peft_config) == {"default", "ref"}
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".ref." in n)
    assert any(p.requires_grad for n, p in model.named_parameters() if ".default." in n)
    preference.release(phase)
    assert set(model.peft_config) == {"default"}


def test_smollm2_template_puts_the_end_of_turn_token_in_the_completion(default_model_dir):
    """TRL's completion = render(prompt + answer) minus render(prompt, generation prompt): check it for SmolLM2."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(default_model_dir)
    prompt, answer = _prompt(1), [{"role": "assistant", "content": _good(1)}]
    head = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    full = tok.apply_chat_template(prompt + answer, tokenize=True, return_dict=True)["input_ids"]
    assert full[:len(head)] == head
    assert tok.decode(full[len(head):]) == _good(1) + "<|im_end|>\n"
    assert tok.eos_token == "<|im_end|>"


# --- progress across phases ---
def test_progress_callback_continues_step_numbers_and_total_across_phases(tiny_settings):
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from training.callbacks import StoreProgressCallback

    with connect(tiny_settings.db_path) as db:
        run_id = runs.create_run(db, config={}, method="sft+dpo", dataset_version_id=None, base_model="/m",
                                 parent_adapter_id=None, runs_dir=tiny_settings.runs_dir)
        runs.claim_next_queued(db)
    cb = StoreProgressCallback(tiny_settings.db_path, run_id)
    args = TrainingArguments(output_dir=str(tiny_settings.data_dir / "t"), report_to="none", use_cpu=True)
    control = TrainerControl()
    cb.steps_after = 3  # phase 1: 2 steps of its own, then 3 of the preference phase
    state = TrainerState(max_steps=2)
    cb.on_train_begin(args, state, control)
    state.global_step = 2
    cb.on_step_end(args, state, control)
    cb.on_log(args, state, control, logs={"loss": 1.5})
    with connect(tiny_settings.db_path) as db:
        assert (runs.get_run(db, run_id)["step"], runs.get_run(db, run_id)["total_steps"]) == (2, 5)
    cb.step_offset, cb.steps_after = 2, 0  # phase 2: a new trainer counting from 0
    state = TrainerState(max_steps=3)
    cb.on_train_begin(args, state, control)
    state.global_step = 1
    cb.on_step_end(args, state, control)
    cb.on_log(args, state, control, logs={"loss": 0.69, "rewards/margins": 0.1, "num_tokens": 100.0})
    with connect(tiny_settings.db_path) as db:
        run = runs.get_run(db, run_id)
        losses = [(m["step"], m["value"]) for m in runs.run_metrics(db, run_id, "loss")]
        assert runs.run_metrics(db, run_id, "num_tokens") == []
        assert [m["step"] for m in runs.run_metrics(db, run_id, "rewards/margins")] == [3]
        assert (run["step"], run["total_steps"]) == (3, 5)
        assert control.should_training_stop is False
        runs.request_cancel(db, run_id)
    assert losses == [(2, 1.5), (3, 0.69)]
    state.global_step = 2
    cb.on_step_end(args, state, control)
    assert cb.cancelled and control.should_training_stop
    cb.close()


# --- real runs on the tiny model ---
def _execute(settings, cfg) -> tuple[int, str]:
    from training.worker import execute

    run_id = queue.submit(settings, cfg, start=False)
    return run_id, execute(settings, run_id)


def _lora_tensors(path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "adapter_model.safetensors"))


def _check_published(settings, run_id, *, method, parent, version_id, tiny_model) -> dict:
    """The run's adapter: registered with its lineage, a plain servable LoRA dir, weights moved from the parent's."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    with connect(settings.db_path) as db:
        run = runs.get_run(db, run_id)
        adapter = get_adapter(db, run["adapter_id"])
    assert run["status"] == "completed" and run["method"] == method
    assert adapter["meta"]["method"] == method and adapter["meta"]["config"]["method"] == method
    assert adapter["parent_id"] == parent["id"] and adapter["family"] == "support" and adapter["name"] == "support-v2"
    assert adapter["dataset_version_id"] == version_id
    path = Path(adapter["path"])
    cfg = json.loads((path / "adapter_config.json").read_text())
    assert not cfg.get("modules_to_save") and cfg["r"] == 8 and cfg["base_model_name_or_path"] == str(tiny_model)
    assert not (path / "ref").exists() and sorted(p.name for p in path.iterdir() if p.is_dir()) == []
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model)), str(path))
    assert list(loaded.peft_config) == ["default"]
    new, old = _lora_tensors(path), _lora_tensors(parent["path"])
    assert new.keys() == old.keys()
    assert any(not (new[k] == old[k]).all() for k in new), "the adapter did not move from its parent"
    assert json.loads((Path(run["run_dir"]) / "config.json").read_text())["method"] == method
    return run


def _steps(settings, run_id, name) -> list[int]:
    with connect(settings.db_path) as db:
        return [m["step"] for m in runs.run_metrics(db, run_id, name)]


@pytest.mark.slow
@pytest.mark.parametrize("method, rows, trained, reward", [
    ("kto", dict(kto=(5, 4)), 9, "kl"),  # 9 rows + 3 repeated: 3 full micro-batches of 4
    ("dpo", dict(dpo=8), 8, "rewards/accuracies"),
])
def test_a_preference_round_trains_on_top_of_the_parent_adapter(tiny_settings, tiny_model, parent, method, rows,
                                                                 trained, reward):
    ref = add_feedback(tiny_settings, method=method, weights=(1.0, 1.1), **rows)
    cfg = planning.plan_run(tiny_settings, dataset="feedback", preset="quick", pref_max_steps=3, pref_learning_rate=1e-3)
    assert (cfg.method, cfg.from_adapter) == (method, "support-v1")
    run_id, status = _execute(tiny_settings, cfg)
    assert status == "completed"
    run = _check_published(tiny_settings, run_id, method=method, parent=parent, version_id=ref.id,
                           tiny_model=tiny_model)
    assert (run["step"], run["total_steps"]) == (3, 3)
    assert _steps(tiny_settings, run_id, "loss") == [1, 2, 3]
    assert _steps(tiny_settings, run_id, reward) == [1, 2, 3]
    assert run["metrics"]["steps"] == 3 and run["metrics"]["data"]["trained"] == trained
    assert run["metrics"]["data"].get("repeated", 0) == (3 if method == "kto" else 0)
    assert run["metrics"]["tokens_per_second"] > 0


@pytest.mark.slow
def test_sft_then_dpo_is_one_run_with_continuous_steps_and_one_adapter(tiny_settings, tiny_model, parent, caplog):
    ref = add_feedback(tiny_settings, method="sft+dpo", sft=4, dpo=8)
    cfg = planning.plan_run(tiny_settings, dataset="feedback", preset="quick", max_steps=2, pref_max_steps=2,
                          pref_learning_rate=1e-3)
    with caplog.at_level(logging.INFO, logger="tuneloop.train"):
        run_id, status = _execute(tiny_settings, cfg)
    assert status == "completed"
    run = _check_published(tiny_settings, run_id, method="sft+dpo", parent=parent, version_id=ref.id,
                           tiny_model=tiny_model)
    assert (run["step"], run["total_steps"]) == (4, 4)
    assert _steps(tiny_settings, run_id, "loss") == [1, 2, 3, 4]
    assert _steps(tiny_settings, run_id, "rewards/margins") == [3, 4]  # DPO's, in the second phase only
    with connect(tiny_settings.db_path) as db:
        eta = {m["step"]: m["value"] for m in runs.run_metrics(db, run_id, "eta_seconds")}
    assert eta[2] > 0 and eta[4] == 0  # the SFT phase's last step still had the DPO steps ahead
    phases = run["metrics"]["phases"]
    assert [(p["method"], p["steps"]) for p in phases] == [("sft", 2), ("dpo", 2)]
    assert run["metrics"]["final_loss"] == phases[1]["final_loss"]
    text = caplog.text
    assert "phase 1/2: sft, 2 optimizer steps" in text and "phase 2/2: dpo" in text and "run steps 3-4" in text


@pytest.mark.slow
def test_a_cancel_in_the_preference_phase_stops_it_at_a_step(tiny_settings, tiny_model, parent):
    """The cancel check runs in both phases: here it fires at run step 3, the DPO phase's first."""
    from training.callbacks import StoreProgressCallback
    from training.worker import train_phases

    add_feedback(tiny_settings, method="sft+dpo", sft=4, dpo=8)
    cfg = planning.plan_run(tiny_settings, dataset="feedback", preset="quick", max_steps=2, pref_max_steps=4)
    run_id = queue.submit(tiny_settings, cfg, start=False)
    with connect(tiny_settings.db_path) as db:
        runs.claim_next_queued(db)
        conversations = [{"messages": c.messages} for c in sft_rows(4)]

    def at_step_3():
        with connect(tiny_settings.db_path) as db:
            return runs.get_run(db, run_id)["step"] >= 3

    cb = StoreProgressCallback(tiny_settings.db_path, run_id, check_cancel=at_step_3)
    model, result = train_phases(cfg, conversations, dpo_rows(8), run_dir=tiny_settings.runs_dir / "x", callback=cb,
                                 parent_adapter_path=parent["path"])
    cb.close()
    assert cb.cancelled and result.stopped_early
    assert (result.steps, result.total_steps) == (3, 6)
    assert [(p.method, p.steps, p.stopped_early) for p in result.phases] == [
        ("sft", 2, False), ("dpo", 1, True)]
    assert set(model.peft_config) == {"default"}
