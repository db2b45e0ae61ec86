"""A temporary SQLite table on disk for sorting more rows than fit in memory (CSV imports group rows by conversation)."""

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
