"""Open the SQLite database: WAL, a busy timeout, foreign keys, and the schema migrated.

Open one `Database` per call site (a request handler, a CLI command, the trainer process):
sqlite-utils connections may only be used in the thread that opened them.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from sqlite_utils import Database

from store.migrations import migrations

BUSY_TIMEOUT_MS = 30_000


def open_db(path: Path | str) -> Database:
    """A connection to the database at `path`, created and migrated on first use."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000)
    db = Database(conn)
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    db.execute("PRAGMA foreign_keys = ON")
    _enable_wal(db)
    if migrations.pending(db):
        # Take the write lock before re-checking, so connections opening a new database at the
        # same moment wait for the first one's migrations instead of racing it.
        with write_transaction(db):
            migrations.apply(db)
    return db


def _enable_wal(db: Database) -> None:
    """Switch the file to WAL (once per file; it persists).

    The switch needs a lock that SQLite's busy handler does not always wait for: when several
    connections open a new database at the same moment, one can get "database is locked" at once.
    So retry until the busy timeout, re-reading the mode (another connection may have switched it).
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while db.journal_mode != "wal":
        try:
            db.enable_wal()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@contextmanager
def connect(path: Path | str) -> Iterator[Database]:
    """`with connect(settings.db_path) as db:` opens, yields and always closes a connection."""
    db = open_db(path)
    try:
        yield db
    finally:
        db.close()


def now() -> str:
    """The timestamp format every table uses: ISO 8601 in UTC, sortable as text."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@contextmanager
def write_transaction(db: Database) -> Iterator[Database]:
    """`db.atomic()`, but taking the write lock up front (BEGIN IMMEDIATE).

    A deferred transaction that reads and then writes fails at once with "database is locked" when
    another connection wrote in between (WAL snapshots cannot be upgraded); an immediate one waits
    for the busy timeout instead. Use it for read-then-write work that several users do at once.
    Inside an open transaction it is a savepoint, like `db.atomic()`.
    """
    if db.conn.in_transaction:
        with db.atomic():
            yield db
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.rollback()
        raise
    else:
        db.execute("COMMIT")


def open_shared(path: Path | str) -> Database:
    """Like `open_db`, but usable from any thread: for the API's small reads on every request (key checks,
    deployment settings), where opening a connection each time would cost more than the read. Callers
    serialise their use of it (one lock per connection)."""
    open_db(path).close()  # created and migrated
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    db = Database(conn)
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    db.execute("PRAGMA foreign_keys = ON")
    return db
