"""Named API keys (store/api_keys.py): hashed, listed, revoked, counted; TUNELOOP_API_KEY is the key "default"."""

from __future__ import annotations

import pytest

from store.api_keys import (ApiKeyError, create_key, find_key, has_keys, list_keys, record_usage, revoke_key,
                            sync_env_key)
from store.db import connect


@pytest.fixture
def db(tmp_path):
    with connect(tmp_path / "t.db") as db:
        yield db


def test_created_key_is_found_by_itself_only_and_stored_hashed(db):
    key = create_key(db, "helpdesk", by="ana")
    assert key.startswith("tlk_") and len(key) > 40
    assert find_key(db, key) == {"name": "helpdesk", "source": "created", "revoked_at": None}
    assert find_key(db, key + "x") is None and find_key(db, key[:-1]) is None and find_key(db, "") is None
    dump = "\n".join(str(row) for row in db.execute("select * from api_keys"))
    assert key not in dump and key.split("_")[-1] not in dump
    assert list_keys(db)[0]["name"] == "helpdesk" and "hash" not in list_keys(db)[0]


def test_names_are_checked_and_unique(db):
    create_key(db, "a")
    for bad in ("a", "", "has space", "default", "x" * 80):
        with pytest.raises(ApiKeyError):
            create_key(db, bad)


def test_revoked_key_is_reported_revoked_at_once(db):
    key = create_key(db, "widget")
    revoke_key(db, "widget", by="ana")
    assert find_key(db, key)["revoked_at"] is not None
    assert not has_keys(db)
    with pytest.raises(ApiKeyError, match="revoked already"):
        revoke_key(db, "widget")
    with pytest.raises(ApiKeyError, match="no API key"):
        revoke_key(db, "nope")


def test_env_key_is_the_default_key_and_follows_the_setting(db):
    sync_env_key(db, "s3cret")
    assert find_key(db, "s3cret")["name"] == "default"
    revoke_key(db, "default")
    sync_env_key(db, "s3cret")  # same key at the next start: stays revoked
    assert find_key(db, "s3cret")["revoked_at"] is not None
    sync_env_key(db, "n3w")  # a new TUNELOOP_API_KEY is a new key
    assert find_key(db, "s3cret") is None and find_key(db, "n3w")["revoked_at"] is None


def test_usage_counts_add_up(db):
    create_key(db, "k")
    record_usage(db, {"k": (3, "2026-01-01T00:00:00.000+00:00")})
    record_usage(db, {"k": (2, "2025-01-01T00:00:00.000+00:00")})
    row = list_keys(db)[0]
    assert row["use_count"] == 5 and row["last_used_at"].startswith("2026")
