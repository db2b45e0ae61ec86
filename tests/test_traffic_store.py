"""Captured traffic in the store (store/traffic.py): batches, filters, counts, rating as chat, lineage, retention."""

from __future__ import annotations

import pytest

from store.db import connect
from store.ratings import rate_message
from store.traffic import (CaptureFilter, CompletionNotFound, as_chat_message, completions_for_ratings,
                           count_captures, find_captures, get_capture, prune, record_feedback, save_captures,
                           waiting_counts)


def row(cid: str, *, at="2026-03-01T10:00:00.000+00:00", question="where is my order?", answer="On its way.",
        deployment="support", adapter="support-v1", status="complete", **kw) -> dict:
    return {"id": cid, "created_at": at, "model": deployment or adapter, "deployment": deployment,
            "adapter": adapter, "arm": "main" if deployment else None,
            "messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hi"},
                         {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": question}],
            "params": {"temperature": 0}, "answer": answer, "status": status, "api_key": "default", **kw}


@pytest.fixture
def db(tmp_path):
    with connect(tmp_path / "t.db") as db:
        yield db


def test_batch_is_stored_once_and_read_back(db):
    assert save_captures(db, [row("a"), row("b")]) == 2
    assert save_captures(db, [row("a"), row("c")]) == 1  # a retried batch does not fail on rows already in
    got = get_capture(db, "a")
    assert got["messages"][-1]["content"] == "where is my order?" and got["params"] == {"temperature": 0}
    with pytest.raises(CompletionNotFound):
        get_capture(db, "zzz")
    with pytest.raises(ValueError, match="status"):
        save_captures(db, [row("d", status="weird")])


def test_rating_a_capture_makes_it_a_chat_answer_with_its_context(db):
    save_captures(db, [row("a")])
    mid = as_chat_message(db, "a", user="agent")
    assert as_chat_message(db, "a") == mid  # made once
    rid = rate_message(db, kind="correction", message_id=mid, value="It ships tomorrow.", user="agent")
    context = db.execute("select context from ratings where id = ?", [rid]).fetchone()[0]
    assert '"Be kind."' in context and context.endswith('"where is my order?"}]')
    assert completions_for_ratings(db, [rid]) == {rid: "a"}


def test_filters_and_counts(db):
    save_captures(db, [row("a", at="2026-03-01T10:00:00.000+00:00"),
                       row("b", at="2026-03-02T10:00:00.000+00:00", adapter="support-v2", answer="Refunds in 30 days"),
                       row("c", at="2026-03-03T10:00:00.000+00:00", deployment=None, adapter="base"),
                       row("d", status="error", answer="")])
    rate_message(db, kind="thumb", message_id=as_chat_message(db, "b"), value="down", user="u")
    ids = lambda **f: [r["id"] for r in find_captures(db, CaptureFilter(**f))]  # noqa: E731
    assert ids(deployment="support", status="complete") == ["b", "a"]
    assert ids(adapter="base") == ["c"]
    assert ids(since="2026-03-02", until="2026-03-02") == ["b"]
    assert ids(rated=True) == ids(thumbs_down=True) == ["b"]
    assert set(ids(rated=False)) == {"a", "c", "d"}
    assert ids(text="REFUNDS") == ["b"] and ids(text="where is my") and not ids(text="nothing like this")
    assert count_captures(db, CaptureFilter(deployment="support")) == 3
    counts = waiting_counts(db)
    assert counts["total"] == 4 and counts["unrated"] == 2 and counts["thumbs_down"] == 1
    first = find_captures(db, CaptureFilter(text="Refunds"))[0]
    assert first["thumb"] == "down" and first["question"] == "where is my order?"


def test_retention_deletes_only_old_unused_traffic(db):
    old, new = "2026-01-01T00:00:00.000+00:00", "2026-06-01T00:00:00.000+00:00"
    save_captures(db, [row("old-unused", at=old), row("old-rated", at=old), row("old-feedback", at=old),
                       row("old-opened", at=old), row("new", at=new)])
    rate_message(db, kind="thumb", message_id=as_chat_message(db, "old-rated"), value="up", user="u")
    as_chat_message(db, "old-opened")  # made a chat message, never rated: nothing uses it
    record_feedback(db, "old-feedback", rater="r", api_key="k", thumb=None, score=None, correction=None,
                    comment="odd tone", rating_ids=[])
    assert prune(db, before="2026-03-01") == 2
    left = {r[0] for r in db.execute("select id from traffic")}
    assert left == {"old-rated", "old-feedback", "new"}
    assert db.execute("select count(*) from chat_sessions").fetchone()[0] == 1  # old-opened's thread went too
