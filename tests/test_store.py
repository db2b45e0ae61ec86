"""Store tests on a real temporary SQLite database: schema, WAL, versions and lineage.

Run: .venv/bin/python -m pytest tests/test_store.py -q
"""

from __future__ import annotations

import sqlite3
import threading

import pytest

from store.adapters import validate_adapter_name
from store.datasets import (
    DatasetNotFound, NewConversation, create_version, iter_version_conversations, list_datasets,
    parse_version_spec, resolve_version, validate_dataset_name,
)
from store.db import open_db


def conv(i: int) -> NewConversation:
    msgs = [{"role": "user", "content": f"Where is order {i}?"},
            {"role": "assistant", "content": f"Order {i} ships tomorrow."}]
    return NewConversation(content_hash=f"h{i}", messages=msgs, source="f.jsonl", source_format="openai")


def test_open_sets_wal_foreign_keys_and_all_tables(db):
    assert db.journal_mode == "wal"
    assert db.execute("pragma foreign_keys").fetchone()[0] == 1
    assert db.execute("pragma busy_timeout").fetchone()[0] >= 5000
    for table in ("datasets", "dataset_versions", "conversations", "version_conversations", "imports",
                  "runs", "run_metrics", "adapters", "chat_sessions", "chat_messages", "ab_turns",
                  "ratings", "version_ratings"):
        assert db[table].exists(), table


def test_reopening_applies_no_migration_twice(data_dir):
    open_db(data_dir / "x.db").close()
    db = open_db(data_dir / "x.db")
    names = [r["name"] for r in db.query("select name from _sqlite_migrations")]
    assert len(names) == len(set(names)) >= 3


def test_versions_are_immutable_and_extend_their_parent(db):
    v1, added, present = create_version(db, "support", [conv(1), conv(2)], sources=[{"file": "a.jsonl"}])
    assert (v1.version, added, present) == (1, 2, 0)
    v2, added, present = create_version(db, "support", [conv(2), conv(3)], sources=[{"file": "b.jsonl"}])
    assert (v2.version, added, present) == (2, 1, 1)
    assert [c["messages"][0]["content"] for c in iter_version_conversations(db, v1.id)] == [
        "Where is order 1?", "Where is order 2?"]
    assert len(list(iter_version_conversations(db, v2.id))) == 3
    [ds] = list_datasets(db)
    assert [v["version"] for v in ds["versions"]] == [2, 1]
    assert ds["versions"][0]["parent"] == "support@1"
    assert ds["versions"][0]["sources"] == [{"file": "b.jsonl"}]
    # Conversations are stored once even when several versions hold them.
    assert db["conversations"].count == 3


def test_failed_import_leaves_database_as_it_was(db):
    create_version(db, "support", [conv(1)])

    def broken():
        yield conv(2)
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        create_version(db, "support", broken())
    assert db["dataset_versions"].count == 1
    assert db["conversations"].count == 1


def test_resolve_version_specs(db):
    create_version(db, "support", [conv(1)])
    create_version(db, "support", [conv(2)])
    assert resolve_version(db, "support").version == 2
    assert resolve_version(db, "support@1").version == 1
    with pytest.raises(DatasetNotFound, match="known datasets: support"):
        resolve_version(db, "billing")
    with pytest.raises(DatasetNotFound):
        resolve_version(db, "support@7")
    assert parse_version_spec("a@3") == ("a", 3)
    with pytest.raises(ValueError, match="positive number"):
        parse_version_spec("a@x")


@pytest.mark.parametrize("bad", ["", "a@b", "../x", "a/b", ".hidden", "x" * 65])
def test_bad_dataset_names_are_refused(bad):
    with pytest.raises(ValueError):
        validate_dataset_name(bad)


@pytest.mark.parametrize("bad", ["", "../etc", "A", "a b", "a/b", "-x", "x" * 64, "a..b"])
def test_bad_adapter_names_are_refused(bad):
    with pytest.raises(ValueError):
        validate_adapter_name(bad)


def test_adapter_name_may_not_be_the_base_name():
    with pytest.raises(ValueError, match="base model"):
        validate_adapter_name("smollm2", base_model_name="smollm2")


def test_concurrent_writers_from_threads_lose_nothing(data_dir):
    """Gradio handlers run in worker threads, each opening its own connection."""
    path = data_dir / "tuneloop.db"
    open_db(path).close()
    errors = []

    def writer(k):
        try:
            db = open_db(path)
            for i in range(20):
                db["datasets"].insert({"name": f"d{k}-{i}", "created_at": "now"})
            db.close()
        except sqlite3.Error as exc:  # pragma: no cover - the assertion reports it
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert open_db(path)["datasets"].count == 80


def test_connections_opening_a_new_database_at_once_all_succeed(data_dir):
    path = data_dir / "fresh.db"
    errors = []

    def opener():
        try:
            open_db(path).close()
        except sqlite3.Error as exc:  # pragma: no cover - the assertion reports it
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
