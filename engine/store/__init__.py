"""Storage backends of the engine behind one `Store` protocol, opened from a URL."""

from __future__ import annotations

from urllib.parse import urlsplit

from tidings.engine.store.base import Batch, DueTimer, IndexEntry, Store, StoreError, TextEntry

__all__ = ["Batch", "DueTimer", "IndexEntry", "Store", "StoreError", "TextEntry", "open_store"]

_FORMS = (
    "memory://, sqlite:///relative.db, sqlite:////absolute.db, redis://host:port/db, "
    "redis+cluster://host:port"
)


async def open_store(url: str) -> Store:
    """Open the store that `url` names; close it with `aclose()`.

    - ``memory://``: a fresh in-memory store,
    - ``sqlite:///data/tidings.db``: a file relative to the working directory,
      ``sqlite:////var/lib/tidings.db``: an absolute path,
    - ``redis://host:port/db`` (or ``rediss://``): a Redis 7+ server, keys prefixed
      ``tidings:``,
    - ``redis+cluster://host:port`` (or ``rediss+cluster://``): a Redis 7+ Cluster known by
      one of its masters; every key of the store is in one hash slot (see
      `tidings.engine.store.redis`), so one master holds the whole store.

    Raises `ValueError` for a URL that names none of these, `StoreError` when the store
    cannot be opened.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"store URL {url!r} has no scheme; expected one of {_FORMS}")
    scheme = scheme.lower()
    if scheme == "memory":
        if rest:
            raise ValueError(f"memory store URL takes no path: {url!r}; use 'memory://'")
        from tidings.engine.store.memory import MemoryStore

        return MemoryStore()
    if scheme == "sqlite":
        # sqlite:///rel.db -> "rel.db"; sqlite:////abs.db -> "/abs.db" (SQLAlchemy's form).
        if not rest.startswith("/") or rest in ("/", "//"):
            raise ValueError(
                f"sqlite store URL {url!r} needs a path: sqlite:///relative.db or "
                "sqlite:////absolute.db"
            )
        from tidings.engine.store.sqlite import SqliteStore

        return await SqliteStore(rest[1:]).open()
    if scheme in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
        except ValueError as exc:
            raise ValueError(f"redis store URL {url!r} has a bad port: {exc}") from None
        if not parts.hostname:
            raise ValueError(f"redis store URL {url!r} has no host; expected redis://host:port/db")
        db = parts.path.strip("/")
        if db and scheme.endswith("+cluster"):
            raise ValueError(f"redis cluster URL {url!r} takes no database: a cluster has only 0")
        if db and not db.isdigit():
            raise ValueError(f"redis store URL {url!r}: the path must be a database number")
        from tidings.engine.store.redis import RedisStore

        return await RedisStore(url).open()
    raise ValueError(f"unknown store URL scheme {scheme!r} in {url!r}; expected one of {_FORMS}")
