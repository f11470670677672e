"""The sorted indexes with tags of `SqliteStore`: their tables and statements.

A member of an index has a score and a set of tags. `index_members` holds each member
once; `index_tags` holds one row per (tag, member), ordered by score, so a query walks the
rows of its rarest tag in score order and keeps those that have the other tags. Counts
per index, per tag and per pair of tags are kept up to date by every write, so that
`count` for zero, one or two tags (the inbox's tab counters) reads one row.

The writes run inside the writer's transaction, the reads on a reader connection.
"""

from __future__ import annotations

import itertools
import sqlite3
from typing import Any, Final

import msgspec

from tidings.engine.store.base import IndexEntry

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS index_members (
    idx TEXT NOT NULL,
    member TEXT NOT NULL,
    score REAL NOT NULL,
    tags BLOB NOT NULL,
    PRIMARY KEY (idx, member)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS index_members_by_score ON index_members (idx, score, member);
CREATE TABLE IF NOT EXISTS index_tags (
    idx TEXT NOT NULL,
    tag TEXT NOT NULL,
    score REAL NOT NULL,
    member TEXT NOT NULL,
    PRIMARY KEY (idx, tag, score, member)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS index_tag_counts (
    idx TEXT NOT NULL,
    tag TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (idx, tag)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS index_pair_counts (
    idx TEXT NOT NULL,
    tag_a TEXT NOT NULL,
    tag_b TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (idx, tag_a, tag_b)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS index_sizes (
    idx TEXT PRIMARY KEY,
    n INTEGER NOT NULL
) WITHOUT ROWID;
"""

_tags_encoder = msgspec.json.Encoder()
_tags_decoder = msgspec.json.Decoder(list[str])


# -- writes --------------------------------------------------------------------------


def put(conn: sqlite3.Connection, entry: IndexEntry) -> None:
    """Put `entry`'s member into its index with its score and tags (replacing its old ones).

    One read of the member's row decides: a member that keeps its tags (a ticket's last
    activity moves, its state does not) is moved to its new score by two updates, or
    left alone when the score is the same too; a new member is inserted; one whose tags
    change is removed and inserted again.
    """
    index, member, score = entry.index, entry.member, entry.score
    tags = sorted(entry.tags)
    encoded = _tags_encoder.encode(tags)
    row = _row(conn, index, member)
    if row is not None:
        old_score, old_encoded = row
        old_tags = tags if old_encoded == encoded else sorted(_tags_decoder.decode(old_encoded))
        if old_tags == tags:
            if old_score != score:
                conn.execute(
                    "UPDATE index_members SET score=? WHERE idx=? AND member=?",
                    (score, index, member),
                )
                if tags:
                    conn.executemany(
                        "UPDATE index_tags SET score=?"
                        " WHERE idx=? AND tag=? AND score=? AND member=?",
                        [(score, index, tag, old_score, member) for tag in tags],
                    )
            return
        _remove(conn, index, member, old_score, old_tags)
    conn.execute(
        "INSERT INTO index_members (idx, member, score, tags) VALUES (?, ?, ?, ?)",
        (index, member, score, encoded),
    )
    if tags:
        conn.executemany(
            "INSERT INTO index_tags (idx, tag, score, member) VALUES (?, ?, ?, ?)",
            [(index, tag, score, member) for tag in tags],
        )
    _adjust_counts(conn, index, tags, +1)


def _row(conn: sqlite3.Connection, index: str, member: str) -> tuple[float, bytes] | None:
    """The (score, encoded tags) of `member` in `index`, or None."""
    row: tuple[float, bytes] | None = conn.execute(
        "SELECT score, tags FROM index_members WHERE idx=? AND member=?", (index, member)
    ).fetchone()
    return row


def delete(conn: sqlite3.Connection, index: str, member: str) -> None:
    row = _row(conn, index, member)
    if row is not None:
        _remove(conn, index, member, row[0], sorted(_tags_decoder.decode(row[1])))


def _remove(
    conn: sqlite3.Connection, index: str, member: str, score: float, tags: list[str]
) -> None:
    """Take out `member`, found with `score` and (sorted) `tags`."""
    conn.execute("DELETE FROM index_members WHERE idx=? AND member=?", (index, member))
    if tags:
        conn.executemany(
            "DELETE FROM index_tags WHERE idx=? AND tag=? AND score=? AND member=?",
            [(index, tag, score, member) for tag in tags],
        )
    _adjust_counts(conn, index, tags, -1)


def _adjust_counts(conn: sqlite3.Connection, index: str, tags: list[str], delta: int) -> None:
    """Keep the member counts per index, per tag and per pair of tags (`tags` sorted).

    They pick the rarest tag to walk in a query and answer `index_count` for zero, one or
    two tags without a scan (the inbox's tab counters are such counts); the price is
    k(k-1)/2 small upserts for a member with k tags.
    """
    conn.execute(
        "INSERT INTO index_sizes (idx, n) VALUES (?, ?)"
        " ON CONFLICT (idx) DO UPDATE SET n = n + excluded.n",
        (index, delta),
    )
    if tags:
        conn.executemany(
            "INSERT INTO index_tag_counts (idx, tag, n) VALUES (?, ?, ?)"
            " ON CONFLICT (idx, tag) DO UPDATE SET n = n + excluded.n",
            [(index, tag, delta) for tag in tags],
        )
    if len(tags) > 1:
        conn.executemany(
            "INSERT INTO index_pair_counts (idx, tag_a, tag_b, n) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (idx, tag_a, tag_b) DO UPDATE SET n = n + excluded.n",
            [(index, a, b, delta) for a, b in itertools.combinations(tags, 2)],
        )


# -- reads ---------------------------------------------------------------------------


def _tag_counts(
    conn: sqlite3.Connection, index: str, tags: frozenset[str]
) -> list[tuple[str, int]]:
    """(tag, member count) for `tags`, smallest first; a tag nobody has counts 0."""
    marks = ",".join("?" * len(tags))
    have = dict(
        conn.execute(
            f"SELECT tag, n FROM index_tag_counts WHERE idx=? AND tag IN ({marks})",
            (index, *tags),
        )
    )
    return sorted(((t, have.get(t, 0)) for t in tags), key=lambda tn: (tn[1], tn[0]))


def query(
    conn: sqlite3.Connection,
    index: str,
    tags: frozenset[str],
    limit: int,
    descending: bool,
    after: tuple[float, str] | None,
) -> list[tuple[str, float]]:
    cmp, order = ("<", "DESC") if descending else (">", "ASC")
    params: list[Any] = [index]
    if not tags:
        sql = "SELECT member, score FROM index_members t WHERE t.idx=?"
    else:
        counts = _tag_counts(conn, index, tags)
        if counts[0][1] == 0:
            return []
        # Walk the rarest tag's rows in score order and keep those that have the others.
        sql = "SELECT member, score FROM index_tags t WHERE t.idx=? AND t.tag=?"
        params.append(counts[0][0])
        for tag, _ in counts[1:]:
            sql += (
                " AND EXISTS (SELECT 1 FROM index_tags o WHERE o.idx=t.idx AND o.tag=?"
                " AND o.score=t.score AND o.member=t.member)"
            )
            params.append(tag)
    if after is not None:
        # The redundant `score <=/>= ?` gives SQLite an index range to seek to.
        score, member = after
        sql += f" AND t.score {cmp}= ? AND (t.score {cmp} ? OR t.member {cmp} ?)"
        params += [score, score, member]
    sql += f" ORDER BY t.score {order}, t.member {order} LIMIT ?"
    params.append(limit)
    return conn.execute(sql, params).fetchall()


def count(conn: sqlite3.Connection, index: str, tags: frozenset[str]) -> int:
    if not tags:
        n = conn.execute("SELECT n FROM index_sizes WHERE idx=?", (index,)).fetchone()
        return int(n[0]) if n else 0
    counts = _tag_counts(conn, index, tags)
    if len(counts) == 1 or counts[0][1] == 0:
        return counts[0][1]
    if len(counts) == 2:
        a, b = sorted(tags)
        n = conn.execute(
            "SELECT n FROM index_pair_counts WHERE idx=? AND tag_a=? AND tag_b=?", (index, a, b)
        ).fetchone()
        return int(n[0]) if n else 0
    sql = "SELECT COUNT(*) FROM index_tags t WHERE t.idx=? AND t.tag=?"
    params: list[Any] = [index, counts[0][0]]
    for tag, _ in counts[1:]:
        sql += (
            " AND EXISTS (SELECT 1 FROM index_tags o WHERE o.idx=t.idx AND o.tag=?"
            " AND o.score=t.score AND o.member=t.member)"
        )
        params.append(tag)
    return int(conn.execute(sql, params).fetchone()[0])
