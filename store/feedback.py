"""Feedback rounds in the store: ratings read for a build, feedback dataset versions written, and read back.

A feedback build is a dataset version of kind "feedback": its SFT examples are ordinary
conversations (so `iter_version_conversations` reads them like any import), its KTO/DPO rows sit
in `preference_examples`, its settings and report in `feedback_builds`, and the ratings it used in
`version_ratings`, each with a snapshot of the rating as it was then (a user may change it later).

    rows = rating_rows(db, since=last_build(db, "feedback")["created_at"])  # dicts for RatingRecord.from_row
    ref = save_feedback_version(db, dataset="feedback", ...)   # one transaction
    list(iter_preference_examples(db, ref.id, "dpo"))          # TRL rows
"""

from __future__ import annotations

import json
from typing import Iterator, Sequence

from sqlite_utils import Database

from store.datasets import NewConversation, VersionRef, create_version
from store.db import now, write_transaction

PREFERENCE_KINDS = ("kto", "dpo")


def rating_rows(db: Database, *, since: str | None = None) -> list[dict]:
    """Every rating (changed or given after `since`, an ISO time, when set) joined with what it rates.

    Keys are `training.feedback_dataset.RatingRecord`'s fields; `context` stays JSON text.
    """
    where, args = "", []
    if since:
        where, args = "where coalesce(r.updated_at, r.created_at) > ?", [since]
    return list(db.query(
        f"""select r.id, r.kind, r.user, r.created_at, r.updated_at, r.value, r.context,
                   r.message_id, m.model, m.content as answer,
                   r.ab_turn_id, t.message_a_id, t.message_b_id,
                   a.content as answer_a, b.content as answer_b, a.model as model_a, b.model as model_b
            from ratings r
            left join chat_messages m on m.id = r.message_id
            left join ab_turns t on t.id = r.ab_turn_id
            left join chat_messages a on a.id = t.message_a_id
            left join chat_messages b on b.id = t.message_b_id
            {where} order by r.id""", args))


def last_build(db: Database, dataset: str | None = None) -> dict | None:
    """The newest feedback build (of `dataset`, when given), with its version ref; None before the first."""
    rows = latest_builds(db, dataset=dataset, limit=1)
    return rows[0] if rows else None


def latest_builds(db: Database, *, dataset: str | None = None, limit: int | None = None) -> list[dict]:
    """Feedback builds, newest first: version ref and id, method, since, from_adapter, weights, report."""
    where, args = ("where d.name = ?", [dataset]) if dataset else ("", [])
    rows = db.query(
        f"""select f.*, v.version, d.name as dataset, v.conversation_count
            from feedback_builds f join dataset_versions v on v.id = f.version_id
            join datasets d on d.id = v.dataset_id {where}
            order by f.created_at desc, f.version_id desc limit ?""", [*args, -1 if limit is None else limit])
    return [_decode_build(r) for r in rows]


def get_build(db: Database, version_id: int) -> dict | None:
    """The feedback build behind dataset version `version_id`, or None when it is not a feedback version."""
    rows = list(db.query(
        """select f.*, v.version, d.name as dataset, v.conversation_count
           from feedback_builds f join dataset_versions v on v.id = f.version_id
           join datasets d on d.id = v.dataset_id where f.version_id = ?""", [version_id]))
    return _decode_build(rows[0]) if rows else None


