"""Named import profiles: import options saved once (a JSON mapping, columns, roles) and reused by name.

The options are kept as the JSON object training.importers.profiles builds; the store does not read them.
Tested in tests/test_import_profiles.py.
"""

from __future__ import annotations

import json

from sqlite_utils import Database

from store.db import now, write_transaction


class ProfileNotFound(LookupError):
    pass


def save_profile(db: Database, name: str, options: dict, note: str = "") -> bool:
    """Save (or replace) the profile `name`; True when it was new."""
    with write_transaction(db):
        row = db.execute("select created_at from import_profiles where name = ?", [name]).fetchone()
        at = now()
        db["import_profiles"].upsert({"name": name, "options": json.dumps(options, ensure_ascii=False),
                                      "note": note, "created_at": row[0] if row else at, "updated_at": at}, pk="name")
    return row is None


def get_profile(db: Database, name: str) -> dict:
    """The saved options of profile `name`; ProfileNotFound lists the profiles there are."""
    row = db.execute("select options from import_profiles where name = ?", [name]).fetchone()
    if row is None:
        known = [r["name"] for r in list_profiles(db)]
        hint = f"saved profiles: {', '.join(known)}" if known else "no profile is saved yet"
        raise ProfileNotFound(f"import profile {name!r} not found ({hint})")
    return json.loads(row[0])


def list_profiles(db: Database) -> list[dict]:
    """Every profile as {"name", "options", "note", "created_at", "updated_at"}, by name."""
    return [{**r, "options": json.loads(r["options"])}
            for r in db.query("select name, options, note, created_at, updated_at from import_profiles order by name")]


def delete_profile(db: Database, name: str) -> bool:
    """Forget profile `name`; False when there was none."""
    with write_transaction(db):
        return bool(db.execute("delete from import_profiles where name = ?", [name]).rowcount)
