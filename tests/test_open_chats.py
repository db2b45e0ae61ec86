"""A user's open chat and comparison rebuilt from the store (what a page reload brings back)."""

from __future__ import annotations

from serving.ab_session import side_labels
from serving.open_chats import open_chat, open_comparison
from store import chats, ratings


def test_the_latest_chat_comes_back_with_its_thumbs_and_settings(db):
    settings = {"system_prompt": "Be brief.", "temperature": 0.3, "top_p": 1.0, "max_tokens": 99}
    one = chats.record_exchange(db, session_id=None, user="maria", parent_id=None, question="q1", answer="a1",
                                model="support-v1", settings=settings)
    two = chats.record_exchange(db, session_id=one.session_id, user="maria", parent_id=one.answer_id, question="q2",
                                answer="a2", model="support-v1", settings=settings)
    chats.record_exchange(db, session_id=None, user="tom", parent_id=None, question="x", answer="y", model="b",
                          settings={})
    ratings.rate_message(db, kind="thumb", message_id=one.answer_id, value="up", user="maria")
    opened = open_chat(db, "maria")
    assert [m["content"] for m in opened.messages] == ["q1", "a1", "q2", "a2"]
    assert opened.ids == [one.user_message_id, one.answer_id, two.user_message_id, two.answer_id]
    assert opened.thumbs == {one.answer_id: "up"} and opened.model == "support-v1"
    assert opened.settings["max_tokens"] == 99
    assert open_chat(db, "nobody") is None
    assert open_chat(db, "maria", session_id=opened.session_id + 1).session_id == opened.session_id  # not hers


def test_a_half_finished_blind_comparison_comes_back_unrevealed(db):
    turn = chats.record_ab_turn(db, session_id=None, user="maria", question="q", parent_a=None, answer_a="A1",
                                model_a="support-v1", parent_b=None, answer_b="B1", model_b="base", settings={},
                                blind=True)
    opened = open_comparison(db, "maria")
    st = opened.state
    assert opened.messages_a[-1]["content"] == "A1" and opened.messages_b[-1]["content"] == "B1"
    assert st["models"] == {"a": "support-v1", "b": "base"} and st["turns"] == [turn.ab_turn_id]
    assert st["blind"] and not st["revealed"] and side_labels(st) == ("A", "B") and st["votes"] == {}
    ratings.rate_turn(db, ab_turn_id=turn.ab_turn_id, value="a", user="maria")
    st = open_comparison(db, "maria").state
    assert st["revealed"] and st["votes"] == {str(turn.ab_turn_id): "a"}
