"""Registered base models: local model directories users can train on, with what their check found.

    add_base_model(db, name="qwen-0.5b", path="/models/qwen", architecture="Qwen2ForCausalLM", max_len=32768,
                   check={...}, by="ana")
    list_base_models(db); get_base_model(db, "qwen-0.5b"); remove_base_model(db, "qwen-0.5b")

The rules (what may be registered, the default model first) are training.base_models'.
"""

from __future__ import annotations

import json

from sqlite_utils import Database

from store.db import now


class BaseModelNotFound(LookupError):
    pass


class BaseModelExists(ValueError):
    pass


def add_base_model(db: Database, *, name: str, path: str, architecture: str, max_len: int | None, check: dict,
                   by: str = "") -> int:
    for col, value in (("name", name), ("path", path)):
        row = db.execute(f"select name from base_models where {col} = ?", [value]).fetchone()
        if row:
            raise BaseModelExists(f"{path} is registered already as {row[0]!r}" if col == "path"
                                  else f"a base model named {name!r} is registered already")
    return db["base_models"].insert({"name": name, "path": path, "architecture": architecture, "max_len": max_len,
                                     "check": json.dumps(check, sort_keys=True), "added_at": now(),
                                     "added_by": by}).last_pk


def list_base_models(db: Database) -> list[dict]:
    """Registered base models, oldest first."""
    return [_decode(r) for r in db.query("select * from base_models order by id")]


def get_base_model(db: Database, name: str) -> dict:
    rows = list(db.query("select * from base_models where name = ?", [name]))
    if not rows:
        raise BaseModelNotFound(f"no base model named {name!r} (see `tuneloop models`)")
    return _decode(rows[0])


def find_base_model_by_path(db: Database, path: str) -> dict | None:
    rows = list(db.query("select * from base_models where path = ?", [path]))
    return _decode(rows[0]) if rows else None


def remove_base_model(db: Database, name: str) -> None:
    get_base_model(db, name)
    db.execute("delete from base_models where name = ?", [name])


def _decode(row: dict) -> dict:
    return {**row, "check": json.loads(row.get("check") or "{}")}
