"""Ratings: thumbs on answers, A/B verdicts and corrected answers, one per user and target.

Rating again changes the user's rating (an upsert on m003's `ratings_one_per_user` index; the conflict target must repeat its
expressions exactly), so the
store holds each user's latest opinion. Every row is written at once with the conversation so far,
the models, the sampling settings, who and when.

- thumb:      message_id, value "up" | "down"
- correction: message_id, value = the answer it should have given, personal data redacted (store.redaction)
- verdict:    ab_turn_id, value "a" | "b" | "tie" | "both_bad"; models = {"a": name, "b": name, "blind": bool}

`context` is the OpenAI-style conversation before the rated answer (system prompt first when there
was one, ending with the user's question), the shape training.feedback_dataset reads. For a verdict
it is side A's; in a multi-turn comparison side B's earlier answers differ, and its own context is
the chain of `message_b_id`. The rated answers themselves are the chat_messages rows.

    .venv/bin/python -m pytest tests/test_store_chats_ratings.py -q
"""

from __future__ import annotations

import json

from sqlite_utils import Database

from store.chats import conversation_until, get_ab_turn, get_message
from store.db import now, write_transaction
from store.redaction import DEFAULT, RedactionSettings, redact_conversation

THUMB_VALUES = ("up", "down")
VERDICT_VALUES = ("a", "b", "tie", "both_bad")
MAX_CORRECTION_CHARS = 32_000


class InvalidRating(ValueError):
    pass


def _upsert(db: Database, row: dict) -> int:
    """Insert the rating or replace the user's earlier one for the same kind and target."""
    ts = now()
    cols = ["kind", "message_id", "ab_turn_id", "value", "user", "context", "models", "settings"]
    values = [row.get(c) for c in cols]
    for i in (5, 6, 7):
        values[i] = json.dumps(values[i], ensure_ascii=False)
    db.execute(
        f"""insert into ratings ({', '.join(cols)}, created_at, updated_at)
            values ({', '.join('?' * len(cols))}, ?, ?)
            on conflict (kind, coalesce(message_id, 0), coalesce(ab_turn_id, 0), coalesce(user, ''))
            do update set value = excluded.value, context = excluded.context, models = excluded.models,
                          settings = excluded.settings, updated_at = excluded.updated_at""",
        values + [ts, ts],
    )
    return db.execute(
        """select id from ratings where kind = ? and ifnull(message_id, 0) = ifnull(?, 0)
           and ifnull(ab_turn_id, 0) = ifnull(?, 0) and ifnull(user, '') = ?""",
        [row["kind"], row.get("message_id"), row.get("ab_turn_id"), row["user"]],
    ).fetchone()[0]


def rate_message(db: Database, *, kind: str, message_id: int, value: str, user: str,
                 redaction: RedactionSettings = DEFAULT) -> int:
    """A thumb ("up"/"down") or a correction (the better answer's text) on an assistant answer.

    A correction is typed by a person and becomes a training example, so its personal data is replaced by
    placeholders first (`redaction`, every type by default), as an import would."""
    if kind == "thumb":
        if value not in THUMB_VALUES:
            raise InvalidRating(f"a thumb is 'up' or 'down', not {value!r}")
    elif kind == "correction":
        value = (value or "").strip()
        if not value:
            raise InvalidRating("the correction is empty: type the answer the model should have given")
        if len(value) > MAX_CORRECTION_CHARS:
            raise InvalidRating(f"the correction is longer than {MAX_CORRECTION_CHARS} characters")
        value = redact_correction(db, message_id, value, redaction)
    else:
        raise InvalidRating(f"unknown rating kind {kind!r}")
    with write_transaction(db):
        msg = get_message(db, message_id)
        if msg["role"] != "assistant":
            raise InvalidRating("only the model's answers can be rated")
        return _upsert(db, {
            "kind": kind, "message_id": message_id, "value": value, "user": user,
            "context": conversation_until(db, message_id)[:-1], "models": {"model": msg["model"]},
            "settings": msg["settings"],
        })


def redact_correction(db: Database, message_id: int, value: str, redaction: RedactionSettings = DEFAULT) -> str:
    """The correction redacted as the last turn of its conversation: an address the conversation already
    holds gets the placeholder it would get there, and placeholders already in it are never reused.
    Done before the write transaction, since the first use of the engine takes seconds to build it."""
    context = conversation_until(db, message_id)[:-1]
    redacted, _ = redact_conversation([*context, {"role": "assistant", "content": value}], redaction)
    return redacted[-1]["content"]


def rate_turn(db: Database, *, ab_turn_id: int, value: str, user: str) -> int:
    """The verdict on an A/B turn: which side answered better."""
    if value not in VERDICT_VALUES:
        raise InvalidRating(f"a verdict is one of {', '.join(VERDICT_VALUES)}, not {value!r}")
    with write_transaction(db):
        turn = get_ab_turn(db, ab_turn_id)
        settings = get_message(db, turn["message_a_id"])["settings"]
        return _upsert(db, {
            "kind": "verdict", "ab_turn_id": ab_turn_id, "value": value, "user": user,
            "context": conversation_until(db, turn["message_a_id"])[:-1],
            "models": {"a": turn["model_a"], "b": turn["model_b"], "blind": bool(turn["blind"])},
            "settings": settings,
        })


