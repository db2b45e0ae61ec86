"""The CLI and the web app turn the same choices into the same RunConfig (one rule, in training.config).

Regression: the web app used to set LoRA alpha to 2 x rank while the CLI kept the preset's alpha,
so `tuneloop train --preset standard --rank 8` trained with alpha 32 and the same pick in the
browser with alpha 16.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from training.config import RunConfig
from ui.web.tabs.train import preset_values, run_options


@pytest.mark.parametrize("preset, rank", [("standard", 8), ("quick", 16), ("thorough", 8), ("standard", 16)])
def test_a_rank_without_alpha_keeps_the_presets_alpha_to_rank_ratio(preset, rank):
    cfg = RunConfig.from_preset(preset, lora_rank=rank)
    base = RunConfig.from_preset(preset)
    assert cfg.lora_alpha / cfg.lora_rank == base.lora_alpha / base.lora_rank


def test_an_explicit_alpha_wins():
    assert RunConfig.from_preset("standard", lora_rank=8, lora_alpha=8.0).lora_alpha == 8.0


def _web_options(preset: str, rank: int) -> dict:
    v = preset_values(preset)
    return run_options("support@1", None, preset, v["epochs"], v["max_steps"], v["learning_rate"], rank,
                       v["batch_size"], v["grad_accum"], v["max_seq_len"], v["eval_fraction"], "", "sft",
                       base_value="/models/base")


@pytest.mark.parametrize("preset, rank", [("standard", 8), ("quick", 16), ("thorough", 16)])
def test_cli_and_web_make_the_same_run_config(monkeypatch, preset, rank):
    seen = {}

    def fake_start_run(settings, **options):
        seen["cli"] = options
        raise SystemExit(0)

    import training.queue

    monkeypatch.setattr(training.queue, "start_run", fake_start_run)
    from ui.cli import app

    CliRunner().invoke(app, ["train", "--dataset", "support@1", "--preset", preset, "--rank", str(rank)])
    cli = RunConfig.from_preset(seen["cli"].pop("preset"), **{k: v for k, v in seen["cli"].items()
                                                              if k not in ("dataset", "base_model", "from_adapter",
                                                                           "name", "method")})
    web_opts = _web_options(preset, rank)
    web = RunConfig.from_preset(web_opts.pop("preset"), **{k: v for k, v in web_opts.items()
                                                           if k not in ("dataset", "from_adapter", "name", "method")})
    assert (cli.lora_rank, cli.lora_alpha) == (web.lora_rank, web.lora_alpha) == (rank, 2.0 * rank)
    assert cli.to_dict() == web.to_dict()
