"""Generation defaults stored per served model: temperature, answer length and system prompt.

They belong to an adapter (or the base model, or a deployment name): the chat tabs start from them and
the /v1 API fills them in when a client does not set them, so the same adapter answers alike in the app
and over the API. A field left None falls back to the app's default (serving.generation).

    .venv/bin/python -m pytest tests/test_generation_defaults.py -q
"""

from __future__ import annotations

from sqlite_utils import Database

from store.db import now

FIELDS = ("temperature", "max_tokens", "system_prompt")


def get_defaults(db: Database, model: str) -> dict:
    """{"temperature", "max_tokens", "system_prompt"} stored for `model` (values None where unset)."""
    rows = list(db.query("select * from generation_defaults where model = ?", [model]))
    return {k: rows[0][k] for k in FIELDS} if rows else dict.fromkeys(FIELDS)


def set_defaults(db: Database, model: str, *, by: str = "", **values) -> dict:
    """Store the given fields for `model` (others keep their stored value); returns what is stored now.
    A value of None clears that field (back to the app's default)."""
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown generation default(s): {', '.join(sorted(unknown))}")
    row = {**get_defaults(db, model), **values, "model": model, "updated_at": now(), "updated_by": by}
    db["generation_defaults"].upsert(row, pk="model")
    return get_defaults(db, model)
