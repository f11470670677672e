"""A consistent copy of a live SQLite store (`tidings backup`), through SQLite's online
backup API.

The store runs in WAL mode (see `tidings.engine.store.sqlite`): copying the `.db` file
alone misses what is still in the `-wal` file, and copying both while the writer commits
can tear a transaction. The backup API reads the database through an ordinary read
transaction instead, so the copy is the store as of one commit.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

__all__ = ["BackupError", "backup_sqlite"]

BUSY_TIMEOUT_MS = 5000


class BackupError(Exception):
    """The copy could not be made; nothing is left at the destination."""


def backup_sqlite(source: str | Path, destination: str | Path) -> int:
    """Copy the SQLite store at `source` to the new file `destination` while other
    processes may be writing to it; returns the number of pages copied.

    The copy is one self-contained file (rollback journal, no `-wal`), checked with
    `PRAGMA integrity_check`, and appears at `destination` only once it is complete.
    Raises `BackupError` when the source is missing or unreadable, the destination
    exists, or the copy is not sound.
    """
    source, destination = Path(source), Path(destination)
    if not source.is_file():
        raise BackupError(f"no SQLite store at {source}")
    if destination.exists():
        raise BackupError(f"{destination} already exists; choose a new file")
    partial = destination.with_name(f".{destination.name}.partial")
    try:
        # Read-only: a backup must never create or change the store it copies.
        src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot open {source}: {exc}") from exc
    try:
        src.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        partial.unlink(missing_ok=True)
        dst = sqlite3.connect(partial)
        try:
            # All pages in one step: one read transaction, so one snapshot. Copying in
            # several steps restarts whenever the server commits in between, which under
            # steady load may never finish.
            src.backup(dst, pages=-1)
            pages = dst.execute("PRAGMA page_count").fetchone()[0]
            dst.execute("PRAGMA journal_mode=DELETE")
            verdict = dst.execute("PRAGMA integrity_check").fetchone()[0]
            if verdict != "ok":
                raise BackupError(f"the copy failed its integrity check: {verdict}")
        finally:
            dst.close()
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        os.replace(partial, destination)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot copy {source}: {exc}") from exc
    finally:
        src.close()
        partial.unlink(missing_ok=True)
    return int(pages)
