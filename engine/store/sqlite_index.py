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
from collections import Counter
from typing import Any, Final

import msgspec

from tidings.engine.store.base import IndexEntry
from tidings.engine.store.sqlite_rows import by_index

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


def write(conn: sqlite3.Connection, changes: dict[tuple[str, str], IndexEntry | None]) -> None:
    """Put each (index, member) of `changes` into its index with the entry's score and
    tags, replacing its old ones, or take it out where the entry is None.

    The members' rows are read first, all at once, and decide: a member that keeps its
    tags (a ticket's last activity moves, its state does not) is moved to its new score,
    or left alone when the score is the same too; a new member is inserted; one whose
    tags change is removed and inserted again. The rows are then written one statement
    per kind of change for all members, and the counts once per index, tag and pair.
    """
    old = _rows(conn, list(changes))
    plan = _Plan()
    for (index, member), entry in changes.items():
        row = old.get((index, member))
        if entry is None:
            if row is not None:
                plan.remove(index, member, row[0], sorted(_tags_decoder.decode(row[1])))
            continue
        score, tags = entry.score, sorted(entry.tags)
        encoded = _tags_encoder.encode(tags)
        if row is not None:
            old_score, old_encoded = row
            old_tags = tags if old_encoded == encoded else sorted(_tags_decoder.decode(old_encoded))
            if old_tags == tags:
                if old_score != score:
                    plan.move(index, member, old_score, score, tags)
                continue
            plan.remove(index, member, old_score, old_tags)
        plan.insert(index, member, score, tags, encoded)
    plan.run(conn)


def _rows(
    conn: sqlite3.Connection, members: list[tuple[str, str]]
) -> dict[tuple[str, str], tuple[float, bytes]]:
    """The (score, encoded tags) of each (index, member) of `members` that has a row."""
    sql = "SELECT member, score, tags FROM index_members WHERE idx=? AND member IN ({marks})"
    return {(index, row[0]): (row[1], row[2]) for index, row in by_index(conn, sql, members)}


class _Plan:
    """The rows that `write` changes, gathered to be written one statement per kind."""

    def __init__(self) -> None:
        self.member_deletes: list[tuple[str, str]] = []
        self.tag_deletes: list[tuple[str, str, float, str]] = []
        self.member_inserts: list[tuple[str, str, float, bytes]] = []
        self.tag_inserts: list[tuple[str, str, float, str]] = []
        self.member_moves: list[tuple[float, str, str]] = []
        self.tag_moves: list[tuple[float, str, str, float, str]] = []
        self.sizes: Counter[str] = Counter()
        self.tag_counts: Counter[tuple[str, str]] = Counter()
        self.pair_counts: Counter[tuple[str, str, str]] = Counter()

    def insert(
        self, index: str, member: str, score: float, tags: list[str], encoded: bytes
    ) -> None:
        self.member_inserts.append((index, member, score, encoded))
        self.tag_inserts += [(index, tag, score, member) for tag in tags]
        self._count(index, tags, +1)

    def remove(self, index: str, member: str, score: float, tags: list[str]) -> None:
        """Take out `member`, found with `score` and (sorted) `tags`."""
        self.member_deletes.append((index, member))
        self.tag_deletes += [(index, tag, score, member) for tag in tags]
        self._count(index, tags, -1)

    def move(self, index: str, member: str, old: float, score: float, tags: list[str]) -> None:
        self.member_moves.append((score, index, member))
        self.tag_moves += [(score, index, tag, old, member) for tag in tags]

    def _count(self, index: str, tags: list[str], delta: int) -> None:
        """Keep the member counts per index, per tag and per pair of tags (`tags` sorted).

        They pick the rarest tag to walk in a query and answer `index_count` for zero,
        one or two tags without a scan (the inbox's tab counters are such counts); the
        price is k(k-1)/2 small upserts for a member with k tags.
        """
        self.sizes[index] += delta
        for tag in tags:
            self.tag_counts[index, tag] += delta
        for a, b in itertools.combinations(tags, 2):
            self.pair_counts[index, a, b] += delta

    def run(self, conn: sqlite3.Connection) -> None:
        """Write the rows: removals first, as a member removed may be inserted again."""
        for sql, rows in (
            ("DELETE FROM index_members WHERE idx=? AND member=?", self.member_deletes),
            (
                "DELETE FROM index_tags WHERE idx=? AND tag=? AND score=? AND member=?",
                self.tag_deletes,
            ),
            (
                "INSERT INTO index_members (idx, member, score, tags) VALUES (?, ?, ?, ?)",
                self.member_inserts,
            ),
            (
                "INSERT INTO index_tags (idx, tag, score, member) VALUES (?, ?, ?, ?)",
                self.tag_inserts,
            ),
            ("UPDATE index_members SET score=? WHERE idx=? AND member=?", self.member_moves),
            (
                "UPDATE index_tags SET score=? WHERE idx=? AND tag=? AND score=? AND member=?",
                self.tag_moves,
            ),
            (
                "INSERT INTO index_sizes (idx, n) VALUES (?, ?)"
                " ON CONFLICT (idx) DO UPDATE SET n = n + excluded.n",
                [(k, n) for k, n in self.sizes.items() if n],
            ),
            (
                "INSERT INTO index_tag_counts (idx, tag, n) VALUES (?, ?, ?)"
                " ON CONFLICT (idx, tag) DO UPDATE SET n = n + excluded.n",
                [(*k, n) for k, n in self.tag_counts.items() if n],
            ),
            (
                "INSERT INTO index_pair_counts (idx, tag_a, tag_b, n) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (idx, tag_a, tag_b) DO UPDATE SET n = n + excluded.n",
                [(*k, n) for k, n in self.pair_counts.items() if n],
            ),
        ):
            if rows:
                conn.executemany(sql, rows)


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
