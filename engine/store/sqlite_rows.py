"""Reading rows by many values at once in `SqliteStore`: ``... IN (?, ?, ...)``, in chunks.

The writer reads what a whole group of batches needs before writing it (the last record
number of each log appended to, the index rows of each member put), and readers fetch
many keys: one statement per chunk of values, not one per value. A chunk stays far
below SQLite's bound-parameter limit (32766 since 3.32).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any, Final

CHUNK: Final = 500


def select_in(
    conn: sqlite3.Connection, sql: str, params: tuple[Any, ...], values: Sequence[Any]
) -> Iterator[Any]:
    """The rows of `sql` (whose ``{marks}`` stands for the list of `values`, after the
    fixed `params`) over all of `values`, a chunk at a time."""
    for start in range(0, len(values), CHUNK):
        chunk = values[start : start + CHUNK]
        yield from conn.execute(sql.format(marks=",".join("?" * len(chunk))), (*params, *chunk))


def by_index(
    conn: sqlite3.Connection, sql: str, members: list[tuple[str, str]]
) -> Iterator[tuple[str, Any]]:
    """The rows of `sql` (``... WHERE idx=? AND member IN ({marks})``, selecting the
    member first) for each (index, member) of `members`, as (index, row)."""
    by_name: dict[str, list[str]] = {}
    for index, member in members:
        by_name.setdefault(index, []).append(member)
    for index, names in by_name.items():
        for row in select_in(conn, sql, (index,), names):
            yield index, row
