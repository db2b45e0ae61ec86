"""A user's open chat and comparison, rebuilt from the store, so a page reload (or another browser of the
same login) finds them where they were.

Only what was stored comes back: finished exchanges and A/B turns, with the user's thumbs and votes,
the models and the settings of the last answer. An answer still streaming when the page went away was
never stored, and is not.

    .venv/bin/python -m pytest tests/test_open_chats.py -q
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlite_utils import Database

from serving.ab_session import new_session
from store import chats, ratings


@dataclass
class OpenChat:
    """A single-model chat: its messages ({"role", "content"}, the model's own words) lined up with their ids."""

    session_id: int
    model: str | None
    messages: list[dict]
    ids: list[int]
    thumbs: dict[int, str] = field(default_factory=dict)
    """The user's thumbs on its answers: {message id: "up" | "down"}."""
    settings: dict = field(default_factory=dict)
    """The last answer's system prompt and sampling settings."""


@dataclass
class OpenComparison:
    """An A/B comparison: both sides' messages and the session dict serving.ab_session works on."""

    state: dict
    messages_a: list[dict]
    messages_b: list[dict]
    thumbs: dict[int, str] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)


def _owned(db: Database, session_id: int | None, user: str, mode: str) -> int | None:
    """`session_id` when it is `user`'s session of `mode`; else the user's newest one (None: start fresh)."""
    if session_id is not None:
        row = chats.get_session(db, int(session_id))
        if row and row["user"] == user and row["mode"] == mode:
            return row["id"]
    return chats.latest_session(db, user=user, mode=mode)


def _thumbs(db: Database, user: str, ids: list[int]) -> dict[int, str]:
    return {r["message_id"]: r["value"] for r in ratings.user_ratings(db, user, message_ids=ids)
            if r["kind"] == "thumb"}


def open_chat(db: Database, user: str, session_id: int | None = None) -> OpenChat | None:
    """The chat `session_id` (when it is the user's) or the user's newest one; None when there is none."""
    sid = _owned(db, session_id, user, "single")
    if sid is None:
        return None
    rows = chats.session_messages(db, sid)
    if not rows:
        return None
    answers = [r for r in rows if r["role"] == "assistant"]
    ids = [r["id"] for r in rows]
    return OpenChat(sid, answers[-1]["model"] if answers else None,
                    [{"role": r["role"], "content": r["content"]} for r in rows], ids,
                    _thumbs(db, user, [r["id"] for r in answers]), answers[-1]["settings"] if answers else {})


def open_comparison(db: Database, user: str, session_id: int | None = None) -> OpenComparison | None:
    """The comparison `session_id` (when it is the user's) or the user's newest one; None when there is none."""
    sid = _owned(db, session_id, user, "ab")
    if sid is None:
        return None
    turns = chats.session_ab_turns(db, sid)
    if not turns:
        return None
    by_id = {r["id"]: r for r in chats.session_messages(db, sid)}
    sides: dict[str, tuple[list[dict], list[int]]] = {"a": ([], []), "b": ([], [])}
    for turn in turns:
        for side in ("a", "b"):
            answer = by_id[turn[f"message_{side}_id"]]
            question = by_id[answer["parent_id"]]
            messages, ids = sides[side]
            messages += [{"role": "user", "content": question["content"]},
                         {"role": "assistant", "content": answer["content"]}]
            ids += [question["id"], answer["id"]]
    first, last = turns[0], turns[-1]
    turn_ids = [t["id"] for t in turns]
    votes = {str(r["ab_turn_id"]): r["value"] for r in ratings.user_ratings(db, user, ab_turn_ids=turn_ids)
             if r["kind"] == "verdict"}
    state = {**new_session(), "session_id": sid,
             "models": {"a": by_id[last["message_a_id"]]["model"], "b": by_id[last["message_b_id"]]["model"]},
             "blind": bool(first["blind"]), "revealed": bool(votes) or not first["blind"],
             "ids_a": sides["a"][1], "ids_b": sides["b"][1], "turns": turn_ids, "votes": votes}
    answers = [i for i in sides["a"][1][1::2] + sides["b"][1][1::2]]
    return OpenComparison(state, sides["a"][0], sides["b"][0], _thumbs(db, user, answers),
                          by_id[last["message_a_id"]]["settings"])
