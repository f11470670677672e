"""Schema versions: a version 1 store is migrated on open (its snoozes still fire, its
messages and profiles are found by their words), a store written by a newer release is
refused, by the stores and by `tidings serve`."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing

from tests.actors.helpers import ACCOUNT, PHONE, START
from tests.fixtures.make_v1_store import BODY, FIXTURE
from tidings.actors import searchable
from tidings.actors.brand import Timing
from tidings.actors.inbox import open_inbox
from tidings.actors.model import Message, Profile, StoredMessage, encode
from tidings.actors.profile import ProfileState
from tidings.engine import TrioWallClock
from tidings.engine.store import Batch, Store, open_store
from tidings.engine.store.memory import MemoryStore
from tidings.engine.store.redis import RedisStore
from tidings.engine.store.schema import (
    SCHEMA_VERSION,
    V3_MESSAGES,
    V3_PROFILES,
    SchemaTooNew,
    index_text_v3,
    timer_payload_v2,
)
from tidings.engine.store.sqlite import SqliteStore
from tidings.transports.mail import OutboxMail
from tidings.transports.sms_providers import OutboxSms

ROOT = Path(__file__).resolve().parents[2]
WAKE_AT = 1_799_935_200.0  # "tomorrow" from START: Thursday 09:00 in New York
# Opened (upgraded) ten minutes before the wake-up: the courier polls the outbox every
# few seconds of mock time, and each poll on a real store costs the clock's 50 ms jump.
OPENED_AT = WAKE_AT - 600
envelope = msgspec.msgpack.Decoder(tuple[str, str, str, msgspec.Raw])


def timer_names(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT payload FROM timers").fetchall()
    return [envelope.decode(payload)[2] for (payload,) in rows]


def stored_version(path: Path) -> int | None:
    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return None if row is None else int(row[0])


@pytest.fixture
def v1_store(tmp_path: Path) -> Path:
    """A copy of the version 1 fixture (tests/fixtures/make_v1_store.py wrote it)."""
    copy = tmp_path / "v1.db"
    shutil.copyfile(FIXTURE, copy)
    return copy


def test_the_fixture_is_a_version_1_store(v1_store: Path) -> None:
    with sqlite3.connect(v1_store) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "meta" not in tables and {"kv", "timers", "logs"} <= tables
    assert timer_names(v1_store) == ["ticket/Wake"]


@pytest.fixture
def slow_jump_clock() -> trio.testing.MockClock:
    """Store I/O runs in threads: jump the mock clock only after 50 ms of real idleness."""
    return trio.testing.MockClock(autojump_threshold=0.05)


async def test_a_version_1_store_is_migrated_and_its_snooze_fires_on_time(
    v1_store: Path, slow_jump_clock: trio.testing.MockClock
) -> None:
    store = await SqliteStore(v1_store).open()
    assert store.schema_version == SCHEMA_VERSION == 3
    assert stored_version(v1_store) == 3
    assert timer_names(v1_store) == ["ticket.wake"]
    async with open_inbox(
        store, account=ACCOUNT, timing=Timing(), sms=OutboxSms(), mail=OutboxMail(),
        clock=TrioWallClock(OPENED_AT), idle_timeout=1e6, timer_window=20_000.0,
    ) as inbox:  # fmt: skip
        [ticket] = [t.id for t in (await inbox.tickets_list(state="snoozed")).tickets]
        view = await inbox.ticket_get(ticket)
        assert view.profile.phone == PHONE and BODY in [m.body for m in view.messages]
        [found] = (await inbox.messages_search("Version WRITTEN")).results
        assert found.message.body == BODY and found.profile.phone == PHONE
        [profile] = await inbox.profiles_search(PHONE)
        assert profile.id == view.profile.id
        await trio.sleep(WAKE_AT - OPENED_AT - 60)
        assert (await inbox.ticket_get(ticket)).ticket.state == "snoozed"
        await trio.sleep(120)
        assert (await inbox.ticket_get(ticket)).ticket.state == "open"
        assert inbox.engine.dead_letters == 0
    await store.aclose()


async def test_a_migrated_store_opens_again_without_a_step(v1_store: Path) -> None:
    async with SqliteStore(v1_store):
        pass
    migrated = timer_names(v1_store)
    async with SqliteStore(v1_store) as store:
        assert store.schema_version == 3
    assert timer_names(v1_store) == migrated == ["ticket.wake"] and stored_version(v1_store) == 3


async def test_a_new_store_records_this_release_version(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "new.db") as store:
        assert store.schema_version == SCHEMA_VERSION
    assert stored_version(tmp_path / "new.db") == SCHEMA_VERSION
    assert MemoryStore().schema_version == SCHEMA_VERSION


def test_migration_1_to_2_rewrites_only_version_1_timer_names() -> None:
    raw = msgspec.msgpack.encode({"due": 5.0})
    old = msgspec.msgpack.encode(("ticket", "t1", "ticket/FollowupDue", msgspec.Raw(raw)))
    assert timer_payload_v2(old) == msgspec.msgpack.encode(
        ("ticket", "t1", "ticket.followup_due", msgspec.Raw(raw))
    )
    current = msgspec.msgpack.encode(("ticket", "t1", "ticket.wake", msgspec.Raw(raw)))
    assert timer_payload_v2(current) is None  # already version 2
    assert timer_payload_v2(b"\xc1 not msgpack") is None  # left to the timer service


# --- 2 → 3: text indexes -----------------------------------------------------------------

CREATED = "2026-12-01T10:00:00.000000+00:00"


def v2_records() -> Batch:
    """What a version 2 inbox stored, without text indexes: two messages of a profile and
    a blocked profile's web chat message (kept in its own log, shown nowhere)."""
    batch = Batch()
    for id, body, profile in (
        ("m1", "Perché l'ordine 1001 è in ritardo?", "p1"),
        ("m2", "ORDER 1001 arrived", "p1"),
        ("m3", "ordine 1001, blocked", "p2"),
    ):
        message = Message(id, None, profile, "sms", "inbound", "support", body, [], CREATED)
        batch.put(f"msg:{id}", encode(StoredMessage(message)))
    batch.append("thread:webchat-blocked:p2", b"m3")
    for profile in (Profile("p1", PHONE, "ada@example.com", "Ada Lovelace"), Profile("p2")):
        batch.put(f"profile:{profile.id}", encode(ProfileState(profile)))
    return batch