def save_feedback_version(
    db: Database, *, dataset: str, method: str, sft: Sequence[NewConversation], kto: Sequence[dict],
    dpo: Sequence[dict], provenance: dict[str, Sequence[Sequence[int]]], rating_ids: Sequence[int],
    report: dict, since: str | None, from_adapter: str | None, desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0, user: str = "",
) -> VersionRef:
    """Write one feedback build as a new version of `dataset`, all or nothing.

    `kto`/`dpo` are TRL rows (training.feedback_dataset); `provenance[kind]` runs parallel to them.
    The version holds only this round's rows (it does not extend the previous feedback version);
    its parent is that version, for the lineage.
    """
    with write_transaction(db):
        ref, _, _ = create_version(db, dataset, sft, kind="feedback", include_parent=False,
                                   sources=[{"feedback": {"method": method, "since": since,
                                                          "ratings": len(rating_ids)}}],
                                   note=f"{method} from {len(rating_ids)} rating(s)")
        ids = provenance.get("kto", [()] * len(kto))
        db["preference_examples"].insert_all(
            {"version_id": ref.id, "kind": "kto", "position": i, "prompt": _json(row["prompt"]),
             "completion": row["completion"][-1]["content"], "label": int(bool(row["label"])),
             "rating_ids": _json(list(ids[i]))} for i, row in enumerate(kto))
        ids = provenance.get("dpo", [()] * len(dpo))
        db["preference_examples"].insert_all(
            {"version_id": ref.id, "kind": "dpo", "position": i, "prompt": _json(row["prompt"]),
             "chosen": row["chosen"][-1]["content"], "rejected": row["rejected"][-1]["content"],
             "rating_ids": _json(list(ids[i]))} for i, row in enumerate(dpo))
        # The snapshot is read inside the same transaction, so it is exactly what the build saw.
        for rating_id in rating_ids:
            r = db.execute("select kind, value, user, coalesce(updated_at, created_at), models from ratings"
                           " where id = ?", [rating_id]).fetchone()
            if r is None:
                raise LookupError(f"rating {rating_id} no longer exists")
            db["version_ratings"].insert({"version_id": ref.id, "rating_id": rating_id, "kind": r[0],
                                          "value": r[1], "user": r[2], "rated_at": r[3], "models": r[4]})
        db["feedback_builds"].insert({
            "version_id": ref.id, "method": method, "since": since, "from_adapter": from_adapter,
            "desirable_weight": desirable_weight, "undesirable_weight": undesirable_weight,
            "report": _json(report), "user": user, "created_at": now(),
        })
    return ref


def iter_preference_examples(db: Database, version_id: int, kind: str) -> Iterator[dict]:
    """A feedback version's KTO or DPO rows in TRL's conversational format, in build order."""
    if kind not in PREFERENCE_KINDS:
        raise ValueError(f"kind must be one of {PREFERENCE_KINDS}, got {kind!r}")
    for r in db.query("select * from preference_examples where version_id = ? and kind = ? order by position",
                      [version_id, kind]):
        prompt = json.loads(r["prompt"])
        if kind == "kto":
            yield {"prompt": prompt, "completion": [_assistant(r["completion"])], "label": bool(r["label"])}
        else:
            yield {"prompt": prompt, "chosen": [_assistant(r["chosen"])], "rejected": [_assistant(r["rejected"])]}


def preference_counts(db: Database, version_id: int) -> dict[str, int]:
    """{"kto": n, "kto_desirable": n, "kto_undesirable": n, "dpo": n} for a version (zeros for an import)."""
    counts = {"kto": 0, "kto_desirable": 0, "kto_undesirable": 0, "dpo": 0}
    for kind, label, n in db.execute(
            "select kind, label, count(*) from preference_examples where version_id = ? group by kind, label",
            [version_id]).fetchall():
        counts[kind] += n
        if kind == "kto":
            counts["kto_desirable" if label else "kto_undesirable"] += n
    return counts


def version_ratings(db: Database, version_id: int) -> list[dict]:
    """The ratings a version was built from, as they were then: id, kind, value, user, rated_at, models;
    and `value_now`, the rating's value today (None once taken back)."""
    return list(db.query(
        """select vr.rating_id as id, vr.kind, vr.value, vr.user, vr.rated_at, vr.models, r.message_id,
                  r.ab_turn_id, r.value as value_now
           from version_ratings vr
           -- kind and user guard against a later rating that reused a taken-back rating's id
           left join ratings r on r.id = vr.rating_id and r.kind = vr.kind and r.user is vr.user
           where vr.version_id = ? order by vr.rating_id""", [version_id]))


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=False)


def _decode_build(row: dict) -> dict:
    return {**row, "ref": f"{row['dataset']}@{row['version']}", "report": json.loads(row["report"] or "{}")}
