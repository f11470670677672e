"""The text indexes of `SqliteStore`: an FTS5 table of words and its members' scores.

`text_members` gives each (index, member) a row id and a score; `text_words` is an FTS5
table whose row with that id holds the member's words (`text.words`), space-separated.
The words are already folded, so FTS5's ``ascii`` tokenizer (which splits on ASCII
spaces and punctuation and keeps every other character) gives back exactly those words;
``detail=none`` keeps no positions, as a query is a set of words, never a phrase.

A query is built from the query's words only, each one double-quoted, so nothing a user
types can be FTS5 syntax (``NEAR(``, ``*``, ``"``, ``OR``): a word is letters and digits.

A query runs one of two plans, chosen by how many members match (counted up to `FEW`,
which costs a fraction of a millisecond): few matches are all read and sorted by score;
many are found by walking the members in score order, newest first, and keeping those in
the set of matches, which stops after a page. Over 1,000,000 messages, reading 160,000
matches of a common word and sorting them took 160 ms, the walk 38 ms; for one match the
walk took 240 ms, reading it 0.03 ms (bench scenario `search`). The plans are forced
(``NOT INDEXED``, ``INDEXED BY``), since SQLite cannot know how many rows a MATCH gives.

The writes run inside the writer's transaction, the reads on a reader connection.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Final

from tidings.engine.store.base import TextEntry
from tidings.engine.store.sqlite_rows import by_index
from tidings.engine.store.text import words

FEW: Final = 2_000
"""Up to this many matches a query reads them all; beyond, it walks the members by score."""

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS text_members (
    id INTEGER PRIMARY KEY,
    idx TEXT NOT NULL,
    member TEXT NOT NULL,
    score REAL NOT NULL,
    UNIQUE (idx, member)
);
CREATE INDEX IF NOT EXISTS text_members_by_score ON text_members (idx, score, member);
CREATE VIRTUAL TABLE IF NOT EXISTS text_words USING fts5(
    words, tokenize='ascii', detail=none, columnsize=0
);
"""


def write(conn: sqlite3.Connection, changes: dict[tuple[str, str], TextEntry | None]) -> None:
    """Put each (index, member) of `changes` into its text index with the entry's score
    and words, replacing its old ones, or take it out where the entry is None.

    The members' row ids are read first, all at once; a new member gets the next free
    id (as SQLite would give it: the writer holds the write lock), so that every kind
    of change is one statement for all members.
    """
    ids = _ids(conn, list(changes))
    gone: list[tuple[int]] = []  # members taken out, and those whose words change
    taken_out: list[tuple[int]] = []
    moved: list[tuple[float, int]] = []
    added: list[tuple[int, str, str, float]] = []
    worded: list[tuple[int, str]] = []
    next_id = 0
    for key, entry in changes.items():
        rowid = ids.get(key)
        if rowid is not None:
            gone.append((rowid,))
        if entry is None:
            if rowid is not None:
                taken_out.append((rowid,))
            continue
        if rowid is None:
            if not next_id:
                next_id = conn.execute(
                    "SELECT COALESCE(MAX(id), 0) + 1 FROM text_members"
                ).fetchone()[0]
            rowid, next_id = next_id, next_id + 1
            added.append((rowid, entry.index, entry.member, entry.score))
        else:
            moved.append((entry.score, rowid))
        worded.append((rowid, " ".join(entry.words)))
    if gone:
        conn.executemany("DELETE FROM text_words WHERE rowid=?", gone)
    if taken_out:
        conn.executemany("DELETE FROM text_members WHERE id=?", taken_out)
    if moved:
        conn.executemany("UPDATE text_members SET score=? WHERE id=?", moved)
    if added:
        conn.executemany(
            "INSERT INTO text_members (id, idx, member, score) VALUES (?, ?, ?, ?)", added
        )
    if worded:
        conn.executemany("INSERT INTO text_words (rowid, words) VALUES (?, ?)", worded)


def _ids(conn: sqlite3.Connection, members: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """The row id of each (index, member) of `members` that has one."""
    sql = "SELECT member, id FROM text_members WHERE idx=? AND member IN ({marks})"
    return {(index, row[0]): row[1] for index, row in by_index(conn, sql, members)}


def match_expression(query: str) -> str:
    """The FTS5 query for "every word of `query`": the words, each quoted; "" for none."""
    return " ".join('"' + w.replace('"', '""') + '"' for w in words(query))


def query(
    conn: sqlite3.Connection,
    index: str,
    text: str,
    limit: int,
    after: tuple[float, str] | None,
) -> list[tuple[str, float]]:
    expression = match_expression(text)
    if not expression:
        return []
    (found,) = conn.execute(
        "SELECT count(*) FROM (SELECT rowid FROM text_words WHERE text_words MATCH ? LIMIT ?)",
        (expression, FEW + 1),
    ).fetchone()
    if found == 0:
        return []
    params: list[Any]
    if found <= FEW:
        sql = (
            "SELECT m.member, m.score FROM text_words w"
            " JOIN text_members m NOT INDEXED ON m.id = w.rowid"
            " WHERE text_words MATCH ? AND m.idx = ?"
        )
        params = [expression, index]
    else:
        sql = (
            "SELECT m.member, m.score FROM text_members m INDEXED BY text_members_by_score"
            " WHERE m.idx = ? AND m.id IN (SELECT rowid FROM text_words WHERE text_words MATCH ?)"
        )
        params = [index, expression]
    if after is not None:
        # The redundant `score <= ?` gives the walk an index range to seek to.
        score, member = after
        sql += " AND m.score <= ? AND (m.score < ? OR m.member < ?)"
        params += [score, score, member]
    sql += " ORDER BY m.score DESC, m.member DESC LIMIT ?"
    params.append(limit)
    return conn.execute(sql, params).fetchall()
