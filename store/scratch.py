"""Temporary SQLite tables on disk for more rows than fit in memory: sorting (CSV imports group rows by
conversation) and lookup by key (reply-linked imports follow chains by id)."""

from __future__ import annotations

import sqlite3
from typing import Iterable, Iterator


class ScratchSort:
    """Rows of `width` values, added in batches and read back ordered by some of their columns.

    SQLite's "" database is a private temporary file that spills to disk, so memory stays flat
    however long the input is; it is deleted on close.
    """

    def __init__(self, width: int):
        self.width = width
        self._db = sqlite3.connect("")
        self._db.execute(f"create table r ({', '.join(f'c{i}' for i in range(width))})")

    def add(self, rows: Iterable[tuple]) -> None:
        self._db.executemany(f"insert into r values ({', '.join('?' * self.width)})", rows)

    def ordered(self, by: Iterable[int]) -> Iterator[tuple]:
        return self._db.execute(f"select * from r order by {', '.join(f'c{int(i)}' for i in by)}")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "ScratchSort":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ScratchIndex:
    """Rows of `width` values looked up by a text key (reply-linked imports follow chains by id).

    Like ScratchSort, a private temporary SQLite database that spills to disk and is deleted on close.
    """

    def __init__(self, width: int):
        self.width = width
        self._db = sqlite3.connect("")
        cols = ", ".join(f"c{i}" for i in range(width))
        self._db.execute(f"create table r (k text primary key, {cols})")

    def add(self, rows: Iterable[tuple]) -> None:
        """Add (key, value1, ... value_width) rows; a key already present keeps its first row."""
        self._db.executemany(f"insert or ignore into r values (?, {', '.join('?' * self.width)})", rows)

    def get(self, key: str) -> tuple | None:
        row = self._db.execute("select * from r where k = ?", [key]).fetchone()
        return row[1:] if row else None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "ScratchIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
