"""The Train tab's new-run form beyond the basics: the pre-run estimate, LoRA alpha/dropout/target modules, the
base model picker, seconds per step and Resume (handlers called directly, with the fake trainer).

Run: .venv/bin/python -m pytest tests/test_web_train_plan.py -q
"""

from __future__ import annotations

import gradio as gr
import pytest

from store import runs as run_store
from store.db import connect

from ui.web.tabs import train as tab_train
from ui_fakes import scripted_ctx


@pytest.fixture
def ctx(data_dir, tmp_path, monkeypatch):
    return scripted_ctx(tmp_path, monkeypatch)


def _fields(ctx, dataset="support@1", preset="quick", **over):
    v = {**tab_train.preset_values(preset), **over}
    return (dataset, ctx.settings.base_model_path, preset, v["epochs"], v["max_steps"], v["learning_rate"],
            v["lora_rank"], v["batch_size"], v["grad_accum"], v["max_seq_len"], v["eval_fraction"], "", "sft",
            over.get("base", ctx.settings.base_model_path), over.get("lora_alpha", v["lora_alpha"]),
            v["lora_dropout"], v["target_modules"])


def test_form_options_carry_alpha_dropout_targets_and_base(ctx):
    opts = tab_train.run_options(*_fields(ctx, lora_alpha=24.0, lora_dropout=0.1, target_modules="q_proj, v_proj",
                                          base="qwen-small"), base_value=ctx.settings.base_model_path)
    assert (opts["lora_alpha"], opts["lora_dropout"], opts["target_modules"]) == (24.0, 0.1, ["q_proj", "v_proj"])
    assert opts["base_model"] == "qwen-small"
    default = tab_train.run_options(*_fields(ctx), base_value=ctx.settings.base_model_path)
    assert default["target_modules"] == "all-linear" and "base_model" not in default
    # Continuing an adapter keeps its rank, alpha, modules and base: none are sent.
    fields = list(_fields(ctx, lora_alpha=24.0, base="qwen-small"))
    fields[1] = "support-v1"
    cont = tab_train.run_options(*fields, base_value=ctx.settings.base_model_path)
    assert not {"lora_rank", "lora_alpha", "target_modules", "base_model"} & set(cont)
    assert tab_train.alpha_for("standard", 8) == 16.0 and tab_train.alpha_for("quick", 16) == 32.0


def test_estimate_says_steps_tokens_truncation_and_time_after_a_probe(ctx):
    text = tab_train.estimate_text(ctx, *_fields(ctx))
    assert "118 optimizer steps" in text and "7 conversations cut at the length limit" in text
    assert "Measure this machine's speed" in text  # no time yet
    timed = tab_train.estimate_text(ctx, *_fields(ctx), measure=True)
    assert "time on this machine: about" in timed and "s per step" in timed
    assert ctx.trainer.estimated[-1]["measure"] is True and ctx.trainer.estimated[-1]["preset"] == "quick"
    assert tab_train.estimate_text(ctx, *_fields(ctx, dataset=None)) == tab_train.ESTIMATE_EMPTY


def test_estimate_words_a_refusal_with_the_form_label(ctx):
    from training.config import ConfigError

    def refuse(**options):
        raise ConfigError("lora_alpha", "must be > 0, got -1")

    ctx.trainer.estimate = refuse
    assert "LoRA alpha: must be &gt; 0" in tab_train.estimate_text(ctx, *_fields(ctx))


def test_base_picker_lists_the_default_first_then_registered_models(ctx):
    with connect(ctx.settings.db_path) as db:
        from store.base_models import add_base_model

        add_base_model(db, name="qwen-small", path="/models/qwen", architecture="Qwen2ForCausalLM", max_len=4096,
                       check={})
    options = tab_train.base_options(ctx)
    assert options[0] == (f"{ctx.settings.served_base_name} (default, served here)", ctx.settings.base_model_path)
    assert options[1] == ("qwen-small (Qwen2ForCausalLM, not served by this server)", "qwen-small")
    with pytest.raises(gr.Error, match="Model folder: .* is not a directory"):
        tab_train.add_base(ctx, "/nowhere/model", None)


def test_failed_run_with_a_checkpoint_offers_resume_and_step_seconds_show(ctx):
    with connect(ctx.settings.db_path) as db:
        run_id = run_store.create_run(db, config={"dataset": "support@1", "preset": "quick"}, method="sft",
                                      dataset_version_id=None, base_model=ctx.settings.base_model_path,
                                      parent_adapter_id=None, runs_dir=ctx.settings.runs_dir)
        db["runs"].update(run_id, {"status": "running", "step": 8, "total_steps": 20})
        run_store.add_metrics(db, run_id, 8, {"tokens_per_second": 150.0, "step_seconds": 6.5}, split="progress")
    *_, resume = tab_train.poll(ctx, str(run_id), None)
    assert resume["visible"] is False
    stats = tab_train.poll(ctx, str(run_id), None)[2]
    assert "**6.5** s per step" in stats and "**150**" in stats  # beside tokens per second
    with connect(ctx.settings.db_path) as db:
        run_store.mark_failed(db, run_id, "process ended without finishing")
    ckpt = ctx.settings.runs_dir / str(run_id) / "trainer" / "checkpoint-6"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text("{}")
    summary, *_, resume = tab_train.poll(ctx, str(run_id), None)
    assert resume["visible"] is True and resume["value"] == "Resume from step 6"
    assert "resume from its checkpoint at step 6 of 20" in summary
    assert tab_train.resume(ctx, str(run_id)) == 6 and ctx.trainer.resumed == [run_id]


def test_a_model_folder_added_in_the_app_is_checked_then_offered(ctx, tmp_path):
    from training_support import make_tiny_model

    tiny = make_tiny_model(tmp_path / "Tiny-Llama-Chat")
    assert tab_train.add_base(ctx, str(tiny), "tiny-chat") == "tiny-chat"
    assert ("tiny-chat (LlamaForCausalLM, not served by this server)", "tiny-chat") in tab_train.base_options(ctx)
    with pytest.raises(gr.Error, match="Name: a base model named .*tiny-chat.* is registered already. "
                                      "Nothing was added"):
        tab_train.add_base(ctx, str(tiny), "tiny-chat")
    (tiny / "config.json").write_text('{"architectures": ["MysteryForCausalLM"]}')  # one vLLM does not serve
    with pytest.raises(gr.Error, match="Model folder: .*MysteryForCausalLM.* Nothing was added"):
        tab_train.add_base(ctx, str(tiny), "mystery")
    assert [v for _, v in tab_train.base_options(ctx)][1:] == ["tiny-chat"]
