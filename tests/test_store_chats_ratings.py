"""Chat and rating storage on a real temporary SQLite database, including concurrent users.

Run: .venv/bin/python -m pytest tests/test_store_chats_ratings.py -q
"""

from __future__ import annotations

import json
import threading

import pytest

from store import chats, ratings
from store.db import open_db

SETTINGS = {"system_prompt": "Be brief.", "temperature": 0.7, "top_p": 1.0, "max_tokens": 64}


def two_turn_chat(db, user="maria", model="base"):
    ex1 = chats.record_exchange(db, session_id=None, user=user, parent_id=None, question="Where is my order?",
                                answer="It ships tomorrow.", model=model, settings=SETTINGS)
    ex2 = chats.record_exchange(db, session_id=ex1.session_id, user=user, parent_id=ex1.answer_id,
                                question="Can I change the address?", answer="Yes, until it ships.",
                                model=model, settings=SETTINGS)
    return ex1, ex2


def ab_turn(db, model_a="base", model_b="support-v1", question="Hi?"):
    return chats.record_ab_turn(db, session_id=None, user="maria", question=question, parent_a=None,
                                answer_a=f"{model_a} says hi", model_a=model_a, parent_b=None,
                                answer_b=f"{model_b} says hi", model_b=model_b, settings=SETTINGS, blind=True)


def test_conversation_until_follows_the_chain_with_the_system_prompt(db):
    ex1, ex2 = two_turn_chat(db)
    assert chats.conversation_until(db, ex2.answer_id) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Where is my order?"},
        {"role": "assistant", "content": "It ships tomorrow."},
        {"role": "user", "content": "Can I change the address?"},
        {"role": "assistant", "content": "Yes, until it ships."},
    ]
    assert db["chat_sessions"].count == 1 and db["chat_messages"].count == 4


def test_thumb_is_stored_with_context_models_settings_user_and_time(db):
    _, ex2 = two_turn_chat(db, model="support-v1")
    rid = ratings.rate_message(db, kind="thumb", message_id=ex2.answer_id, value="up", user="maria")
    row = db["ratings"].get(rid)
    assert (row["kind"], row["value"], row["user"], row["message_id"]) == ("thumb", "up", "maria", ex2.answer_id)
    context = json.loads(row["context"])
    assert context[0] == {"role": "system", "content": "Be brief."}
    assert context[-1] == {"role": "user", "content": "Can I change the address?"}
    assert json.loads(row["models"]) == {"model": "support-v1"}
    assert json.loads(row["settings"]) == SETTINGS
    assert row["created_at"] and row["updated_at"]


def test_rating_again_changes_the_rating_instead_of_adding_one(db):
    ex1, _ = two_turn_chat(db)
    first = ratings.rate_message(db, kind="thumb", message_id=ex1.answer_id, value="up", user="maria")
    again = ratings.rate_message(db, kind="thumb", message_id=ex1.answer_id, value="down", user="maria")
    assert first == again
    assert [(r["value"], r["user"]) for r in db["ratings"].rows] == [("down", "maria")]
    row = db["ratings"].get(first)
    assert row["updated_at"] >= row["created_at"]


def test_two_users_keep_two_ratings_of_the_same_answer(db):
    ex1, _ = two_turn_chat(db)
    ratings.rate_message(db, kind="thumb", message_id=ex1.answer_id, value="up", user="maria")
    ratings.rate_message(db, kind="thumb", message_id=ex1.answer_id, value="down", user="guest-1a2b")
    assert sorted((r["user"], r["value"]) for r in db["ratings"].rows) == [("guest-1a2b", "down"), ("maria", "up")]


def test_a_thumb_can_be_taken_back(db):
    ex1, _ = two_turn_chat(db)
    ratings.rate_message(db, kind="thumb", message_id=ex1.answer_id, value="up", user="maria")
    assert ratings.clear_rating(db, kind="thumb", message_id=ex1.answer_id, user="maria") is True
    assert ratings.clear_rating(db, kind="thumb", message_id=ex1.answer_id, user="maria") is False
    assert db["ratings"].count == 0


def test_thumb_and_correction_on_one_answer_are_separate_ratings(db):
    ex1, _ = two_turn_chat(db)
    ratings.rate_message(db, kind="thumb", message_id=ex1.answer_id, value="down", user="maria")
    ratings.rate_message(db, kind="correction", message_id=ex1.answer_id, value="It ships on Monday.", user="maria")
    ratings.rate_message(db, kind="correction", message_id=ex1.answer_id, value="It ships Monday, 9am.", user="maria")
    assert sorted((r["kind"], r["value"]) for r in db["ratings"].rows) == [
        ("correction", "It ships Monday, 9am."), ("thumb", "down")]


@pytest.mark.parametrize("kind, value, match", [
    ("thumb", "meh", "up' or 'down"), ("correction", "  ", "empty"), ("stars", "5", "unknown rating kind")])
def test_invalid_ratings_are_refused_and_nothing_is_written(db, kind, value, match):
    ex1, _ = two_turn_chat(db)
    with pytest.raises(ratings.InvalidRating, match=match):
        ratings.rate_message(db, kind=kind, message_id=ex1.answer_id, value=value, user="maria")
    assert db["ratings"].count == 0


def test_only_answers_can_be_rated(db):
    ex1, _ = two_turn_chat(db)
    with pytest.raises(ratings.InvalidRating, match="only the model's answers"):
        ratings.rate_message(db, kind="thumb", message_id=ex1.user_message_id, value="up", user="maria")


