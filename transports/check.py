"""`tidings check --store URL`: the crash invariants of a store (`actors/invariants.py`),
one violation per line with the keys involved. Reads only; a SQLite store may be served
by a running `tidings serve` meanwhile (WAL readers do not block the writer).

Exit status: 0 when the store is consistent, 1 when a violation was found, 2 when the
store URL is bad or the store cannot be opened.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

import trio

from tidings.actors import invariants
from tidings.engine.store import StoreError, open_store

__all__ = ["check_store", "run"]


async def check_store(url: str) -> list[invariants.Violation]:
    """The violations in the store at `url`; `ValueError` for a URL that names no store,
    `StoreError` when it cannot be read."""
    store = await open_store(url)
    try:
        return await invariants.check(store)
    finally:
        await store.aclose()


def run(url: str, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Check the store at `url`, print what is found; return the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        if url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///"))
            if not path.is_file():  # opening it would make an empty store
                raise ValueError(f"no SQLite store at {str(path)!r}")
        found = trio.run(check_store, url)
    except (ValueError, StoreError, OSError) as exc:
        print(f"check error: {exc}", file=err, flush=True)
        return 2
    for violation in found:
        print(violation.line(), file=out)
    print(f"{len(found)} violation(s)" if found else "clean: every invariant holds", file=err)
    return 1 if found else 0
