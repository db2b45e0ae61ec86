"""Chat sessions, their messages and A/B turns, as the browser app writes them.

A conversation is a chain of messages (each assistant answer points at the user message it answers,
each user message at the answer before it), so a rating can always recover "the conversation so far".
In an A/B session each side keeps its own chain: the user's words are stored once per side, because
side A's second question follows A's first answer and B's follows B's.

An exchange (the user's message and the answer) is written in one transaction after the answer has
finished streaming: a failed or abandoned stream leaves nothing half-written.

    .venv/bin/python -m pytest tests/test_store_chats_ratings.py -q
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlite_utils import Database

from store.db import now, write_transaction


class MessageNotFound(LookupError):
    pass


@dataclass(frozen=True)
class Exchange:
    """The rows one exchange wrote."""

    session_id: int
    user_message_id: int
    answer_id: int


@dataclass(frozen=True)
class AbTurn:
    session_id: int
    ab_turn_id: int
    side_a: Exchange
    side_b: Exchange


def create_session(db: Database, *, user: str, mode: str, system_prompt: str = "") -> int:
    if mode not in ("single", "ab"):
        raise ValueError(f"unknown chat mode {mode!r}")
    return db["chat_sessions"].insert({"user": user, "mode": mode, "system_prompt": system_prompt,
                                       "created_at": now()}).last_pk


def _add_message(db: Database, session_id: int, role: str, content: str, *, parent_id: int | None,
                 model: str | None = None, settings: dict | None = None) -> int:
    return db["chat_messages"].insert({
        "session_id": session_id, "parent_id": parent_id, "role": role, "content": content,
        "model": model, "settings": json.dumps(settings or {}, ensure_ascii=False), "created_at": now(),
    }).last_pk


def record_exchange(db: Database, *, session_id: int | None, user: str, parent_id: int | None,
                    question: str, answer: str, model: str, settings: dict) -> Exchange:
    """Store a question and its finished answer; creates the session when `session_id` is None."""
    with write_transaction(db):
        if session_id is None:
            session_id = create_session(db, user=user, mode="single",
                                        system_prompt=settings.get("system_prompt", ""))
        q = _add_message(db, session_id, "user", question, parent_id=parent_id)
        a = _add_message(db, session_id, "assistant", answer, parent_id=q, model=model, settings=settings)
    return Exchange(session_id, q, a)


def record_ab_turn(db: Database, *, session_id: int | None, user: str, question: str,
                   parent_a: int | None, answer_a: str, model_a: str,
                   parent_b: int | None, answer_b: str, model_b: str,
                   settings: dict, blind: bool) -> AbTurn:
    """Store one A/B turn: the question on both sides, both answers and the turn that pairs them."""
    with write_transaction(db):
        if session_id is None:
            session_id = create_session(db, user=user, mode="ab", system_prompt=settings.get("system_prompt", ""))
        qa = _add_message(db, session_id, "user", question, parent_id=parent_a)
        a = _add_message(db, session_id, "assistant", answer_a, parent_id=qa, model=model_a, settings=settings)
        qb = _add_message(db, session_id, "user", question, parent_id=parent_b)
        b = _add_message(db, session_id, "assistant", answer_b, parent_id=qb, model=model_b, settings=settings)
        turn = db["ab_turns"].insert({"session_id": session_id, "message_a_id": a, "message_b_id": b,
                                      "blind": int(blind), "created_at": now()}).last_pk
    return AbTurn(session_id, turn, Exchange(session_id, qa, a), Exchange(session_id, qb, b))


def get_message(db: Database, message_id: int) -> dict:
    rows = list(db.query("select * from chat_messages where id = ?", [message_id]))
    if not rows:
        raise MessageNotFound(f"no chat message {message_id}")
    return {**rows[0], "settings": json.loads(rows[0]["settings"] or "{}")}


def get_ab_turn(db: Database, ab_turn_id: int) -> dict:
    rows = list(db.query(
        """select t.*, a.model as model_a, b.model as model_b from ab_turns t
           join chat_messages a on a.id = t.message_a_id join chat_messages b on b.id = t.message_b_id
           where t.id = ?""", [ab_turn_id]))
    if not rows:
        raise MessageNotFound(f"no A/B turn {ab_turn_id}")
    return rows[0]


def conversation_until(db: Database, message_id: int) -> list[dict]:
    """OpenAI-style messages from the start of the chain to `message_id` inclusive, with the system
    prompt that answer was given under first (when it had one)."""
    rows = list(db.query(
        """with recursive chain(id, parent_id, role, content, settings, depth) as (
             select id, parent_id, role, content, settings, 0 from chat_messages where id = ?
             union all
             select m.id, m.parent_id, m.role, m.content, m.settings, chain.depth + 1
             from chat_messages m join chain on m.id = chain.parent_id
           ) select role, content, settings from chain order by depth desc""", [message_id]))
    if not rows:
        raise MessageNotFound(f"no chat message {message_id}")
    system = json.loads(rows[-1]["settings"] or "{}").get("system_prompt") or ""
    messages = [{"role": r["role"], "content": r["content"]} for r in rows]
    return ([{"role": "system", "content": system}] if system else []) + messages


def record_thread(db: Database, *, user: str, history: list[dict], answer: str, model: str, settings: dict) -> int:
    """Store a whole conversation that happened elsewhere (a /v1 API call) as a new single-chat session:
    `history` (user/assistant messages, oldest first) chained, then `answer`; returns the answer's id.

    `settings["system_prompt"]` is the conversation's system prompt, as for a Chat tab answer.
    """
    with write_transaction(db):
        session_id = create_session(db, user=user, mode="single", system_prompt=settings.get("system_prompt", ""))
        parent = None
        for m in history:
            parent = _add_message(db, session_id, m["role"], m["content"], parent_id=parent)
        return _add_message(db, session_id, "assistant", answer, parent_id=parent, model=model, settings=settings)


def latest_session(db: Database, *, user: str, mode: str) -> int | None:
    """The id of `user`'s newest chat session of `mode` ("single" or "ab") that has a message, or None."""
    rows = list(db.query(
        """select s.id from chat_sessions s where s.user = ? and s.mode = ?
           and exists (select 1 from chat_messages m where m.session_id = s.id)
           order by s.id desc limit 1""", [user, mode]))
    return rows[0]["id"] if rows else None


def get_session(db: Database, session_id: int) -> dict | None:
    """The session row (id, user, mode, system_prompt, created_at), or None."""
    rows = list(db.query("select * from chat_sessions where id = ?", [session_id]))
    return rows[0] if rows else None


def session_messages(db: Database, session_id: int) -> list[dict]:
    """Every message of a session, oldest first, settings decoded."""
    return [{**r, "settings": json.loads(r["settings"] or "{}")} for r in db.query(
        "select * from chat_messages where session_id = ? order by id", [session_id])]


def session_ab_turns(db: Database, session_id: int) -> list[dict]:
    """The A/B turns of a session, oldest first."""
    return list(db.query("select * from ab_turns where session_id = ? order by id", [session_id]))
