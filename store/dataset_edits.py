"""Finding conversations in a dataset version (text, source file) and removing some by making a new version.

Versions never change: removing a conversation writes version n+1, extending the newest version minus
the removed ones, with kind "edit", the reason as its note, and a source saying what went and why,
so the lineage tells why a conversation is gone. Earlier versions (and runs trained on them) keep it.
Tested in tests/test_dataset_edits.py.
"""

from __future__ import annotations

import json

from sqlite_utils import Database

from store.datasets import VersionRef, create_version, resolve_version
from store.db import write_transaction

_MATCH = """exists (select 1 from json_each(c.messages) m
                    where json_extract(m.value, '$.content') like ? escape '\\')"""


class NotInVersion(LookupError):
    """A conversation to remove is not in the dataset's newest version."""


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _where(version_id: int, text: str | None, source: str | None) -> tuple[str, list]:
    sql, args = "vc.version_id = ?", [version_id]
    if text and text.strip():
        sql += f" and {_MATCH}"
        args.append(_like(text.strip()))
    if source:
        sql += " and c.source = ?"
        args.append(source)
    return sql, args


def search_version(db: Database, version_id: int, *, text: str | None = None, source: str | None = None,
                   limit: int | None = None, offset: int = 0) -> tuple[list[dict], int]:
    """(conversations, how many match) of a version whose message text contains `text` (case-insensitive
    for ASCII letters) and that came from the file `source`; each as iter_version_conversations gives it."""
    where, args = _where(version_id, text, source)
    base = f"from version_conversations vc join conversations c on c.id = vc.conversation_id where {where}"
    total = db.execute(f"select count(*) {base}", args).fetchone()[0]
    rows = db.query(f"""select c.id, c.messages, c.source, c.source_format, c.external_id, c.meta {base}
                        order by vc.position limit ? offset ?""", [*args, -1 if limit is None else limit, offset])
    return [{**r, "messages": json.loads(r["messages"]), "meta": json.loads(r["meta"] or "{}")} for r in rows], total


def version_sources(db: Database, version_id: int) -> list[tuple[str, int]]:
    """(source file, conversations from it) in a version, most first."""
    return [(r[0], r[1]) for r in db.execute(
        """select c.source, count(*) from version_conversations vc join conversations c on c.id = vc.conversation_id
           where vc.version_id = ? group by c.source order by count(*) desc, c.source""", [version_id])]


def remove_conversations(db: Database, dataset: str, conversation_ids: list[int], reason: str,
                         *, by: str = "") -> VersionRef:
    """A new version of `dataset`: its newest version without `conversation_ids`, `reason` kept as its note.

    Raises DatasetNotFound, NotInVersion (naming the ids that are not in the newest version) or
    ValueError (no ids, or a blank reason)."""
    ids = sorted({int(i) for i in conversation_ids})
    if not ids:
        raise ValueError("say which conversation to remove")
    if not (reason or "").strip():
        raise ValueError("say why the conversation is removed: the reason is kept in the dataset's lineage")
    with write_transaction(db):
        latest = resolve_version(db, dataset)
        marks = ",".join("?" * len(ids))
        present = {r[0] for r in db.execute(
            f"select conversation_id from version_conversations where version_id = ? and conversation_id in ({marks})",
            [latest.id, *ids])}
        missing = [i for i in ids if i not in present]
        if missing:
            raise NotInVersion(f"conversation {', '.join(f'#{i}' for i in missing)} is not in {latest}, "
                               "the newest version")
        source = {"kind": "removed", "conversations": ids, "reason": reason.strip(), "from": str(latest)}
        if by:
            source["by"] = by
        version, _, _ = create_version(db, latest.dataset, [], kind="edit", sources=[source],
                                       note=reason.strip(), parent=latest)
        db.execute(f"delete from version_conversations where version_id = ? and conversation_id in ({marks})",
                   [version.id, *ids])
        count = db.execute("select count(*) from version_conversations where version_id = ?",
                           [version.id]).fetchone()[0]
        db["dataset_versions"].update(version.id, {"conversation_count": count})
    return version

