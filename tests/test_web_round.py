"""The Feedback tab's next-round panel and the Adapters tab's lineage, on the real store with a fake trainer.

    .venv/bin/python -m pytest tests/test_web_round.py -q
"""

from __future__ import annotations

import gradio as gr
import pytest

from store import chats, ratings
from store.adapters import register_adapter
from store.db import connect
from store.feedback import last_build
from ui.web.tabs import adapters as tab_adapters
from ui.web.tabs import round as tab_round
from ui.web.context import AppContext
from ui_fakes import FakeServer, FakeTrainer, app_settings

BASE = "smollm2-135m-instruct"


@pytest.fixture
def ctx(data_dir, tmp_path, monkeypatch):
    settings = app_settings(tmp_path, monkeypatch)
    with connect(settings.db_path) as db:
        register_adapter(db, name="support-v1", family="support", version=1, base_model=settings.base_model_path,
                         path=str(tmp_path / "a1"), rank=8, run_id=None, dataset_version_id=None, parent_id=None)
    return AppContext(settings=settings, server=FakeServer(settings), trainer=FakeTrainer())


def rate(ctx, n_up: int, n_down: int, user: str = "maria") -> None:
    with connect(ctx.settings.db_path) as db:
        for i in range(n_up + n_down):
            ex = chats.record_exchange(db, session_id=None, user=user, parent_id=None, question=f"Question {i}?",
                                       answer=f"Answer {i}.", model="support-v1", settings={})
            ratings.rate_message(db, kind="thumb", message_id=ex.answer_id, value="up" if i < n_up else "down",
                                 user=user)


def test_the_adapter_picker_offers_the_newest_adapter_first_then_the_base_model(ctx, tmp_path):
    with connect(ctx.settings.db_path) as db:
        register_adapter(db, name="support-v2", family="support", version=2, base_model=ctx.settings.base_model_path,
                         path=str(tmp_path / "a2"), rank=8, run_id=None, dataset_version_id=None, parent_id=1)
    choices, default = tab_round.start_choices(ctx)
    assert default == "support-v2"
    assert [v for _, v in choices] == ["support-v2", "support-v1", tab_round.BASE_CHOICE]


def test_preview_writes_nothing_then_build_writes_the_version_and_train_starts_the_round(ctx):
    rate(ctx, 4, 4)
    text, left_out, ref, button = tab_round.build(ctx, "auto", "last", 0.2, "support-v1", "lead", dry_run=True)
    assert ref is None and button["interactive"] is False
    assert "Preview" in text and "SFT+KTO" in text and "4 answers to learn" in text and "4 good, 4 bad" in text
    with connect(ctx.settings.db_path) as db:
        assert last_build(db) is None

    text, left_out, ref, button = tab_round.build(ctx, "auto", "last", 0.2, "support-v1", "lead", dry_run=False)
    assert ref == "feedback@1" and button["interactive"] is True
    assert "Built feedback@1" in text and "continuing from **support-v1**" in text and "maria 8" in text
    with connect(ctx.settings.db_path) as db:
        assert last_build(db)["user"] == "lead"

    message = tab_round.train(ctx, ref)
    assert ctx.trainer.started == [{"dataset": "feedback@1"}]  # method and parent adapter come from the build
    assert "Run **1**" in message and "Train" in message


def test_too_few_ratings_are_refused_on_the_page_with_what_is_needed(ctx):
    rate(ctx, 1, 0)
    text, left_out, ref, button = tab_round.build(ctx, "dpo", "last", 0.2, "support-v1", "lead", dry_run=False)
    assert ref is None and button["interactive"] is False
    assert text.startswith("⚠️ **Not built: not enough ratings yet.**") and "8" in text  # DPO needs 8 pairs
    assert "each A/B vote with a winner gives one pair" in text  # how DPO pairs are counted
    with connect(ctx.settings.db_path) as db:
        assert last_build(db) is None


def test_an_automatic_preview_says_which_method_is_closest_and_what_each_needs(ctx):
    rate(ctx, 3, 1)
    text, left_out, ref, _ = tab_round.build(ctx, "auto", "last", 0.2, "support-v1", "lead", dry_run=True)
    assert ref is None and text.startswith("**Preview: not enough ratings yet.**") and "Nothing was built" not in text
    assert "closest: **" in text and "**SFT** needs" in text and "**KTO** needs" in text and "**DPO** needs" in text
    assert "3 thumbs-down" in text  # KTO: 4 of each, 1 given
    assert not any("not_used_by_method" in str(v) for v in left_out.to_numpy().ravel())


def test_a_second_build_without_new_ratings_says_so(ctx):
    rate(ctx, 4, 4)
    tab_round.build(ctx, "auto", "last", 0.2, "support-v1", "lead", dry_run=False)
    text, _, ref, _ = tab_round.build(ctx, "auto", "last", 0.2, "support-v1", "lead", dry_run=False)
    assert ref is None and "no ratings since feedback@1" in text
    text, _, ref, _ = tab_round.build(ctx, "auto", "all", 0.2, "support-v1", "lead", dry_run=True)
    assert "Preview" in text  # "all ratings" reads them again


def test_train_without_a_build_and_an_unknown_adapter_are_clear_errors(ctx):
    with pytest.raises(gr.Error, match="Build the feedback dataset first"):
        tab_round.train(ctx, None)
    rate(ctx, 4, 4)
    with pytest.raises(gr.Error, match="support-v9"):
        tab_round.build(ctx, "auto", "last", 0.2, "support-v9", "lead", dry_run=True)


def test_the_adapters_tab_shows_the_lineage_of_the_picked_adapter(ctx):
    text = tab_adapters.lineage(ctx, "support-v1")
    assert text.startswith("support-v1: 1 round") and f"A/B vs {BASE} (base model)" in text
    assert tab_adapters.lineage(ctx, None) == ""
    assert "not in the registry" in tab_adapters.lineage(ctx, "ghost-v1")


def test_picking_a_feedback_version_in_the_train_tab_brings_its_method_and_adapter(ctx):
    from ui.web.tabs import train as tab_train

    rate(ctx, 4, 4)
    tab_round.build(ctx, "auto", "last", 0.2, "support-v1", "lead", dry_run=False)
    build = tab_train.feedback_build(ctx, "feedback@1")
    assert (build["method"], build["from_adapter"]) == ("sft+kto", "support-v1")
    assert tab_train.feedback_build(ctx, "feedback@9") is None and tab_train.feedback_build(ctx, None) is None
