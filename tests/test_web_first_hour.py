"""What a new user met in the Train and Adapters tabs (issue 14), in-process: words that promise nothing the run
does not keep, the automatic adapter name shown before Start, one name per loss and per speed."""

from __future__ import annotations

import pytest

from store.adapters import register_adapter
from store.db import connect
from training.results import RunMetrics
from ui.text import loss_bits

from ui.web.tabs import adapters as tab_adapters
from ui.web.tabs import train as tab_train
from ui_fakes import scripted_ctx


@pytest.fixture
def ctx(data_dir, tmp_path, monkeypatch):
    return scripted_ctx(tmp_path, monkeypatch)


def test_the_name_placeholder_is_the_name_the_run_will_get(ctx, tmp_path):
    base = ctx.settings.base_model_path
    assert tab_train.automatic_name_for(ctx, None, base) == "automatic"
    assert tab_train.automatic_name_for(ctx, "Customer Care@2", base) == "customer-care-v1"  # no adapters yet
    with connect(ctx.settings.db_path) as db:
        register_adapter(db, name="customer-care-v1", family="customer-care", version=1, base_model=base,
                         path=str(tmp_path / "a"), rank=8, run_id=None, dataset_version_id=None, parent_id=None)
        register_adapter(db, name="faq-v4", family="faq", version=4, base_model=base, path=str(tmp_path / "b"),
                         rank=8, run_id=None, dataset_version_id=None, parent_id=None)
    assert tab_train.automatic_name_for(ctx, "customer-care@3", base) == "customer-care-v2"
    assert tab_train.automatic_name_for(ctx, "customer-care@3", "faq-v4") == "faq-v5"  # continuing joins its family


def test_the_preset_words_promise_no_duration():
    assert "minute" not in tab_train.PRESET_INFO and "estimate" in tab_train.PRESET_INFO


def test_each_loss_and_the_speed_have_one_name_everywhere():
    m = RunMetrics(steps=30, total_steps=30, train_loss=1.5, final_loss=1.2, eval_loss=1.4, eval_loss_start=2.0,
                   tokens=6000, train_runtime_s=100.0, tokens_per_second=60.0)
    assert loss_bits(m) == ["last-step loss 1.2000", "mean training loss 1.5000", "held-out loss 2.0000 -> 1.4000",
                            "60 trained tokens/s"]
    assert tab_adapters.results_text(m).startswith("mean training loss 1.500, held-out loss 1.400, "
                                                   "60 trained tokens/s")
    assert "Mean training loss" in tab_train.RUN_COLUMNS and "Train loss" not in tab_train.RUN_COLUMNS


def test_an_adapters_generation_defaults_are_set_from_the_adapters_tab(ctx, tmp_path):
    import gradio as gr

    note = tab_adapters.save_generation(ctx, "support-v1", 0.3, 128, "Be brief.", "maria")
    assert "temperature 0.3, up to 128 tokens, with its system prompt" in note
    assert tab_adapters.generation_fields(ctx, "support-v1") == (0.3, 128, "Be brief.")
    with pytest.raises(gr.Error, match="Temperature must be between 0 and 2"):
        tab_adapters.save_generation(ctx, "support-v1", 5, 128, "")


def test_the_latest_ratings_show_the_question_asked(ctx):
    from store import chats, ratings
    from ui.web.tabs import feedback as tab_feedback

    with connect(ctx.settings.db_path) as db:
        ex = chats.record_exchange(db, session_id=None, user="maria", parent_id=None, question="Where is my order?",
                                   answer="It ships Friday.", model="support-v1", settings={})
        ratings.rate_message(db, kind="thumb", message_id=ex.answer_id, value="up", user="maria")
    recent = tab_feedback.refresh(ctx)[3]
    assert recent.iloc[0]["Question"] == "Where is my order?" and recent.iloc[0]["Answer rated"] == "It ships Friday."
