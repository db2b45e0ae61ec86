"""Chat and Compare handlers against a scripted model server: history conversion, streaming,
storage once complete, thumbs, verdicts, blind mode, corrections and errors.

Run: .venv/bin/python -m pytest tests/test_web_chat.py -q
"""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import gradio as gr
import pytest

from store.adapters import register_adapter
from store.db import connect
from serving.ab_session import assign_sides, new_session
from ui.web.tabs import chat as tab_chat
from ui.web.tabs import compare as tab_compare
from ui.web.context import AppContext
from ui_fakes import FakeServer, app_settings

BASE = "smollm2-135m-instruct"


@pytest.fixture
def ctx(data_dir, tmp_path, monkeypatch):
    settings = app_settings(tmp_path, monkeypatch)
    server = FakeServer(settings, delay=0.005)
    with connect(settings.db_path) as db:
        register_adapter(db, name="support-v1", family="support", version=1, base_model=settings.base_model_path,
                         path=str(tmp_path / "a"), rank=8, run_id=None, dataset_version_id=None, parent_id=None)
    server.loaded.add("support-v1")
    return AppContext(settings=settings, server=server)


def req(user=None):
    return SimpleNamespace(username=user)


def shown(x):
    """A chatbot output as the messages it shows (handlers send gr.update(value=..., feedback_value=...))."""
    return x["value"] if isinstance(x, dict) and "value" in x else x


def run(gen):
    """All yields of a handler, chatbot updates as their messages; the last is what the browser ends up with."""
    return [tuple(shown(x) for x in out) for out in gen]


def send(ctx, message, history, state, model=BASE, system="", user="maria"):
    return run(tab_chat.chat_send(ctx, message, history, state, model, system, 0.7, 1.0, 64, "b1", req(user)))


def test_gradio_6_history_blocks_reach_the_model_as_openai_messages(ctx):
    history = [{"role": "user", "content": [{"type": "text", "text": "Hi"}], "metadata": None, "options": None},
               {"role": "assistant", "content": [{"type": "text", "text": "Hello! How can I help?"}],
                "metadata": None, "options": None}]
    send(ctx, "Where is my order?", history, None, system="Be brief.")
    model, messages, params = ctx.server.requests[-1]
    assert model == BASE
    assert messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                        {"role": "assistant", "content": "Hello! How can I help?"},
                        {"role": "user", "content": "Where is my order?"}]
    assert (params.temperature, params.max_tokens) == (0.7, 64)


def test_chat_streams_then_stores_the_exchange_and_a_thumb_rates_it(ctx):
    outs = send(ctx, "Where is my order?", [], None, model="support-v1")
    texts = [h[-1]["content"] for h, _, _ in outs[1:]]
    assert len(texts) > 2 and texts[-1] == "Answer from support-v1 to: Where is my order?"
    assert all(len(a) <= len(b) for a, b in zip(texts, texts[1:])) and len(set(texts)) > 2  # it grows
    history, box, state = outs[-1]
    assert box == "" and state["session_id"] and len(state["ids"]) == 2
    assert outs[-2][2].get("ids") == []  # not rateable before it is stored
    tab_chat.on_like(ctx, "ids", SimpleNamespace(index=1, liked=False), state, "b1", req("maria"))
    with connect(ctx.settings.db_path) as db:
        [row] = list(db["ratings"].rows)
        msg = db["chat_messages"].get(state["ids"][1])
    assert (row["kind"], row["value"], row["user"]) == ("thumb", "down", "maria")
    assert json.loads(row["models"]) == {"model": "support-v1"}
    assert msg["content"] == texts[-1] and msg["model"] == "support-v1"
    # Second turn continues the same session and chain.
    outs = send(ctx, "Thanks", history, state, model="support-v1")
    state2 = outs[-1][2]
    assert state2["session_id"] == state["session_id"] and len(state2["ids"]) == 4
    with connect(ctx.settings.db_path) as db:
        assert db["chat_messages"].get(state2["ids"][2])["parent_id"] == state["ids"][1]


def test_without_login_each_browser_rates_under_its_own_guest_name(ctx):
    state = send(ctx, "Hi", [], None)[-1][2]
    tab_chat.on_like(ctx, "ids", SimpleNamespace(index=1, liked=True), state, "browser-1", req(None))
    tab_chat.on_like(ctx, "ids", SimpleNamespace(index=1, liked=False), state, "browser-2", req(None))
    tab_chat.on_like(ctx, "ids", SimpleNamespace(index=1, liked=True), state, "browser-2", req(None))  # changed
    with connect(ctx.settings.db_path) as db:
        assert sorted((r["user"], r["value"]) for r in db["ratings"].rows) == [
            ("guest-browser-1", "up"), ("guest-browser-2", "up")]


def test_a_server_error_shows_a_message_gives_the_text_back_and_stores_nothing(ctx):
    ctx.server.up = False
    outs = send(ctx, "Hello?", [], None)
    history, box, state = outs[-1]
    assert history == [] and box == "Hello?" and state["ids"] == []
    with connect(ctx.settings.db_path) as db:
        assert db["chat_messages"].count == 0


def test_empty_message_is_refused(ctx):
    with pytest.raises(gr.Error, match="Type a message"):
        send(ctx, "  ", [], None)