def clear_rating(db: Database, *, kind: str, user: str, message_id: int | None = None,
                 ab_turn_id: int | None = None) -> bool:
    """Take back the user's rating of that kind on that target; True if there was one."""
    cur = db.execute(
        """delete from ratings where kind = ? and ifnull(message_id, 0) = ifnull(?, 0)
           and ifnull(ab_turn_id, 0) = ifnull(?, 0) and ifnull(user, '') = ?""",
        [kind, message_id, ab_turn_id, user])
    return cur.rowcount > 0


def user_ratings(db: Database, user: str, *, message_ids: list[int] = (), ab_turn_ids: list[int] = ()) -> list[dict]:
    """The user's current ratings on the given answers and turns (to show them again)."""
    out = []
    for col, ids in (("message_id", list(message_ids)), ("ab_turn_id", list(ab_turn_ids))):
        if ids:
            out += list(db.query(
                f"select kind, message_id, ab_turn_id, value from ratings where user = ? "
                f"and {col} in ({', '.join('?' * len(ids))})", [user, *ids]))
    return out


def counts_per_model(db: Database) -> list[dict]:
    """Per model: thumbs up and down, corrections, and the A/B verdicts it took part in."""
    per: dict[str, dict] = {}

    def slot(model: str) -> dict:
        return per.setdefault(model, {"model": model, "thumbs_up": 0, "thumbs_down": 0, "corrections": 0,
                                      "ab_wins": 0, "ab_losses": 0, "ab_ties": 0, "ab_both_bad": 0})

    for r in db.query(
        """select m.model, r.kind, r.value, count(*) as n from ratings r
           join chat_messages m on m.id = r.message_id
           where r.kind in ('thumb', 'correction') group by m.model, r.kind, r.value"""
    ):
        s = slot(r["model"] or "?")
        if r["kind"] == "correction":
            s["corrections"] += r["n"]
        else:
            s["thumbs_up" if r["value"] == "up" else "thumbs_down"] += r["n"]
    for r in _verdicts(db):
        for side, other in (("a", "b"), ("b", "a")):
            s = slot(r[f"model_{side}"] or "?")
            if r["value"] == side:
                s["ab_wins"] += 1
            elif r["value"] == other:
                s["ab_losses"] += 1
            elif r["value"] == "tie":
                s["ab_ties"] += 1
            else:
                s["ab_both_bad"] += 1
    return sorted(per.values(), key=lambda s: s["model"])


def ab_records(db: Database, base_model: str) -> dict[str, dict]:
    """Each adapter's record in A/B verdicts against `base_model`: wins, losses, ties, both_bad.

    Turns that compare two adapters, or a model with itself, do not count here.
    """
    out: dict[str, dict] = {}
    for r in _verdicts(db):
        a, b = r["model_a"], r["model_b"]
        if (a == base_model) == (b == base_model):
            continue
        adapter_side = "a" if b == base_model else "b"
        _tally(out.setdefault(a if adapter_side == "a" else b, _empty_record()), r["value"], adapter_side)
    return out


def head_to_head(db: Database, model: str, opponent: str) -> dict:
    """`model`'s record in A/B verdicts on turns that compared it with `opponent`, either side.

    One count per verdict (each person's vote on each turn): wins, losses, ties, both_bad.
    """
    rec = _empty_record()
    for r in _verdicts(db):
        if {r["model_a"], r["model_b"]} != {model, opponent} or model == opponent:
            continue
        _tally(rec, r["value"], "a" if r["model_a"] == model else "b")
    return rec


def _empty_record() -> dict:
    return {"wins": 0, "losses": 0, "ties": 0, "both_bad": 0}


def _tally(rec: dict, verdict: str, side: str) -> None:
    """Count one verdict for the model that was on `side`."""
    if verdict == side:
        rec["wins"] += 1
    elif verdict in ("a", "b"):
        rec["losses"] += 1
    elif verdict == "tie":
        rec["ties"] += 1
    else:
        rec["both_bad"] += 1


def _verdicts(db: Database):
    return db.query(
        """select r.value, a.model as model_a, b.model as model_b from ratings r
           join ab_turns t on t.id = r.ab_turn_id
           join chat_messages a on a.id = t.message_a_id join chat_messages b on b.id = t.message_b_id
           where r.kind = 'verdict'"""
    )


def recent_ratings(db: Database, limit: int = 50) -> list[dict]:
    """The latest ratings, newest first, for the Feedback tab's table."""
    return list(db.query(
        """select r.id, r.kind, r.value, r.user, r.models, r.updated_at, m.model, r.context,
                  coalesce(m.content, '') as answer
           from ratings r left join chat_messages m on m.id = r.message_id
           order by r.updated_at desc, r.id desc limit ?""", [limit]))