async def check_v2_records_found(store: Store) -> None:
    created = datetime.fromisoformat(CREATED).timestamp()
    assert await store.text_query(V3_MESSAGES, "ordine 1001 PERCHE", 10) == [("m1", created)]
    assert await store.text_query(V3_MESSAGES, "1001", 10) == [("m2", created), ("m1", created)]
    assert await store.text_query(V3_PROFILES, "lovelace ada@example.com", 10) == [("p1", 0.0)]
    assert await store.text_query(V3_PROFILES, PHONE, 10) == [("p1", 0.0)]


async def test_a_version_2_store_is_migrated_its_messages_and_profiles_found(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v2.db"
    async with SqliteStore(path) as store:
        await store.commit(v2_records())
    with sqlite3.connect(path) as conn:  # as version 2 left it: no text index rows
        conn.execute("DELETE FROM text_members")
        conn.execute("DELETE FROM text_words")
    set_version(path, 2)
    async with SqliteStore(path) as store:
        assert store.schema_version == 3
        await check_v2_records_found(store)


def test_migration_2_to_3_indexes_as_the_inbox_does() -> None:
    """The frozen v2 reading (schema.index_text_v3) and actors/searchable.py agree."""
    model = v2_records()
    migrated = Batch()
    for key, value in model.puts.items():
        index_text_v3(migrated, key, value, frozenset({"m3"}))
    live = Batch()
    for key, value in model.puts.items():
        if key.startswith("msg:") and key != "msg:m3":
            searchable.index_message(live, msgspec.json.decode(value, type=StoredMessage).message)
        elif key.startswith("profile:"):
            searchable.index_profile(live, msgspec.json.decode(value, type=ProfileState).profile)
    assert migrated.text_puts == live.text_puts and len(live.text_puts) == 3
    assert (searchable.MESSAGES, searchable.PROFILES) == (V3_MESSAGES, V3_PROFILES)


def set_version(path: Path, version: int) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (version,))


async def test_a_store_written_by_a_newer_release_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    async with SqliteStore(path):
        pass
    set_version(path, SCHEMA_VERSION + 1)
    before = path.read_bytes()
    with pytest.raises(SchemaTooNew) as refused:
        await open_store(f"sqlite:///{path}")
    assert str(refused.value) == "written by schema version 4, this release reads up to 3"
    assert path.read_bytes() == before


def test_tidings_serve_exits_2_naming_the_versions(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"

    async def create() -> None:
        async with SqliteStore(path):
            pass

    trio.run(create)
    set_version(path, 7)
    done = subprocess.run(
        [sys.executable, "-m", "tidings.transports.cli", "serve", "--port", "0",
         "--store", f"sqlite:///{path}"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "config error: server.store: written by schema version 7, this release reads up to 3"
    )


# --- redis ---------------------------------------------------------------------------


async def redis_v1_store(url: str) -> None:
    """Make the store at `url` look as version 1 left it: a timer named the v1 way, one
    already named by tag (written by a release between), and no version key."""
    async with RedisStore(url) as store:
        batch = Batch()
        wake = msgspec.Raw(msgspec.msgpack.encode({"due": START}))
        batch.set_timer(
            "snooze:t1", START, msgspec.msgpack.encode(("ticket", "t1", "ticket/Wake", wake))
        )
        batch.set_timer(
            "snooze:t2", START, msgspec.msgpack.encode(("ticket", "t2", "ticket.wake", wake))
        )
        await store.commit(batch)
        await store.commit(v2_records())
        await store._live().delete([store._schema_key])


async def test_redis_version_1_is_migrated_and_newer_refused(redis_url: str) -> None:
    await redis_v1_store(redis_url)
    async with RedisStore(redis_url) as store:
        assert store.schema_version == 3
        client = store._live()
        assert await client.get(store._schema_key) == b"3"
        timers = await store.due_timers(START, 10)
        names = {t.key: envelope.decode(t.payload)[2] for t in timers}
        assert names == {"snooze:t1": "ticket.wake", "snooze:t2": "ticket.wake"}
        await check_v2_records_found(store)
        await client.set(store._schema_key, "4")
    with pytest.raises(
        SchemaTooNew, match="written by schema version 4, this release reads up to 3"
    ):
        await open_store(redis_url)
