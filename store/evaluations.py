"""Eval sets, eval runs and their per-item results, and the grounding allow-list: one function per query.

An eval set holds immutable versions, like datasets: adding items writes version n+1 holding its
parent's items (copied, so a version never changes under a run) plus the new ones. An eval run
compares a candidate model with a baseline on one set version; it is written to as it goes (one
result row per item, progress done/total) so a UI can poll it, and ends done, failed or stopped.

    ref = create_eval_set_version(db, "refunds", items, source_kind="manual", created_by="ana")
    run_id = create_eval_run(db, candidate="support-v4", baseline="support-v3", set_version_id=ref.id)
    .venv/bin/python -m pytest tests/test_eval_store.py -q
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Iterator

from sqlite_utils import Database

from store.db import now, write_transaction

SOURCE_KINDS = ("heldout", "file", "corrections", "manual")
RUN_STATUSES = ("queued", "running", "done", "failed", "stopped")
FINAL_STATUSES = ("done", "failed", "stopped")
TRIGGERS = ("manual", "auto")
ALLOW_KINDS = ("link", "email", "phone")


CHECK_KINDS = ("must_mention", "must_not_mention", "regex")


class InvalidCheck(ValueError):
    pass


class EvalSetNotFound(LookupError):
    pass


class EvalRunNotFound(LookupError):
    pass


@dataclass(frozen=True)
class EvalSetRef:
    name: str
    version: int
    id: int

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class NewEvalItem:
    """What the store keeps of one eval item (training.evalsets builds and validates these)."""

    messages: list[dict]
    reference: str | None = None
    checks: list[dict] | None = None
    meta: dict | None = None


# --- an item's named checks: one validation for every entry point ---
def normalise_check(data, where: str = "check") -> dict:
    """{"name", "kind", "value"} checked; `value` becomes a list of texts. InvalidCheck names `where` and the field."""
    if not isinstance(data, dict):
        raise InvalidCheck(f"{where}: a check is an object with name, kind and value, not {type(data).__name__}")
    name = str(data.get("name") or "").strip()
    if not name:
        raise InvalidCheck(f"{where}: 'name' is empty: say what the check tests, e.g. 'states the 30-day rule'")
    kind = data.get("kind")
    if kind not in CHECK_KINDS:
        raise InvalidCheck(f"{where} ({name}): 'kind' must be one of {', '.join(CHECK_KINDS)}, not {kind!r}")
    raw = data.get("value")
    values = [raw] if isinstance(raw, str) else raw
    if not isinstance(values, list) or not values or not all(isinstance(v, str) and v.strip() for v in values):
        raise InvalidCheck(f"{where} ({name}): 'value' must be a non-empty text or list of texts")
    if kind == "regex":
        if len(values) != 1:
            raise InvalidCheck(f"{where} ({name}): a regex check takes one pattern")
        try:
            re.compile(values[0], re.IGNORECASE)
        except re.error as exc:
            raise InvalidCheck(f"{where} ({name}): 'value' is not a valid regular expression ({exc})") from None
    else:
        values = [v.strip() for v in values]
    return {"name": name, "kind": kind, "value": values}


def normalise_checks(data, where: str = "item") -> list[dict]:
    """A list of checks, each validated; names unique within the item (pass rates are counted by name)."""
    if data in (None, ""):
        return []
    if not isinstance(data, list):
        raise InvalidCheck(f"{where}: 'checks' must be a list, not {type(data).__name__}")
    checks = [normalise_check(c, f"{where}, check {i}") for i, c in enumerate(data)]
    names = [c["name"] for c in checks]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise InvalidCheck(f"{where}: two checks are named {dup!r}; give each its own name")
    return checks


def validate_item(item: NewEvalItem, where: str = "item") -> NewEvalItem:
    """An item's messages (a conversation ending with a user turn), reference and checks, checked."""
    msgs = item.messages
    if not isinstance(msgs, list) or not msgs:
        raise ValueError(f"{where}: 'messages' must be a non-empty list of {{role, content}}")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") \
                or not isinstance(m.get("content"), str):
            raise ValueError(f"{where}, message {i}: needs a role (system, user or assistant) and a text content")
        if m["role"] == "system" and i > 0:
            raise ValueError(f"{where}, message {i}: a system message may only come first")
    if msgs[-1]["role"] != "user" or not msgs[-1]["content"].strip():
        raise ValueError(f"{where}: the prompt must end with a non-empty user turn (the question to answer)")
    reference = item.reference.strip() if isinstance(item.reference, str) else item.reference
    if reference is not None and not isinstance(reference, str):
        raise ValueError(f"{where}: 'reference' must be a text or empty")
    return NewEvalItem([{"role": m["role"], "content": m["content"]} for m in msgs], reference or None,
                       normalise_checks(item.checks, where), item.meta)


