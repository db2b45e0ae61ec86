"""Run config: presets, JSON round trip, and refusals that name the field and say why.

Run: .venv/bin/python -m pytest tests/test_training_config.py -q
"""

from __future__ import annotations

import json

import pytest

from training.config import PRESETS, ConfigError, RunConfig, held_out_count


def test_presets_are_valid_and_round_trip_through_json():
    for name in PRESETS:
        cfg = RunConfig.from_preset(name, max_lora_rank=16, dataset="d@1", base_model="/m")
        assert cfg.preset == name
        assert cfg.lora_rank <= 16
        again = RunConfig.from_dict(json.loads(cfg.to_json()))
        assert again == cfg


def test_thorough_rank_is_capped_at_the_server_limit_keeping_alpha_ratio():
    cfg = RunConfig.from_preset("thorough", max_lora_rank=16)
    assert (cfg.lora_rank, cfg.lora_alpha) == (16, 32.0)
    assert RunConfig.from_preset("thorough", max_lora_rank=64).lora_rank == 32
    # An explicit rank is never changed silently (the context check refuses it instead).
    assert RunConfig.from_preset("thorough", max_lora_rank=16, lora_rank=32).lora_rank == 32


def test_overrides_win_and_none_means_preset_value():
    cfg = RunConfig.from_preset("quick", lora_rank=16, learning_rate=None, max_steps=5)
    assert cfg.lora_rank == 16 and cfg.learning_rate == PRESETS["quick"]["learning_rate"]
    assert cfg.max_steps == 5 and cfg.epochs is None


@pytest.mark.parametrize("kwargs, field, why", [
    ({"lora_rank": 12}, "lora_rank", "allowed ranks"),
    ({"lora_alpha": 0}, "lora_alpha", "> 0"),
    ({"lora_dropout": 1.0}, "lora_dropout", "[0, 1)"),
    ({"eval_fraction": 0.5}, "eval_fraction", "[0, 0.5)"),
    ({"eval_fraction": -0.1}, "eval_fraction", "[0, 0.5)"),
    ({"epochs": None, "max_steps": None}, "epochs", "both are unset"),
    ({"max_steps": 0}, "max_steps", ">= 1"),
    ({"learning_rate": 0}, "learning_rate", "positive"),
    ({"batch_size": 0}, "batch_size", ">= 1"),
    ({"max_seq_len": 8}, "max_seq_len", "at least"),
    ({"method": "ppo"}, "method", "one of"),
    ({"method": "kto", "batch_size": 2}, "batch_size", "KTO needs at least 4"),
    ({"target_modules": ["q_proj", "lm_head"]}, "target_modules", "cannot serve"),
    ({"target_modules": "everything"}, "target_modules", "all-linear"),
    ({"lr_schedule": "exotic"}, "lr_schedule", "one of"),
])
def test_invalid_values_are_refused_naming_the_field(kwargs, field, why):
    with pytest.raises(ConfigError) as err:
        RunConfig(**kwargs)
    assert err.value.field == field
    assert why in str(err.value) and str(err.value).startswith(f"{field}:")


def test_unknown_fields_and_presets_are_refused():
    with pytest.raises(ConfigError, match="^rnak: unknown config field"):
        RunConfig.from_dict({"rnak": 8})
    with pytest.raises(ConfigError, match="^preset: unknown preset 'fast'"):
        RunConfig.from_preset("fast")


def test_context_checks():
    cfg = RunConfig(lora_rank=32, max_seq_len=4096, eval_fraction=0.1)
    with pytest.raises(ConfigError, match="^lora_rank: 32 is above the server's max_lora_rank 16"):
        cfg.check_context(max_lora_rank=16, model_max_len=8192, conversations=100)
    with pytest.raises(ConfigError, match="^max_seq_len: 4096 is above the base model's limit of 2048"):
        cfg.check_context(max_lora_rank=64, model_max_len=2048, conversations=100)
    with pytest.raises(ConfigError, match="^dataset: .*no conversations"):
        cfg.check_context(max_lora_rank=64, model_max_len=None, conversations=0)
    with pytest.raises(ConfigError, match="^eval_fraction: .* needs at least 5 conversations"):
        cfg.check_context(max_lora_rank=64, model_max_len=None, conversations=4)
    cfg.check_context(max_lora_rank=64, model_max_len=None, conversations=5)
    RunConfig(eval_fraction=0).check_context(max_lora_rank=16, model_max_len=None, conversations=1)


def test_held_out_count():
    assert held_out_count(10, 0.1) == 1
    assert held_out_count(200, 0.1) == 20
    assert held_out_count(4, 0.1) == 0
    assert held_out_count(10, 0) == 0
    assert held_out_count(2, 0.49) == 1
