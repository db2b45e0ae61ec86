"""Datasets, their immutable versions and the conversations in them.

A version never changes once written: importing into an existing dataset writes version n+1,
which holds its parent's conversations plus the new ones, and records where they came from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Iterator

from sqlite_utils import Database

from store.db import now, write_transaction

BATCH = 500


@dataclass(frozen=True)
class NewConversation:
    """What the store needs of one conversation to keep it."""

    content_hash: str
    messages: list[dict]
    source: str = ""
    source_format: str = ""
    external_id: str | None = None
    meta: dict | None = None


@dataclass(frozen=True)
class VersionRef:
    dataset: str
    version: int
    id: int

    def __str__(self) -> str:
        return f"{self.dataset}@{self.version}"


class DatasetNotFound(LookupError):
    pass


def parse_version_spec(spec: str) -> tuple[str, int | None]:
    """'support' -> ('support', None) meaning the latest; 'support@3' -> ('support', 3)."""
    name, sep, version = spec.partition("@")
    if not name:
        raise ValueError(f"dataset {spec!r}: the name before '@' is empty")
    if not sep:
        return name, None
    if not version.isdigit() or int(version) < 1:
        raise ValueError(f"dataset {spec!r}: the version after '@' must be a positive number")
    return name, int(version)


def validate_dataset_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 64 or any(c in name for c in "@/\\\n\t") or name.startswith("."):
        raise ValueError(
            f"dataset name {name!r} is not allowed: use 1-64 characters without '@', slashes or line breaks"
        )
    return name


def resolve_version(db: Database, spec: str) -> VersionRef:
    """The version a 'name' or 'name@N' spec points to; raises DatasetNotFound with what exists."""
    name, version = parse_version_spec(spec)
    sql = """select v.id, v.version from dataset_versions v join datasets d on d.id = v.dataset_id
             where d.name = ? {} order by v.version desc limit 1"""
    args: list = [name]
    if version is not None:
        sql, args = sql.format("and v.version = ?"), [name, version]
    else:
        sql = sql.format("")
    row = db.execute(sql, args).fetchone()
    if row is None:
        known = [r[0] for r in db.execute("select name from datasets order by name")]
        hint = f"known datasets: {', '.join(known)}" if known else "no datasets yet: import some logs first"
        raise DatasetNotFound(f"dataset {spec!r} not found ({hint})")
    return VersionRef(name, row[1], row[0])


def latest_version(db: Database, name: str) -> VersionRef | None:
    try:
        return resolve_version(db, name)
    except DatasetNotFound:
        return None


def create_version(
    db: Database,
    dataset: str,
    conversations: Iterable[NewConversation],
    *,
    kind: str = "import",
    sources: list[dict] | None = None,
    note: str = "",
    parent: VersionRef | None = None,
    include_parent: bool = True,
    redaction: dict | None = None,
) -> tuple[VersionRef, int, int]:
    """Write a new version of `dataset` (created if new) from `conversations`.

    The version extends `parent` (by default the dataset's latest version) with every conversation
    not already in it. Returns (version, added, already_present). `redaction` is how the new
    conversations were redacted (RedactionSettings.to_record()), kept on the version. Runs in the caller's transaction
    when there is one; wrap the call in `write_transaction(db)` so a failure part-way leaves nothing behind.
    """
    dataset = validate_dataset_name(dataset)
    with write_transaction(db):
        ds = db.execute("select id from datasets where name = ?", [dataset]).fetchone()
        if ds is None:
            dataset_id = db["datasets"].insert({"name": dataset, "created_at": now()}).last_pk
        else:
            dataset_id = ds[0]
        if parent is None:
            parent = latest_version(db, dataset)
        number = (db.execute("select max(version) from dataset_versions where dataset_id = ?",
                             [dataset_id]).fetchone()[0] or 0) + 1
        version_id = db["dataset_versions"].insert({
            "dataset_id": dataset_id, "version": number, "parent_id": parent.id if parent else None,
            "kind": kind, "sources": json.dumps(sources or []), "note": note, "created_at": now(),
            **({"redaction": json.dumps(redaction)} if redaction is not None else {}),
        }).last_pk
        position = 0
        if parent is not None and include_parent:
            db.execute(
                """insert into version_conversations (version_id, conversation_id, position)
                   select ?, conversation_id, position from version_conversations where version_id = ?""",
                [version_id, parent.id],
            )
            position = db.execute("select count(*) from version_conversations where version_id = ?",
                                  [version_id]).fetchone()[0]
        added = present = 0
        for conv in conversations:
            conv_id = _conversation_id(db, conv)
            cur = db.execute(
                "insert or ignore into version_conversations (version_id, conversation_id, position) values (?, ?, ?)",
                [version_id, conv_id, position],
            )
            if cur.rowcount:
                added += 1
                position += 1
            else:
                present += 1
        db["dataset_versions"].update(version_id, {"conversation_count": position})
    return VersionRef(dataset, number, version_id), added, present


def _conversation_id(db: Database, conv: NewConversation) -> int:
    row = db.execute("select id from conversations where content_hash = ?", [conv.content_hash]).fetchone()
    if row:
        return row[0]
    return db["conversations"].insert({
        "content_hash": conv.content_hash, "messages": json.dumps(conv.messages, ensure_ascii=False),
        "source": conv.source, "source_format": conv.source_format, "external_id": conv.external_id,
        "meta": json.dumps(conv.meta or {}, ensure_ascii=False), "created_at": now(),
    }).last_pk


def record_import(db: Database, version: VersionRef | None, report: dict) -> int:
    """Keep an import's report (counts, rejects, warnings) so it can be shown again."""
    return db["imports"].insert({
        "version_id": version.id if version else None, "source": report.get("source", ""),
        "format": report.get("format", ""), "encoding": report.get("encoding", ""),
        "imported": report.get("imported", 0), "rejected": report.get("rejected", 0),
        "duplicates": report.get("duplicates", 0), "report": json.dumps(report, ensure_ascii=False),
        "created_at": now(),
    }).last_pk


def list_datasets(db: Database) -> list[dict]:
    """Every dataset with its versions (newest first), sizes and lineage."""
    out: dict[int, dict] = {}
    for row in db.query(
        """select d.id as dataset_id, d.name, d.created_at as dataset_created_at, v.id, v.version,
                  v.parent_id, p.version as parent_version, v.kind, v.sources, v.note,
                  v.conversation_count, v.created_at, v.redaction
           from datasets d left join dataset_versions v on v.dataset_id = d.id
           left join dataset_versions p on p.id = v.parent_id
           order by d.name, v.version desc"""
    ):
        ds = out.setdefault(row["dataset_id"], {"name": row["name"], "created_at": row["dataset_created_at"],
                                                "versions": []})
        if row["id"] is not None:
            ds["versions"].append({
                "id": row["id"], "version": row["version"], "ref": f"{row['name']}@{row['version']}",
                "parent": f"{row['name']}@{row['parent_version']}" if row["parent_version"] else None,
                "kind": row["kind"], "sources": json.loads(row["sources"] or "[]"), "note": row["note"],
                "conversations": row["conversation_count"], "created_at": row["created_at"],
                "redaction": json.loads(row["redaction"]) if row["redaction"] else None,
            })
    return list(out.values())


def iter_version_conversations(db: Database, version_id: int, *, limit: int | None = None,
                               offset: int = 0) -> Iterator[dict]:
    """The conversations of a version in import order, as {"id", "messages", "source", ...}."""
    sql = """select c.id, c.messages, c.source, c.source_format, c.external_id, c.meta
             from version_conversations vc join conversations c on c.id = vc.conversation_id
             where vc.version_id = ? order by vc.position limit ? offset ?"""
    for row in db.query(sql, [version_id, -1 if limit is None else limit, offset]):
        yield {**row, "messages": json.loads(row["messages"]), "meta": json.loads(row["meta"] or "{}")}


def version_conversation_count(db: Database, version_id: int) -> int:
    """How many conversations a dataset version holds (its own and those it extends)."""
    return db.execute("select count(*) from version_conversations where version_id = ?", [version_id]).fetchone()[0]


def version_redaction(db: Database, version_id: int) -> dict | None:
    """How a version's imported conversations were redacted ({"enabled": ..., "types": ...}); None if unrecorded."""
    row = db.execute("select redaction from dataset_versions where id = ?", [version_id]).fetchone()
    return json.loads(row[0]) if row and row[0] else None


def has_imported_versions(db: Database, dataset: str) -> bool:
    """True when `dataset` has a version that is not a feedback build (imported conversations)."""
    row = db.execute("""select count(*) from dataset_versions v join datasets d on d.id = v.dataset_id
                        where d.name = ? and v.kind != 'feedback'""", [dataset]).fetchone()
    return bool(row[0])