# --- the prompt key: one normalisation for eval/train overlap ---
_SPACE = re.compile(r"\s+")


def normalise_prompt(messages: list[dict]) -> list[tuple[str, str]]:
    """(role, text) of the non-system messages, NFKC, case-folded, whitespace collapsed.

    System messages are left out on purpose: a team that changes its system prompt still trains on
    the same question and answer, and that must still count as overlap.
    """
    out = []
    for m in messages:
        if m.get("role") == "system":
            continue
        text = unicodedata.normalize("NFKC", str(m.get("content") or "")).casefold()
        out.append((str(m.get("role")), _SPACE.sub(" ", text).strip()))
    return out


def prompt_key(messages: list[dict]) -> str:
    """sha256 (hex) of the normalised prompt: equal for prompts that differ only in case, spacing or system."""
    canonical = json.dumps(normalise_prompt(messages), ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


# --- eval sets ---
def parse_set_spec(spec: str) -> tuple[str, int | None]:
    """'refunds' -> ('refunds', None) meaning the latest; 'refunds@2' -> ('refunds', 2)."""
    name, sep, version = spec.partition("@")
    if not name.strip():
        raise ValueError(f"eval set {spec!r}: the name before '@' is empty")
    if not sep:
        return name.strip(), None
    if not version.isdigit() or int(version) < 1:
        raise ValueError(f"eval set {spec!r}: the version after '@' must be a positive number")
    return name.strip(), int(version)


def validate_set_name(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > 64 or any(c in name for c in "@/\\\n\t") or name.startswith("."):
        raise ValueError(f"eval set name {name!r} is not allowed: use 1-64 characters without '@', "
                         "slashes or line breaks")
    return name


def resolve_set(db: Database, spec: str) -> EvalSetRef:
    """The version a 'name' or 'name@N' spec points to; raises EvalSetNotFound naming what exists."""
    name, version = parse_set_spec(spec)
    sql = """select v.id, v.version from eval_set_versions v join eval_sets s on s.id = v.set_id
             where s.name = ? {} order by v.version desc limit 1"""
    if version is None:
        row = db.execute(sql.format(""), [name]).fetchone()
    else:
        row = db.execute(sql.format("and v.version = ?"), [name, version]).fetchone()
    if row is None:
        known = [r[0] for r in db.execute("select name from eval_sets order by name")]
        hint = f"known eval sets: {', '.join(known)}" if known else "no eval sets yet"
        raise EvalSetNotFound(f"eval set {spec!r} not found ({hint})")
    return EvalSetRef(name, row[1], row[0])


def create_eval_set_version(db: Database, name: str, items: Iterable[NewEvalItem], *, source_kind: str,
                            source_ref: str = "", note: str = "", created_by: str = "",
                            include_parent: bool = True) -> EvalSetRef:
    """Write version n+1 of eval set `name` (created if new): the latest version's items, then `items`.

    Items whose prompt and reference equal one already in the version are kept once. Raises
    ValueError for an unknown source kind or when the new version would hold no item.
    """
    if source_kind not in SOURCE_KINDS:
        raise ValueError(f"unknown eval set source kind {source_kind!r}: one of {', '.join(SOURCE_KINDS)}")
    name = validate_set_name(name)
    with write_transaction(db):
        row = db.execute("select id from eval_sets where name = ?", [name]).fetchone()
        set_id = row[0] if row else db["eval_sets"].insert({"name": name, "created_at": now()}).last_pk
        parent = db.execute("select id, version from eval_set_versions where set_id = ? order by version desc limit 1",
                            [set_id]).fetchone()
        number = (parent[1] if parent else 0) + 1
        version_id = db["eval_set_versions"].insert({
            "set_id": set_id, "version": number, "parent_id": parent[0] if parent else None,
            "source_kind": source_kind, "source_ref": source_ref, "note": note, "created_at": now(),
            "created_by": created_by,
        }).last_pk
        seen: set[tuple[str, str | None]] = set()
        position = 0
        old = list(iter_eval_items(db, parent[0])) if parent and include_parent else []
        rows = [NewEvalItem(o["messages"], o["reference"], o["checks"], o["meta"]) for o in old]
        new = [validate_item(item, f"item {i}") for i, item in enumerate(items)]
        for item in [*rows, *new]:
            key = prompt_key(item.messages)
            if (key, item.reference) in seen:
                continue
            seen.add((key, item.reference))
            db["eval_items"].insert({
                "version_id": version_id, "position": position,
                "messages": json.dumps(item.messages, ensure_ascii=False), "reference": item.reference,
                "checks": json.dumps(item.checks or [], ensure_ascii=False), "prompt_key": key,
                "meta": json.dumps(item.meta or {}, ensure_ascii=False),
            })
            position += 1
        if position == 0:
            raise ValueError(f"eval set {name!r}: no item to write (the new version would be empty)")
        db["eval_set_versions"].update(version_id, {"item_count": position})
    return EvalSetRef(name, number, version_id)


def list_eval_sets(db: Database) -> list[dict]:
    """Every eval set with its versions (newest first): source, size, lineage."""
    out: dict[int, dict] = {}
    for row in db.query(
        """select s.id as set_id, s.name, v.id, v.version, p.version as parent_version, v.source_kind,
                  v.source_ref, v.note, v.item_count, v.created_at, v.created_by
           from eval_sets s left join eval_set_versions v on v.set_id = s.id
           left join eval_set_versions p on p.id = v.parent_id order by s.name, v.version desc"""
    ):
        entry = out.setdefault(row["set_id"], {"name": row["name"], "versions": []})
        if row["id"] is not None:
            entry["versions"].append({
                "id": row["id"], "version": row["version"], "ref": f"{row['name']}@{row['version']}",
                "parent": f"{row['name']}@{row['parent_version']}" if row["parent_version"] else None,
                "source_kind": row["source_kind"], "source_ref": row["source_ref"], "note": row["note"],
                "items": row["item_count"], "created_at": row["created_at"], "created_by": row["created_by"],
            })
    return list(out.values())


def iter_eval_items(db: Database, version_id: int, *, limit: int | None = None) -> Iterator[dict]:
    """A version's items in order: {"id", "position", "messages", "reference", "checks", "meta", "prompt_key"}."""
    for row in db.query("select * from eval_items where version_id = ? order by position limit ?",
                        [version_id, -1 if limit is None else limit]):
        yield {**row, "messages": json.loads(row["messages"]), "checks": json.loads(row["checks"] or "[]"),
               "meta": json.loads(row["meta"] or "{}")}


def eval_prompt_keys(db: Database, version_ids: Iterable[int] | None = None) -> set[str]:
    """The prompt keys of the given set versions' items (all eval sets when None): never train on these."""
    ids = list(version_ids) if version_ids is not None else None
    if ids is None:
        return {r[0] for r in db.execute("select distinct prompt_key from eval_items")}
    if not ids:
        return set()
    return {r[0] for r in db.execute(
        f"select distinct prompt_key from eval_items where version_id in ({', '.join('?' * len(ids))})", ids)}


# --- eval runs ---
def create_eval_run(db: Database, *, candidate: str, baseline: str, set_version_id: int, judge: dict | None = None,
                    config: dict | None = None, trigger: str = "manual", created_by: str = "") -> int:
    """Queue a run; `judge` is {"base_url", "model"} (a key must not be stored: the caller drops it)."""
    if trigger not in TRIGGERS:
        raise ValueError(f"unknown eval trigger {trigger!r}: one of {', '.join(TRIGGERS)}")
    if judge and any(k in judge for k in ("api_key", "key")):
        raise ValueError("the judge's API key must not be stored with the run")
    total = db.execute("select item_count from eval_set_versions where id = ?", [set_version_id]).fetchone()
    if total is None:
        raise EvalSetNotFound(f"eval set version id {set_version_id} does not exist")
    return db["eval_runs"].insert({
        "candidate": candidate, "baseline": baseline, "set_version_id": set_version_id,
        "judge": json.dumps(judge) if judge else None, "config": json.dumps(config or {}), "status": "queued",
        "done": 0, "total": total[0], "trigger": trigger, "created_at": now(), "created_by": created_by,
    }).last_pk


def get_eval_run(db: Database, run_id: int) -> dict:
    rows = list(db.query(
        """select r.*, s.name as set_name, v.version as set_version from eval_runs r
           join eval_set_versions v on v.id = r.set_version_id join eval_sets s on s.id = v.set_id
           where r.id = ?""", [run_id]))
    if not rows:
        raise EvalRunNotFound(f"no eval run {run_id}")
    return _decode_run(rows[0])


def list_eval_runs(db: Database, *, candidate: str | None = None, baseline: str | None = None,
                   status: str | None = None, limit: int | None = None) -> list[dict]:
    """Runs, newest first, optionally for one candidate, baseline and/or status."""
    where, args = [], []
    for col, value in (("candidate", candidate), ("baseline", baseline), ("status", status)):
        if value is not None:
            where.append(f"r.{col} = ?")
            args.append(value)
    sql = f"""select r.*, s.name as set_name, v.version as set_version from eval_runs r
              join eval_set_versions v on v.id = r.set_version_id join eval_sets s on s.id = v.set_id
              {'where ' + ' and '.join(where) if where else ''} order by r.id desc limit ?"""
    return [_decode_run(r) for r in db.query(sql, [*args, -1 if limit is None else limit])]


def latest_done_run(db: Database, candidate: str, baseline: str) -> dict | None:
    """The newest finished ("done") run of `candidate` against `baseline`, or None."""
    runs = list_eval_runs(db, candidate=candidate, baseline=baseline, status="done", limit=1)
    return runs[0] if runs else None


def mark_eval_running(db: Database, run_id: int, *, total: int) -> None:
    db.execute("update eval_runs set status = 'running', started_at = ?, total = ?, done = 0 where id = ?",
               [now(), total, run_id])


def record_item_result(db: Database, run_id: int, result: dict, *, done: int) -> None:
    """One item's result and the run's progress, in one transaction (a UI polls `done`/`total`)."""
    row = {
        "run_id": run_id, "item_id": result["item_id"], "position": result.get("position"),
        "candidate_answer": result.get("candidate_answer"), "baseline_answer": result.get("baseline_answer"),
        "candidate_finish": result.get("candidate_finish"), "baseline_finish": result.get("baseline_finish"),
        "scores": json.dumps(result.get("scores") or {}, ensure_ascii=False), "verdict": result.get("verdict"),
        "reason": result.get("reason"),
        "judge_raw": json.dumps(result["judge_raw"], ensure_ascii=False) if result.get("judge_raw") else None,
        "created_at": now(),
    }
    with write_transaction(db):
        db["eval_item_results"].insert(row, replace=False)
        db.execute("update eval_runs set done = ? where id = ?", [done, run_id])


def finish_eval_run(db: Database, run_id: int, status: str, *, summary: dict | None = None,
                    error: str | None = None) -> None:
    if status not in FINAL_STATUSES:
        raise ValueError(f"an eval run finishes as one of {', '.join(FINAL_STATUSES)}, not {status!r}")
    db.execute("update eval_runs set status = ?, summary = ?, error = ?, finished_at = ? where id = ?",
               [status, json.dumps(summary, ensure_ascii=False) if summary is not None else None, error, now(),
                run_id])


def item_results(db: Database, run_id: int) -> list[dict]:
    """A run's per-item view: prompt, reference, both answers, scores, verdict and reason, in item order."""
    return [
        {**r, "messages": json.loads(r["messages"]), "checks": json.loads(r["checks"] or "[]"),
         "scores": json.loads(r["scores"] or "{}"), "judge_raw": json.loads(r["judge_raw"]) if r["judge_raw"] else None}
        for r in db.query(
            """select x.*, i.messages, i.reference, i.checks from eval_item_results x
               join eval_items i on i.id = x.item_id where x.run_id = ? order by x.position, x.id""", [run_id])
    ]


def judge_comparisons(db: Database) -> list[dict]:
    """Every judge verdict of finished or stopped runs as {"a", "b", "winner": a|b|tie, "source": "judge"}."""
    out = []
    for r in db.query(
        """select r.candidate, r.baseline, x.verdict from eval_item_results x join eval_runs r on r.id = x.run_id
           where x.verdict in ('candidate', 'baseline', 'tie') and r.status in ('done', 'stopped')
           and r.candidate != r.baseline"""
    ):
        winner = {"candidate": "a", "baseline": "b", "tie": "tie"}[r["verdict"]]
        out.append({"a": r["candidate"], "b": r["baseline"], "winner": winner, "source": "judge"})
    return out


def people_comparisons(db: Database) -> list[dict]:
    """Every person's A/B verdict as {"a", "b", "winner": a|b|tie, "source": "people"}; "both bad" is left out."""
    out = []
    for r in db.query(
        """select r.value, a.model as model_a, b.model as model_b from ratings r
           join ab_turns t on t.id = r.ab_turn_id
           join chat_messages a on a.id = t.message_a_id join chat_messages b on b.id = t.message_b_id
           where r.kind = 'verdict' and r.value in ('a', 'b', 'tie')"""
    ):
        if r["model_a"] and r["model_b"] and r["model_a"] != r["model_b"]:
            out.append({"a": r["model_a"], "b": r["model_b"], "winner": r["value"], "source": "people"})
    return out


def _decode_run(row: dict) -> dict:
    return {**row, "judge": json.loads(row["judge"]) if row.get("judge") else None,
            "config": json.loads(row.get("config") or "{}"),
            "summary": json.loads(row["summary"]) if row.get("summary") else None}


# --- grounding: the team's own texts and allow-list ---
def grounding_texts(db: Database) -> Iterator[str]:
    """Every message text of the team's data (imported conversations, eval references, corrections):
    a link, e-mail address or phone number found here is not invented."""
    for (messages,) in db.execute("select messages from conversations"):
        for m in json.loads(messages):
            yield str(m.get("content") or "")
    for (reference,) in db.execute("select reference from eval_items where reference is not null"):
        yield reference
    for (value,) in db.execute("select value from ratings where kind = 'correction'"):
        yield value


def add_allowed(db: Database, kind: str, value: str, *, created_by: str = "") -> None:
    """Allow a link (or a link prefix / bare domain), e-mail address (or '@domain') or phone number."""
    if kind not in ALLOW_KINDS:
        raise ValueError(f"unknown allow-list kind {kind!r}: one of {', '.join(ALLOW_KINDS)}")
    value = (value or "").strip()
    if not value:
        raise ValueError(f"the allow-list {kind} is empty")
    db.execute("insert or ignore into grounding_allowlist (kind, value, created_at, created_by) values (?, ?, ?, ?)",
               [kind, value, now(), created_by])


def remove_allowed(db: Database, kind: str, value: str) -> bool:
    return db.execute("delete from grounding_allowlist where kind = ? and value = ?",
                      [kind, value.strip()]).rowcount > 0


def allowlist(db: Database) -> dict[str, list[str]]:
    """{"link": [...], "email": [...], "phone": [...]}."""
    out: dict[str, list[str]] = {k: [] for k in ALLOW_KINDS}
    for r in db.query("select kind, value from grounding_allowlist order by kind, value"):
        out.setdefault(r["kind"], []).append(r["value"])
    return out
