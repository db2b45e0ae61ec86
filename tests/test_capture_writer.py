"""The capture writer (serving/capture.py): batches, waits out a busy database, flushes on close."""

from __future__ import annotations

import sqlite3
import threading
import time

from serving.capture import CaptureWriter, retention_cutoff
from store.db import connect


def row(i: int) -> dict:
    return {"id": f"c{i}", "created_at": "2026-03-01T10:00:00.000+00:00", "model": "base", "status": "complete",
            "messages": [{"role": "user", "content": f"q{i}"}], "answer": f"a{i}"}


def stored(path) -> int:
    with connect(path) as db:
        return db.execute("select count(*) from traffic").fetchone()[0]


def test_submit_returns_at_once_and_close_flushes_everything(tmp_path):
    path = tmp_path / "t.db"
    w = CaptureWriter(path, idle_wait_s=5.0, batch=50)
    for i in range(333):
        w.submit(row(i))
    w.count_use("default")
    w.close()
    assert stored(path) == 333 and w.written == 333 and w.pending == 0


def test_a_busy_database_makes_the_queue_wait_and_nothing_is_lost(tmp_path, monkeypatch):
    import serving.capture as capture

    path = tmp_path / "t.db"
    with connect(path):
        pass
    monkeypatch.setattr(capture, "BUSY_RETRY_S", 0.01)
    real = capture.save_captures
    busy = {"left": 5}

    def flaky(db, rows):
        if busy["left"]:
            busy["left"] -= 1
            raise sqlite3.OperationalError("database is locked")
        return real(db, rows)

    monkeypatch.setattr(capture, "save_captures", flaky)
    w = CaptureWriter(path, idle_wait_s=0.01, batch=10)
    for i in range(100):
        w.submit(row(i))
    assert w.flush(timeout=30)
    w.close()
    assert busy["left"] == 0 and stored(path) == 100


def test_a_locked_database_holds_rows_until_the_lock_goes(tmp_path, monkeypatch):
    import serving.capture as capture
    import store.db as store_db

    path = tmp_path / "t.db"
    with connect(path):
        pass
    monkeypatch.setattr(store_db, "BUSY_TIMEOUT_MS", 50)
    monkeypatch.setattr(capture, "BUSY_RETRY_S", 0.01)
    holder = sqlite3.connect(path)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    w = CaptureWriter(path, idle_wait_s=0.01)
    for i in range(20):
        w.submit(row(i))
    time.sleep(0.5)
    assert stored(path) == 0 and w.pending + 20 >= 20
    holder.rollback()
    holder.close()
    assert w.flush(timeout=30)
    w.close()
    assert stored(path) == 20


def test_one_bad_row_does_not_block_its_batch(tmp_path):
    path = tmp_path / "t.db"
    w = CaptureWriter(path, idle_wait_s=0.01)
    w.submit(row(1))
    w.submit({**row(2), "status": "nonsense"})
    w.submit(row(3))
    w.close()
    assert stored(path) == 2 and w.failed == 1


def test_submit_from_many_threads(tmp_path):
    path = tmp_path / "t.db"
    w = CaptureWriter(path, idle_wait_s=0.01, batch=7)
    threads = [threading.Thread(target=lambda k=k: [w.submit(row(k * 1000 + i)) for i in range(50)])
               for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    assert stored(path) == 400


def test_periodic_prune_runs_in_the_writer(tmp_path):
    path = tmp_path / "t.db"
    w = CaptureWriter(path, retention_days=1, idle_wait_s=0.01, prune_every_s=0.0)
    w.submit({**row(1), "created_at": "2020-01-01T00:00:00.000+00:00"})
    w.flush()
    w._maybe_prune()
    w.close()
    assert stored(path) == 0
    assert retention_cutoff(1) < retention_cutoff(0)


def test_a_failed_write_puts_its_batch_and_counts_back_and_a_later_try_stores_them(tmp_path, monkeypatch):
    import serving.capture as capture

    from store.api_keys import sync_env_key

    path = tmp_path / "t.db"
    with connect(path) as db:
        sync_env_key(db, "secret")  # the key named "default"
    real = capture.save_captures
    broken = {"left": 2}

    def failing(db, rows):
        if broken["left"]:
            broken["left"] -= 1
            raise sqlite3.OperationalError("disk I/O error")  # not "busy": the batch used to be lost here
        return real(db, rows)

    monkeypatch.setattr(capture, "save_captures", failing)
    monkeypatch.setattr(capture, "BUSY_RETRY_S", 0.01)
    w = CaptureWriter(path, idle_wait_s=0.01, batch=10)
    for i in range(25):
        w.submit(row(i))
    w.count_use("default")
    assert w.flush(timeout=30)
    w.close()
    assert broken["left"] == 0 and stored(path) == 25
    with connect(path) as db:
        assert db.execute("select use_count from api_keys where name = 'default'").fetchone() == (1,)  # counted once