def test_verdict_stores_both_models_and_is_changeable(db):
    turn = ab_turn(db)
    rid = ratings.rate_turn(db, ab_turn_id=turn.ab_turn_id, value="b", user="maria")
    assert ratings.rate_turn(db, ab_turn_id=turn.ab_turn_id, value="tie", user="maria") == rid
    row = db["ratings"].get(rid)
    assert row["value"] == "tie" and row["ab_turn_id"] == turn.ab_turn_id and row["message_id"] is None
    assert json.loads(row["models"]) == {"a": "base", "b": "support-v1", "blind": True}
    assert json.loads(row["context"]) == [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "Hi?"}]
    with pytest.raises(ratings.InvalidRating):
        ratings.rate_turn(db, ab_turn_id=turn.ab_turn_id, value="c", user="maria")


def test_each_ab_side_keeps_its_own_chain(db):
    t1 = ab_turn(db)
    t2 = chats.record_ab_turn(db, session_id=t1.session_id, user="maria", question="And then?",
                              parent_a=t1.side_a.answer_id, answer_a="A2", model_a="base",
                              parent_b=t1.side_b.answer_id, answer_b="B2", model_b="support-v1",
                              settings=SETTINGS, blind=False)
    a = [m["content"] for m in chats.conversation_until(db, t2.side_a.answer_id)]
    b = [m["content"] for m in chats.conversation_until(db, t2.side_b.answer_id)]
    assert a == ["Be brief.", "Hi?", "base says hi", "And then?", "A2"]
    assert b == ["Be brief.", "Hi?", "support-v1 says hi", "And then?", "B2"]


def test_counts_per_model_and_ab_records_against_the_base(db):
    _, ex2 = two_turn_chat(db, model="support-v1")
    ratings.rate_message(db, kind="thumb", message_id=ex2.answer_id, value="up", user="maria")
    ratings.rate_message(db, kind="thumb", message_id=ex2.answer_id, value="down", user="tom")
    ratings.rate_message(db, kind="correction", message_id=ex2.answer_id, value="Better.", user="tom")
    # The adapter is on side B here and on side A in the second turn: sides must not matter.
    ratings.rate_turn(db, ab_turn_id=ab_turn(db).ab_turn_id, value="b", user="maria")
    ratings.rate_turn(db, ab_turn_id=ab_turn(db, "support-v1", "base").ab_turn_id, value="b", user="maria")
    ratings.rate_turn(db, ab_turn_id=ab_turn(db, "support-v1", "base").ab_turn_id, value="a", user="maria")
    ratings.rate_turn(db, ab_turn_id=ab_turn(db).ab_turn_id, value="tie", user="maria")
    ratings.rate_turn(db, ab_turn_id=ab_turn(db).ab_turn_id, value="both_bad", user="maria")
    # Adapter against adapter: not a vote against the base.
    ratings.rate_turn(db, ab_turn_id=ab_turn(db, "support-v1", "support-v2").ab_turn_id, value="a", user="maria")
    assert ratings.ab_records(db, "base") == {"support-v1": {"wins": 2, "losses": 1, "ties": 1, "both_bad": 1}}
    counts = {c["model"]: c for c in ratings.counts_per_model(db)}
    assert (counts["support-v1"]["thumbs_up"], counts["support-v1"]["thumbs_down"],
            counts["support-v1"]["corrections"]) == (1, 1, 1)
    assert counts["support-v1"]["ab_wins"] == 3 and counts["base"]["ab_wins"] == 1
    assert counts["support-v2"]["ab_losses"] == 1


def test_a_failed_exchange_leaves_nothing_half_written(db):
    with pytest.raises(Exception):
        chats.record_exchange(db, session_id=None, user="maria", parent_id=None, question="Hi",
                              answer=object(), model="base", settings=SETTINGS)  # not storable
    assert db["chat_sessions"].count == 0 and db["chat_messages"].count == 0


def test_two_users_rating_at_the_same_time_lose_nothing(data_dir):
    path = data_dir / "tuneloop.db"
    setup = open_db(path)
    answers = [two_turn_chat(setup)[1].answer_id for _ in range(10)]
    turns = [ab_turn(setup).ab_turn_id for _ in range(10)]
    setup.close()
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def rate(user: str, value: str) -> None:
        db = open_db(path)  # one connection per thread, as the app's handlers do
        try:
            barrier.wait()
            for _ in range(3):  # rate, change, change again
                for mid in answers:
                    ratings.rate_message(db, kind="thumb", message_id=mid, value=value, user=user)
                for tid in turns:
                    ratings.rate_turn(db, ab_turn_id=tid, value="a" if value == "up" else "b", user=user)
                chats.record_exchange(db, session_id=None, user=user, parent_id=None, question="q",
                                      answer="a", model="base", settings={})
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            db.close()

    threads = [threading.Thread(target=rate, args=("maria", "up")), threading.Thread(target=rate, args=("tom", "down"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    db = open_db(path)
    rows = list(db["ratings"].rows)
    assert len(rows) == 2 * (len(answers) + len(turns))
    assert {(r["user"], r["value"]) for r in rows if r["kind"] == "thumb"} == {("maria", "up"), ("tom", "down")}
    assert ratings.ab_records(db, "base")["support-v1"] == {"wins": 10, "losses": 10, "ties": 0, "both_bad": 0}
    db.close()
