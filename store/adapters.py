"""The adapter registry: every adapter training produced, its lineage, and whether it is archived.

Whether an adapter is loaded is not stored: the serving server's /v1/models is the truth for that.
"""

from __future__ import annotations

import json
import re

from sqlite_utils import Database

from store.db import now

# Names become vLLM model ids and folder names: keep them to a safe, URL-friendly alphabet.
ADAPTER_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


class AdapterNotFound(LookupError):
    pass


def validate_adapter_name(name: str, base_model_name: str | None = None) -> str:
    if not ADAPTER_NAME_RE.match(name) or ".." in name:
        raise ValueError(
            f"adapter name {name!r} is not allowed: use 1-63 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if base_model_name is not None and name == base_model_name:
        raise ValueError(f"adapter name {name!r} is the base model's name; choose another")
    return name


def slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return (s or "adapter")[:40]


def next_version(db: Database, family: str) -> int:
    row = db.execute("select max(version) from adapters where family = ?", [family]).fetchone()
    return (row[0] or 0) + 1


def family_for(dataset_spec: str, parent: dict | None) -> str:
    """The family a run's adapter joins: its parent's, or the dataset's name as a slug ("support@2" -> "support")."""
    return parent["family"] if parent else slug(dataset_spec.partition("@")[0])


def automatic_name(db: Database, family: str) -> str:
    """The name a run's adapter gets when none is given: "<family>-v<next version>" (training.worker)."""
    return f"{family}-v{next_version(db, family)}"


def register_adapter(db: Database, *, name: str, family: str, version: int, base_model: str, path: str,
                     rank: int, run_id: int | None, dataset_version_id: int | None,
                     parent_id: int | None, meta: dict | None = None) -> int:
    validate_adapter_name(name)
    return db["adapters"].insert({
        "name": name, "family": family, "version": version, "base_model": base_model, "path": path,
        "rank": rank, "run_id": run_id, "dataset_version_id": dataset_version_id, "parent_id": parent_id,
        "status": "available", "meta": json.dumps(meta or {}), "created_at": now(),
    }).last_pk


def get_adapter(db: Database, name_or_id: str | int) -> dict:
    col = "id" if isinstance(name_or_id, int) else "name"
    rows = list(db.query(f"select * from adapters where {col} = ?", [name_or_id]))
    if not rows:
        raise AdapterNotFound(f"no adapter named {name_or_id!r} (see `tuneloop adapters`)")
    return _decode(rows[0])


def list_adapters(db: Database, *, include_archived: bool = True) -> list[dict]:
    where = "" if include_archived else "where status != 'archived'"
    return [_decode(r) for r in db.query(f"select * from adapters {where} order by id desc")]


def set_status(db: Database, name: str, status: str) -> None:
    if status not in ("available", "archived"):
        raise ValueError(f"unknown adapter status {status!r}")
    get_adapter(db, name)
    db.execute("update adapters set status = ? where name = ?", [status, name])


def _decode(row: dict) -> dict:
    return {**row, "meta": json.loads(row.get("meta") or "{}")}


def set_load_error(db: Database, name: str, error: str | None) -> None:
    """Remember why serving could not load an adapter (kept in meta["load_error"]); None clears it."""
    row = get_adapter(db, name)
    meta = row["meta"]
    if (meta.get("load_error") or None) == (error or None):
        return
    if error:
        meta.update(load_error=error, load_error_at=now())
    else:
        meta.pop("load_error", None)
        meta.pop("load_error_at", None)
    db["adapters"].update(row["id"], {"meta": json.dumps(meta)})


def adapter_overview(db: Database) -> dict[int, dict]:
    """Per adapter id: the dataset version it was trained on ("name@N"), its parent's name, its run's metrics."""
    rows = db.query("""select a.id, d.name || '@' || v.version as trained_on, p.name as parent, r.metrics
                       from adapters a left join dataset_versions v on v.id = a.dataset_version_id
                       left join datasets d on d.id = v.dataset_id left join adapters p on p.id = a.parent_id
                       left join runs r on r.id = a.run_id""")
    return {r["id"]: {**r, "metrics": json.loads(r["metrics"] or "{}")} for r in rows}
