"""Captured /v1 traffic: one row per chat completion, written in batches, read by the review queue.

serving.capture's writer calls `save_captures` with a batch; the review queue reads `find_captures`
and `waiting_counts`; a rating of a captured answer first turns it into a chat message
(`as_chat_message`) so it is rated, and later trained on, exactly like an answer from the browser;
retention deletes what no rating or dataset uses (`prune`).

    save_captures(db, rows)                                   # one transaction
    find_captures(db, CaptureFilter(deployment="support", rated=False))
    message_id = as_chat_message(db, "chatcmpl-tl...")       # then store.ratings.rate_message
    .venv/bin/python -m pytest tests/test_traffic_store.py -q
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Sequence

from sqlite_utils import Database

from store.chats import record_thread
from store.db import now, write_transaction

STATUSES = ("complete", "partial", "error")
COLUMNS = ("id", "created_at", "finished_at", "model", "deployment", "adapter", "arm", "messages", "params",
           "stream", "answer", "finish_reason", "status", "error", "http_status", "ttft_ms", "latency_ms",
           "prompt_tokens", "completion_tokens", "total_tokens", "api_key", "user", "metadata", "judge_score")
_JSON_COLUMNS = ("messages", "params", "metadata")


class CompletionNotFound(LookupError):
    """No captured completion with that id (never captured, or retention deleted it)."""


def save_captures(db: Database, rows: Sequence[dict]) -> int:
    """Insert a batch of captured completions (keys from COLUMNS; JSON columns as Python values).

    A row whose id is already stored is ignored (a writer retrying a batch after a busy database
    must not fail on the rows that got in). Returns how many rows were new.
    """
    if not rows:
        return 0
    encoded = [_encode(r) for r in rows]
    with write_transaction(db):
        before = db.conn.total_changes
        db.conn.executemany(
            f"insert or ignore into traffic ({', '.join(COLUMNS)}) values ({', '.join('?' * len(COLUMNS))})",
            [[r.get(c) for c in COLUMNS] for r in encoded])
        return db.conn.total_changes - before


def _encode(row: dict) -> dict:
    out = dict(row)
    for c in _JSON_COLUMNS:
        if not isinstance(out.get(c), str):
            out[c] = json.dumps(out.get(c) if out.get(c) is not None else ({} if c != "messages" else []),
                                ensure_ascii=False)
    if out.get("status") not in STATUSES:
        raise ValueError(f"capture {row.get('id')!r}: status must be one of {STATUSES}, got {out.get('status')!r}")
    return out


def _decode(row: dict) -> dict:
    out = dict(row)
    for c in _JSON_COLUMNS:
        if c in out and isinstance(out[c], str):
            out[c] = json.loads(out[c] or ("[]" if c == "messages" else "{}"))
    return out


def get_capture(db: Database, completion_id: str) -> dict:
    """One captured completion with its current ratings ("ratings": [{kind, value, user}])."""
    rows = list(db.query("select * from traffic where id = ?", [completion_id]))
    if not rows:
        raise CompletionNotFound(completion_id)
    row = _decode(rows[0])
    row["ratings"] = [] if row["message_id"] is None else list(db.query(
        "select id, kind, value, user, updated_at from ratings where message_id = ? order by id", [row["message_id"]]))
    return row


@dataclass(frozen=True)
class CaptureFilter:
    """What the review queue shows; every field left as None filters nothing."""

    deployment: str | None = None
    adapter: str | None = None
    since: str | None = None
    """ISO date or time: captured at or after."""
    until: str | None = None
    """ISO date or time: captured before (a bare date includes that whole day)."""
    rated: bool | None = None
    """True: only answers someone rated; False: only answers nobody rated yet."""
    thumbs_down: bool = False
    """Only answers with a thumbs-down."""
    judge_below: float | None = None
    """Only answers a judge scored below this (0..1)."""
    judged: bool | None = None
    """True: only answers a judge scored; False: only answers no judge scored yet."""
    text: str | None = None
    """Free text, searched in the question(s) and the answer (case-insensitive)."""
    status: str | None = None
    limit: int = 100
    offset: int = 0


def _where(f: CaptureFilter) -> tuple[str, list]:
    clauses, args = [], []
    for col in ("deployment", "adapter", "status"):
        if getattr(f, col):
            clauses.append(f"t.{col} = ?")
            args.append(getattr(f, col))
    if f.since:
        clauses.append("t.created_at >= ?")
        args.append(f.since)
    if f.until:
        clauses.append("t.created_at < ?")
        args.append(f.until + ("T99" if len(f.until) == 10 else ""))  # a bare date: the whole day
    rated = "exists (select 1 from ratings r where r.message_id = t.message_id)"
    if f.rated is True:
        clauses.append(rated)
    elif f.rated is False:
        clauses.append(f"not {rated}")
    if f.thumbs_down:
        clauses.append("exists (select 1 from ratings r where r.message_id = t.message_id"
                       " and r.kind = 'thumb' and r.value = 'down')")
    if f.judge_below is not None:
        clauses.append("t.judge_score < ?")
        args.append(f.judge_below)
    if f.judged is not None:
        clauses.append("t.judge_score is not null" if f.judged else "t.judge_score is null")
    if f.text and f.text.strip():
        clauses.append("(t.messages like ? or t.answer like ?)")
        needle = f"%{f.text.strip()}%"
        args += [needle, needle]
    return (" where " + " and ".join(clauses)) if clauses else "", args


def find_captures(db: Database, f: CaptureFilter = CaptureFilter()) -> list[dict]:
    """Captured completions matching `f`, newest first, each with `question` (the last user message),
    `thumb` and `corrected` (any rating of those kinds: 'up'/'down', 1/0)."""
    where, args = _where(f)
    rows = db.query(
        f"""select t.id, t.created_at, t.model, t.deployment, t.adapter, t.arm, t.status, t.answer,
                   t.messages, t.latency_ms, t.ttft_ms, t.completion_tokens, t.api_key, t.user, t.judge_score,
                   t.message_id,
                   (select r.value from ratings r where r.message_id = t.message_id and r.kind = 'thumb'
                    order by r.updated_at desc limit 1) as thumb,
                   exists (select 1 from ratings r where r.message_id = t.message_id
                           and r.kind = 'correction') as corrected
            from traffic t {where} order by t.created_at desc, t.id desc limit ? offset ?""",
        [*args, f.limit, f.offset])
    out = []
    for r in rows:
        msgs = json.loads(r.pop("messages") or "[]")
        r["question"] = next((_text(m.get("content")) for m in reversed(msgs) if m.get("role") == "user"), "")
        out.append(r)
    return out


def count_captures(db: Database, f: CaptureFilter = CaptureFilter()) -> int:
    where, args = _where(f)
    return db.execute(f"select count(*) from traffic t {where}", args).fetchone()[0]


def waiting_counts(db: Database) -> dict:
    """What the review queue holds: total, unrated, thumbs down, corrected, partial; per deployment unrated."""
    one = lambda sql, args=(): db.execute(sql, list(args)).fetchone()[0]  # noqa: E731
    rated = "exists (select 1 from ratings r where r.message_id = t.message_id)"
    return {
        "total": one("select count(*) from traffic"),
        "unrated": one(f"select count(*) from traffic t where t.status != 'error' and not {rated}"),
        "thumbs_down": one("select count(*) from traffic t where exists (select 1 from ratings r where "
                           "r.message_id = t.message_id and r.kind = 'thumb' and r.value = 'down')"),
        "corrected": one("select count(*) from traffic t where exists (select 1 from ratings r where "
                         "r.message_id = t.message_id and r.kind = 'correction')"),
        "partial": one("select count(*) from traffic where status = 'partial'"),
        "per_deployment": {r[0] or "": r[1] for r in db.execute(
            f"select deployment, count(*) from traffic t where t.status != 'error' and not {rated} "
            "group by deployment order by deployment")},
    }


def filter_choices(db: Database) -> dict[str, list[str]]:
    """The deployments and adapters that appear in captured traffic (for the review queue's pickers)."""
    return {col: [r[0] for r in db.execute(f"select distinct {col} from traffic where {col} is not null "
                                           f"order by {col}")] for col in ("deployment", "adapter")}


def _text(content) -> str:
    """A message's content as text: OpenAI allows a list of parts; the text parts are kept."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


def conversation_of(capture: dict) -> list[dict]:
    """The captured request's messages as plain {role, content} text messages, in order."""
    return [{"role": m.get("role", ""), "content": _text(m.get("content"))} for m in capture["messages"]
            if isinstance(m, dict)]


def as_chat_message(db: Database, completion_id: str, *, user: str = "") -> int:
    """The chat message a captured answer is rated as, created on first use and linked to the capture.

    The request's messages become the chain before it (a leading system message becomes the session's
    system prompt), so store.ratings sees the conversation so far and feedback builds treat the
    rating like one given in the Chat tab. The answer's settings record `completion_id`: the lineage
    from a trained example back to the captured completion.
    """
    with write_transaction(db):
        capture = get_capture(db, completion_id)
        if capture["message_id"] is not None:
            return capture["message_id"]
        if capture["status"] == "error":
            raise ValueError(f"completion {completion_id} failed upstream and has no answer to rate")
        messages = conversation_of(capture)
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
        settings = {"system_prompt": system, "completion_id": completion_id, "source": "api",
                    "params": capture["params"], "partial": capture["status"] == "partial"}
        message_id = record_thread(db, user=user or capture.get("api_key") or "", history=messages[1 if system else 0:],
                                   answer=capture["answer"], model=capture["adapter"] or capture["model"],
                                   settings=settings)
        db.execute("update traffic set message_id = ? where id = ?", [message_id, completion_id])
        return message_id


def completions_for_ratings(db: Database, rating_ids: Iterable[int]) -> dict[int, str]:
    """{rating id: captured completion id} for the ratings that rate a captured answer."""
    ids = list(rating_ids)
    if not ids:
        return {}
    out = {}
    for chunk in (ids[i:i + 500] for i in range(0, len(ids), 500)):
        out.update({r[0]: r[1] for r in db.execute(
            f"""select r.id, t.id from ratings r join traffic t on t.message_id = r.message_id
                where r.id in ({', '.join('?' * len(chunk))})""", chunk)})
    return out


def prune(db: Database, *, before: str) -> int:
    """Delete captured completions older than `before` (ISO time) that no rating or dataset uses.

    "Used" means: rated (its chat message has a rating), or a feedback build took a rating of it
    (the version's lineage names the rating), or it was added to an eval set (meta.completion_id).
    Their chat threads go with them when nothing else points at them. Returns the rows deleted.
    """
    with write_transaction(db):
        ids = [r[0] for r in db.execute(
            """select t.id from traffic t where t.created_at < ?
               and (t.message_id is null or (
                    not exists (select 1 from ratings r where r.message_id = t.message_id)
                and not exists (select 1 from version_ratings vr join ratings r on r.id = vr.rating_id
                                where r.message_id = t.message_id)))
               and not exists (select 1 from traffic_feedback f where f.completion_id = t.id)
               and not exists (select 1 from eval_items e where json_extract(e.meta, '$.completion_id') = t.id)""",
            [before])]
        for chunk in (ids[i:i + 500] for i in range(0, len(ids), 500)):
            marks = ", ".join("?" * len(chunk))
            sessions = [r[0] for r in db.execute(
                f"""select distinct m.session_id from traffic t join chat_messages m on m.id = t.message_id
                    where t.id in ({marks})""", chunk)]
            db.execute(f"delete from traffic where id in ({marks})", chunk)
            for s in sessions:  # an API thread's session holds only that thread
                if not db.execute("select 1 from traffic t join chat_messages m on m.id = t.message_id "
                                  "where m.session_id = ?", [s]).fetchone():
                    db.execute("delete from chat_messages where session_id = ? and id not in "
                               "(select message_id from ratings where message_id is not null)", [s])
                    db.execute("delete from chat_sessions where id = ? and not exists "
                               "(select 1 from chat_messages where session_id = ?)", [s, s])
        return len(ids)


def arm_stats(db: Database, deployment: str, *, since: str | None = None) -> dict[str, dict]:
    """Per arm of a deployment's traffic (main, canary) since `since`: requests, thumbs up/down, corrections."""
    args: list = [deployment]
    where = "t.deployment = ? and t.status != 'error'"
    if since:
        where += " and t.created_at >= ?"
        args.append(since)
    out = {arm: {"arm": arm, "adapters": [], "requests": 0, "thumbs_up": 0, "thumbs_down": 0, "corrected": 0}
           for arm in ("main", "canary")}
    for r in db.query(
        f"""select coalesce(t.arm, 'main') as arm, t.adapter, count(*) as requests,
                   sum(exists (select 1 from ratings r where r.message_id = t.message_id and r.kind = 'thumb'
                               and r.value = 'up')) as up,
                   sum(exists (select 1 from ratings r where r.message_id = t.message_id and r.kind = 'thumb'
                               and r.value = 'down')) as down,
                   sum(exists (select 1 from ratings r where r.message_id = t.message_id
                               and r.kind = 'correction')) as corrected
            from traffic t where {where} group by arm, t.adapter""", args):
        s = out.setdefault(r["arm"], {"arm": r["arm"], "adapters": [], "requests": 0, "thumbs_up": 0,
                                      "thumbs_down": 0, "corrected": 0})
        s["adapters"].append(r["adapter"])
        s["requests"] += r["requests"]
        s["thumbs_up"] += r["up"] or 0
        s["thumbs_down"] += r["down"] or 0
        s["corrected"] += r["corrected"] or 0
    return out


def record_feedback(db: Database, completion_id: str, *, rater: str, api_key: str | None, thumb: str | None,
                    score: float | None, correction: str | None, comment: str | None, rating_ids: list[int]) -> int:
    """Keep one /v1/feedback request as sent (its thumb and correction are ratings too); returns its id."""
    return db["traffic_feedback"].insert({
        "completion_id": completion_id, "rater": rater, "api_key": api_key, "thumb": thumb, "score": score,
        "correction": correction, "comment": comment, "rating_ids": json.dumps(rating_ids), "created_at": now(),
    }).last_pk


def feedback_for(db: Database, completion_id: str) -> list[dict]:
    """The /v1/feedback requests about a completion, oldest first."""
    return list(db.query("select * from traffic_feedback where completion_id = ? order by id", [completion_id]))


def set_judge_score(db: Database, completion_id: str, score: float | None) -> None:
    db.execute("update traffic set judge_score = ? where id = ?", [score, completion_id])


__all__ = ["CaptureFilter", "CompletionNotFound", "as_chat_message", "arm_stats", "completions_for_ratings",
           "conversation_of", "count_captures", "feedback_for", "filter_choices", "find_captures", "get_capture", "prune",
           "record_feedback", "save_captures", "set_judge_score", "waiting_counts"]
