"""Erasure: find a customer's data in every stored place, remove it, and keep a tombstone that holds no data.

    plan = find_erasure(db, data_dir, Target("email", "jo@example.com"))   # what would go (a dry run)
    report = erase(db, data_dir, plan, by="maria")                         # it goes; a tombstone stays

Where it looks: every text column of every table (found from the schema, so a table added later is
searched too) and every file under the data directory except the base models. What happens:
- an imported conversation that holds the value is deleted from every dataset version (the versions
  keep all their other rows: immutable in everything but the erased rows);
- an eval item that holds it is deleted with its results;
- everywhere else (ratings and their snapshots, chat messages, KTO/DPO rows, import reports, run
  logs, files) each occurrence is replaced by ERASED, so the rest of the row stays;
- the database is then checkpointed and vacuumed with secure_delete on, so no free page or WAL frame
  still holds the old text.
`--conversation ID` deletes that conversation the same way. The tombstone records the kind of target,
when, by whom, the counts per place, the dataset versions touched and the adapters trained on them
(to retrain), never the value itself.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from sqlite_utils import Database

from store.db import now, write_transaction

ERASED = "<ERASED>"
# Tables whose rows are deleted whole when they hold the value; every other text is redacted in place.
DELETE_ROWS = {"conversations": "id", "eval_items": "id"}
SKIP_TABLES = {"_sqlite_migrations", "erasures", "version_conversations"}
SKIP_DIRS = {"models"}  # base models and the embedding model: shipped, never customer data
MIN_TEXT = 4  # a shorter --text would match too much by accident


class ErasureError(ValueError):
    pass


@dataclass(frozen=True)
class Target:
    kind: Literal["email", "text", "conversation"]
    value: str | int

    def __post_init__(self):
        if self.kind == "conversation":
            if not str(self.value).isdigit():
                raise ErasureError(f"a conversation id is a number, got {self.value!r}")
        elif len(str(self.value).strip()) < MIN_TEXT:
            raise ErasureError(f"the {self.kind} to erase must have at least {MIN_TEXT} characters")
        elif self.kind == "email" and "@" not in str(self.value):
            raise ErasureError("that is not an e-mail address (no @)")


def forms(target: Target) -> list[str]:
    """How the value can appear in stored text: as is, and escaped inside JSON (both ways JSON writes non-ASCII)."""
    value = str(target.value).strip()
    return sorted({value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}, key=len, reverse=True)


def patterns(target: Target) -> list[re.Pattern]:
    return [re.compile(re.escape(f), re.IGNORECASE) for f in forms(target)]


def redact_text(text: str, pats: list[re.Pattern]) -> str:
    for p in pats:
        text = p.sub(ERASED, text)
    return text


@dataclass
class ErasurePlan:
    target: Target
    conversations: list[int] = field(default_factory=list)
    """Imported conversations to delete."""
    eval_items: list[int] = field(default_factory=list)
    redactions: dict[str, int] = field(default_factory=dict)
    """{table.column: rows where the value is replaced}"""
    versions: list[str] = field(default_factory=list)
    """Dataset versions that lose rows or whose rows change ("support@2")."""
    eval_sets: list[str] = field(default_factory=list)
    adapters: list[str] = field(default_factory=list)
    """Adapters trained on those versions (or continued from one that was): retrain them."""
    files: list[str] = field(default_factory=list)
    """Files under the data directory that hold the value (relative paths)."""

    @property
    def empty(self) -> bool:
        return not (self.conversations or self.eval_items or self.redactions or self.files)

    def lines(self) -> list[str]:
        """What the plan erases, one line per place, for people (the CLI and the browser); never the value."""
        out = []
        if self.conversations:
            out.append(f"{len(self.conversations)} conversation(s), from {', '.join(self.versions) or 'no version'}")
        if self.eval_items:
            out.append(f"{len(self.eval_items)} eval item(s), from {', '.join(self.eval_sets)}")
        out += [f"{n} {place} value(s) redacted" for place, n in sorted(self.redactions.items())]
        out += [f"file {f} redacted" for f in self.files]
        return out

    def to_json(self) -> dict:
        out = asdict(self)
        out["target"] = {"kind": self.target.kind}  # never the value
        return out


def _text_columns(db: Database) -> dict[str, list[str]]:
    out = {}
    for table in db.tables:
        if table.name in SKIP_TABLES or table.name.startswith("sqlite_"):
            continue
        cols = [c.name for c in table.columns if c.type.upper() in ("TEXT", "STR", "")]
        if cols:
            out[table.name] = cols
    return out


def _matching_rows(db: Database, table: str, column: str, target: Target) -> list[int]:
    """Rowids whose `column` holds the value: SQLite's LIKE narrows it down, the patterns decide (LIKE's
    % and _ are wildcards, so it can match more than the value)."""
    pats = patterns(target)
    likes = [f"%{f}%" for f in forms(target)]
    where = " or ".join(f'"{column}" like ?' for _ in likes)
    rows = db.execute(f'select rowid, "{column}" from "{table}" where {where}', likes)
    return [rowid for rowid, text in rows if isinstance(text, str) and any(p.search(text) for p in pats)]


def _files(data_dir: Path, pats: list[re.Pattern]) -> list[Path]:
    found = []
    raw = [re.compile(p.pattern.encode("utf-8"), re.IGNORECASE) for p in pats]
    for path in sorted(data_dir.rglob("*")):
        rel = path.relative_to(data_dir)
        if not path.is_file() or rel.parts[0] in SKIP_DIRS or path.name.startswith("tuneloop.db"):
            continue
        data = path.read_bytes()
        if any(p.search(data) for p in raw):
            found.append(path)
    return found


def find_erasure(db: Database, data_dir: Path | str, target: Target) -> ErasurePlan:
    """Everything that would change, without changing anything."""
    plan = ErasurePlan(target)
    if target.kind == "conversation":
        cid = int(target.value)
        if db.execute("select 1 from conversations where id = ?", [cid]).fetchone() is None:
            raise ErasureError(f"no conversation {cid}")
        plan.conversations = [cid]
    else:
        for table, cols in _text_columns(db).items():
            for col in cols:
                rowids = _matching_rows(db, table, col, target)
                if not rowids:
                    continue
                if table == "conversations":
                    plan.conversations += [r for r in rowids if r not in plan.conversations]
                elif table == "eval_items":
                    plan.eval_items += [r for r in rowids if r not in plan.eval_items]
                else:
                    plan.redactions[f"{table}.{col}"] = len(rowids)
        plan.files = [str(p.relative_to(data_dir)) for p in _files(Path(data_dir), patterns(target))]
    plan.versions, version_ids = _versions(db, plan)
    plan.eval_sets = _eval_sets(db, plan.eval_items)
    plan.adapters = _adapters(db, version_ids)
    return plan


def _versions(db: Database, plan: ErasurePlan) -> tuple[list[str], list[int]]:
    ids = set()
    if plan.conversations:
        marks = ",".join("?" * len(plan.conversations))
        ids |= {r[0] for r in db.execute(f"select distinct version_id from version_conversations "
                                         f"where conversation_id in ({marks})", plan.conversations)}
    if any(k.startswith(("preference_examples.", "version_ratings.")) for k in plan.redactions):
        like = f"%{str(plan.target.value).strip()}%"
        for table, cols in (("preference_examples", ("prompt", "completion", "chosen", "rejected")),
                            ("version_ratings", ("value",))):
            where = " or ".join(f'"{c}" like ?' for c in cols)
            ids |= {r[0] for r in db.execute(f"select distinct version_id from {table} where {where}",
                                             [like] * len(cols))}
    refs = [f"{r[0]}@{r[1]}" for r in db.execute(
        f"select d.name, v.version from dataset_versions v join datasets d on d.id = v.dataset_id "
        f"where v.id in ({','.join('?' * len(ids))}) order by d.name, v.version", sorted(ids))] if ids else []
    return refs, sorted(ids)


def _eval_sets(db: Database, item_ids: list[int]) -> list[str]:
    if not item_ids:
        return []
    marks = ",".join("?" * len(item_ids))
    return [f"{r[0]}@{r[1]}" for r in db.execute(
        f"""select distinct s.name, v.version from eval_items i join eval_set_versions v on v.id = i.version_id
            join eval_sets s on s.id = v.set_id where i.id in ({marks}) order by s.name, v.version""", item_ids)]


def _adapters(db: Database, version_ids: list[int]) -> list[str]:
    """Adapters trained on those versions, and every adapter continued from one of them."""
    if not version_ids:
        return []
    marks = ",".join("?" * len(version_ids))
    hit = {r[0] for r in db.execute(
        f"""select a.id from adapters a left join runs r on r.id = a.run_id
            where a.dataset_version_id in ({marks}) or r.dataset_version_id in ({marks})""",
        [*version_ids, *version_ids])}
    children: dict[int, list[int]] = {}
    for aid, parent in db.execute("select id, parent_id from adapters"):
        children.setdefault(parent, []).append(aid)
    todo = list(hit)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in hit:
                hit.add(child)
                todo.append(child)
    if not hit:
        return []
    return [r[0] for r in db.execute(f"select name from adapters where id in ({','.join('?' * len(hit))}) "
                                     "order by id", sorted(hit))]


def erase(db: Database, data_dir: Path | str, plan: ErasurePlan, *, by: str = "") -> tuple[int, bool]:
    """Carry out `plan`; returns (the tombstone's id, whether the file could be purged of old pages: see `purge`)."""
    data_dir = Path(data_dir)
    pats = patterns(plan.target) if plan.target.kind != "conversation" else []
    db.execute("pragma secure_delete = on")  # deleted rows' bytes are overwritten, not left in free pages
    with write_transaction(db):
        if plan.conversations:
            _delete_conversations(db, plan.conversations)
        if plan.eval_items:
            _delete_eval_items(db, plan.eval_items)
        for key in plan.redactions:
            table, col = key.split(".", 1)
            for rowid in _matching_rows(db, table, col, plan.target):
                text = db.execute(f'select "{col}" from "{table}" where rowid = ?', [rowid]).fetchone()[0]
                db.execute(f'update "{table}" set "{col}" = ? where rowid = ?', [redact_text(text, pats), rowid])
        tombstone = db["erasures"].insert({
            "at": now(), "by": by, "kind": plan.target.kind, "plan": json.dumps(plan.to_json()),
            "versions": json.dumps(plan.versions), "adapters": json.dumps(plan.adapters),
        }).last_pk
    for rel in plan.files:
        path = data_dir / rel
        text = path.read_bytes().decode("utf-8", "replace")
        path.write_text(redact_text(text, pats), encoding="utf-8")
    return tombstone, purge(db)


def _delete_conversations(db: Database, ids: list[int]) -> None:
    marks = ",".join("?" * len(ids))
    versions = [r[0] for r in db.execute(f"select distinct version_id from version_conversations "
                                         f"where conversation_id in ({marks})", ids)]
    db.execute(f"delete from version_conversations where conversation_id in ({marks})", ids)
    db.execute(f"delete from conversations where id in ({marks})", ids)
    for vid in versions:
        db.execute("update dataset_versions set conversation_count = (select count(*) from version_conversations "
                   "where version_id = ?) where id = ?", [vid, vid])


def _delete_eval_items(db: Database, ids: list[int]) -> None:
    marks = ",".join("?" * len(ids))
    versions = [r[0] for r in db.execute(f"select distinct version_id from eval_items where id in ({marks})", ids)]
    db.execute(f"delete from eval_item_results where item_id in ({marks})", ids)
    db.execute(f"delete from eval_items where id in ({marks})", ids)
    for vid in versions:
        db.execute("update eval_set_versions set item_count = (select count(*) from eval_items where version_id = ?) "
                   "where id = ?", [vid, vid])


def purge(db: Database) -> bool:
    """Checkpoint the WAL and rewrite the file, so no old page keeps erased bytes; False when another
    connection holds the database (the app): run `tuneloop forget` again with the app stopped to finish."""
    import sqlite3

    try:
        # wal_checkpoint answers (busy, log pages, checkpointed pages) rather than raising: busy = 1 means a
        # reader kept old frames, which may still hold erased bytes.
        if db.execute("pragma wal_checkpoint(TRUNCATE)").fetchone()[0]:
            return False
        db.execute("vacuum")
        return not db.execute("pragma wal_checkpoint(TRUNCATE)").fetchone()[0]
    except sqlite3.OperationalError:
        return False


def tombstones(db: Database, *, version: str | None = None) -> list[dict]:
    """Erasures, newest first (optionally those that touched dataset version "name@N"); never the erased value."""
    out = []
    for row in db.query("select * from erasures order by id desc"):
        versions = json.loads(row["versions"] or "[]")
        if version is None or version in versions:
            out.append({"id": row["id"], "at": row["at"], "by": row["by"], "kind": row["kind"],
                        "versions": versions, "adapters": json.loads(row["adapters"] or "[]"),
                        "plan": json.loads(row["plan"] or "{}")})
    return out