def test_compare_streams_both_sides_and_the_vote_is_stored_with_both_models(ctx):
    ctx.server.delay = 0.06
    outs = run(tab_compare.ab_send(ctx, "Where is my order?", [], [], None, BASE, "support-v1", False, "Be brief.",
                                0.7, 1.0, 64, "b1", req("maria")))
    hist_a, hist_b, box, state, status = outs[-1]
    assert hist_a[-1]["content"] == f"Answer from {BASE} to: Where is my order?"
    assert hist_b[-1]["content"] == "Answer from support-v1 to: Where is my order?"
    # Both grew during the stream (not one after the other).
    middle = [o for o in outs[1:-1] if o[0][-1]["content"] and o[1][-1]["content"]]
    assert any(o[0][-1]["content"] != hist_a[-1]["content"] for o in middle)
    assert state["models"] == {"a": BASE, "b": "support-v1"} and len(state["turns"]) == 1
    # Same settings on both sides.
    (_, msgs_a, p_a), (_, msgs_b, p_b) = sorted(ctx.server.requests[-2:], key=lambda r: r[0] != BASE)
    assert msgs_a == msgs_b and msgs_a[0] == {"role": "system", "content": "Be brief."} and p_a == p_b
    label_a, label_b, state, note = tab_compare.ab_vote(ctx, "b", state, "b1", req("maria"))
    assert note.startswith("Saved: B is better")
    label_a, label_b, state, note = tab_compare.ab_vote(ctx, "tie", state, "b1", req("maria"))
    assert note.startswith("Vote changed: Tie")
    with connect(ctx.settings.db_path) as db:
        [row] = list(db["ratings"].rows)
        turn = db["ab_turns"].get(state["turns"][0])
    assert row["value"] == "tie" and row["user"] == "maria"
    assert json.loads(row["models"]) == {"a": BASE, "b": "support-v1", "blind": False}
    assert turn["blind"] == 0


def test_blind_mode_hides_names_until_the_vote_and_randomises_sides(ctx):
    sides = {tuple(assign_sides("x", "y", True, random.Random(seed)).values()) for seed in range(20)}
    assert sides == {("x", "y"), ("y", "x")}
    outs = list(tab_compare.ab_send(ctx, "Hi", [], [], None, BASE, "support-v1", True, "", 0.7, 1.0, 64, "b1", req()))
    first = outs[0]
    assert first[0]["label"] == "A" and first[1]["label"] == "B"
    state = outs[-1][3]
    assert set(state["models"].values()) == {BASE, "support-v1"}
    label_a, label_b, state, note = tab_compare.ab_vote(ctx, "a", state, "b1", req())
    assert label_a["label"] == f"A: {state['models']['a']}" and state["models"]["a"] in note
    with connect(ctx.settings.db_path) as db:
        assert db["ab_turns"].get(state["turns"][0])["blind"] == 1


def test_compare_with_a_side_failing_keeps_nothing_and_says_which(ctx):
    ctx.server.loaded.discard("support-v1")
    outs = run(tab_compare.ab_send(ctx, "Hi", [], [], None, BASE, "support-v1", False, "", 0.7, 1.0, 64, "b1", req()))
    hist_a, hist_b, box, state, status = outs[-1]
    assert hist_a == [] and hist_b == [] and box == "Hi" and state["turns"] == []
    with connect(ctx.settings.db_path) as db:
        assert db["ab_turns"].count == 0 and db["chat_messages"].count == 0


def test_vote_before_any_turn_or_while_answers_stream_is_refused(ctx):
    with pytest.raises(gr.Error, match="Ask both models"):
        tab_compare.ab_vote(ctx, "a", new_session(), "b1", req())
    outs = run(tab_compare.ab_send(ctx, "Hi", [], [], None, BASE, "support-v1", False, "", 0.7, 1.0, 64, "b1", req()))
    assert outs[1][3]["streaming"] is True and "streaming" not in outs[-1][3]
    with pytest.raises(gr.Error, match="Wait until both answers are complete"):
        tab_compare.ab_vote(ctx, "a", outs[1][3], "b1", req())


def test_correction_of_a_picked_answer_is_stored_and_replaced_on_resave(ctx):
    history, _, state = send(ctx, "Where is my order?", [], None)[-1]
    [(label, mid)] = tab_chat.correction_choices(history, state["ids"])
    assert label.startswith("answer 1:")
    tab_chat.save_correction(ctx, mid, "It ships Monday.", "b1", req("maria"))
    tab_chat.save_correction(ctx, mid, "It ships Monday at 9.", "b1", req("maria"))
    with connect(ctx.settings.db_path) as db:
        assert [(r["kind"], r["value"]) for r in db["ratings"].rows] == [("correction", "It ships Monday at 9.")]
    with pytest.raises(gr.Error, match="Type the answer"):
        tab_chat.save_correction(ctx, mid, "", "b1", req("maria"))


def test_model_options_default_to_base_and_newest_loaded_adapter(ctx):
    choices, base, newest, note = tab_chat.model_options(ctx)
    assert base == BASE and newest == "support-v1" and note == ""
    assert [v for _, v in choices] == [BASE, "support-v1"]
    ctx.server.up = False
    assert "starting or down" in tab_chat.model_options(ctx)[3]
