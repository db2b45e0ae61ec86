"""Named API keys for /v1: created, listed, revoked, checked, with usage counts; only salted hashes are stored.

A created key reads `tlk_<lookup>_<secret>`: `lookup` finds its row, the whole key is checked against
the row's HMAC-SHA256(salt, key) in constant time. Keys are long random strings, so a fast salted
hash is enough (a password hash would slow every request and protect nothing more). TUNELOOP_API_KEY
is the key named "default" (`sync_env_key` keeps its row in step with the setting), so it is listed,
counted and can be revoked like the others.

    key = create_key(db, "helpdesk-widget", by="ana")     # shown once; only the hash is kept
    find_key(db, key)["name"]                              # "helpdesk-widget" (None when no such key)
    revoke_key(db, "helpdesk-widget", by="ana")
    .venv/bin/python -m pytest tests/test_api_keys.py -q
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Mapping

from sqlite_utils import Database

from store.db import now, write_transaction

ENV_KEY_NAME = "default"
PREFIX = "tlk_"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# The env key's row has no lookup id of its own (any text is a valid TUNELOOP_API_KEY).
_ENV_LOOKUP = "env"


class ApiKeyError(ValueError):
    """A key that cannot be created or revoked as asked; `field` is "name"."""

    def __init__(self, reason: str, field: str = "name"):
        self.field = field
        super().__init__(reason)


def key_hash(salt: str, key: str) -> str:
    return hmac.new(salt.encode(), key.encode(), hashlib.sha256).hexdigest()


def split_key(key: str) -> str | None:
    """The lookup id of a created key (`tlk_<lookup>_<secret>`), or None for any other text."""
    if not key.startswith(PREFIX):
        return None
    lookup, sep, secret = key[len(PREFIX):].partition("_")
    return lookup if sep and lookup and secret else None


def validate_key_name(name: str) -> str:
    name = (name or "").strip()
    if not NAME_RE.match(name):
        raise ApiKeyError(f"key name {name!r} is not allowed: use 1-63 letters, digits, '.', '_' or '-'")
    return name


def create_key(db: Database, name: str, *, by: str = "") -> str:
    """A new key named `name`; returns the key itself, which is stored only as a hash (show it once)."""
    name = validate_key_name(name)
    if name == ENV_KEY_NAME:
        raise ApiKeyError(f"{ENV_KEY_NAME!r} is TUNELOOP_API_KEY's name; choose another")
    lookup, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), secrets.token_hex(16)
    key = f"{PREFIX}{lookup}_{secret}"
    with write_transaction(db):
        if db.execute("select 1 from api_keys where name = ?", [name]).fetchone():
            raise ApiKeyError(f"a key named {name!r} exists already (revoked keys keep their name): choose another")
        db["api_keys"].insert({"name": name, "lookup": lookup, "salt": salt, "hash": key_hash(salt, key),
                               "source": "created", "created_at": now(), "created_by": by})
    return key


def sync_env_key(db: Database, env_key: str) -> None:
    """Keep the "default" key's row in step with TUNELOOP_API_KEY: created on first use, re-hashed (and
    un-revoked, being a new key) when the setting changes, left alone (revoked or not) while it is the same."""
    if not env_key:
        return
    with write_transaction(db):
        row = db.execute("select salt, hash from api_keys where name = ?", [ENV_KEY_NAME]).fetchone()
        if row is not None and hmac.compare_digest(row[1], key_hash(row[0], env_key)):
            return
        salt = secrets.token_hex(16)
        if row is None:
            db["api_keys"].insert({"name": ENV_KEY_NAME, "lookup": _ENV_LOOKUP, "salt": salt,
                                   "hash": key_hash(salt, env_key), "source": "env", "created_at": now(),
                                   "created_by": "TUNELOOP_API_KEY"})
        else:
            db.execute("update api_keys set salt = ?, hash = ?, revoked_at = null, revoked_by = null "
                       "where name = ?", [salt, key_hash(salt, env_key), ENV_KEY_NAME])


def find_key(db: Database, key: str) -> dict | None:
    """The key `key` is: {"name", "source", "revoked_at"} (check `revoked_at`!), or None when it is no key."""
    if not key:
        return None
    lookup = split_key(key) or _ENV_LOOKUP
    row = db.execute("select name, salt, hash, source, revoked_at from api_keys where lookup = ?",
                     [lookup]).fetchone()
    if row is None or not hmac.compare_digest(row[2], key_hash(row[1], key)):
        return None
    return {"name": row[0], "source": row[3], "revoked_at": row[4]}


def has_keys(db: Database) -> bool:
    """Whether any key can be used (the API is off without one)."""
    return db.execute("select 1 from api_keys where revoked_at is null limit 1").fetchone() is not None


def revoke_key(db: Database, name: str, *, by: str = "") -> None:
    with write_transaction(db):
        row = db.execute("select revoked_at from api_keys where name = ?", [name]).fetchone()
        if row is None:
            raise ApiKeyError(f"no API key named {name!r} (see `tuneloop keys`)")
        if row[0] is not None:
            raise ApiKeyError(f"key {name!r} was revoked already ({row[0]})")
        db.execute("update api_keys set revoked_at = ?, revoked_by = ? where name = ?", [now(), by, name])


def list_keys(db: Database) -> list[dict]:
    """Every key (never the key or its hash): name, source, created, revoked, use count, last use."""
    return list(db.query("""select name, source, created_at, created_by, revoked_at, revoked_by, use_count,
                                   last_used_at from api_keys order by created_at, id"""))


def record_usage(db: Database, usage: Mapping[str, tuple[int, str]]) -> None:
    """Add {key name: (requests, last use ISO time)} to the keys' counts (the capture writer batches them)."""
    if not usage:
        return
    with write_transaction(db):
        db.conn.executemany(
            "update api_keys set use_count = use_count + ?, last_used_at = max(coalesce(last_used_at, ''), ?) "
            "where name = ?", [(n, at, name) for name, (n, at) in usage.items()])
