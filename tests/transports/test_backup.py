"""`tidings backup`: a consistent copy of a SQLite store taken while `tidings serve` writes
to it (PROTOCOL.md, Contract v3, Operations)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest
import trio

from tests.transports.conftest import make_config
from tests.transports.serve_process import ROOT, SERVE, child_env, serving
from tidings.engine.store.sqlite import SqliteStore
from tidings.engine.store.sqlite_backup import BackupError, backup_sqlite
from tidings.transports.server import Running, running_server

CLI = [sys.executable, "-m", "tidings.transports.cli"]
BACKUP = [*CLI, "backup"]
SENDERS = 4


async def _inbound_bodies(running: Running) -> Counter[str]:
    """Every inbound SMS body of every ticket, counted."""
    bodies: Counter[str] = Counter()
    cursor = None
    while True:
        page = await running.inbox.tickets_list(limit=50, cursor=cursor)
        for ticket in page.tickets:
            view = await running.inbox.ticket_get(ticket.id)
            bodies.update(m.body for m in view.messages if m.direction == "inbound")
        cursor = page.cursor
        if cursor is None:
            return bodies


async def test_backup_under_load_has_every_message_answered_before_it(tmp_path: Path) -> None:
    live = tmp_path / "live.db"
    copy = tmp_path / "backup" / "copy.db"
    copy.parent.mkdir()
    answered: list[str] = []
    stop = trio.Event()
    reached: dict[int, trio.Event] = {}  # count of answers -> set once that many are in

    async def answers(count: int) -> None:
        reached[count] = event = trio.Event()
        if len(answered) < count:
            with trio.fail_after(30):
                await event.wait()

    # no sms.auth_token: the webhook takes unsigned posts
    command = [*SERVE, "--port", "0", "--store", f"sqlite:///{live}"]
    async with serving(command, child_env()) as served:

        async def sender(n: int, client: httpx.AsyncClient) -> None:
            i = 0
            while not stop.is_set():
                body = f"m{n}-{i}"
                # a phone per message: each gets a ticket of its own
                params = {"MessageSid": f"SM{n}x{i}", "From": f"+1555{n}{i:06d}", "Body": body}
                r = await client.post(f"{served.base}/sms/inbound", data=params)
                assert r.status_code == 200, r.text
                answered.append(body)
                if (event := reached.get(len(answered))) is not None:
                    event.set()
                i += 1

        async with httpx.AsyncClient(timeout=10) as client, trio.open_nursery() as nursery:
            for n in range(SENDERS):
                nursery.start_soon(sender, n, client)
            await answers(40)
            before = list(answered)
            done = await trio.run_process(
                [*BACKUP, "--store", f"sqlite:///{live}", str(copy)],
                capture_stdout=True, capture_stderr=True, cwd=str(ROOT), check=False,
            )  # fmt: skip
            assert len(answered) > len(before)  # the server took messages during the copy
            await answers(len(answered) + 20)  # load goes on after the backup too
            stop.set()
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().startswith(f"backup: {copy} (")
    assert sorted(p.name for p in copy.parent.iterdir()) == ["copy.db"]  # no -wal, no partial
    with sqlite3.connect(copy) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    async with running_server(make_config(**{"server.store": f"sqlite:///{copy}"})) as running:
        bodies = await _inbound_bodies(running)
    assert all(count == 1 for count in bodies.values()), bodies.most_common(3)
    # restored (served once, which repairs what a mid-load snapshot caught half-told):
    # every invariant holds
    checked = await trio.run_process(
        [*CLI, "check", "--store", f"sqlite:///{copy}"],
        capture_stdout=True, capture_stderr=True, cwd=str(ROOT), check=False,
    )  # fmt: skip
    assert checked.returncode == 0, (checked.stdout + checked.stderr).decode()
    missing = [body for body in before if bodies[body] != 1]
    assert missing == [], f"{len(missing)} answered before the backup are not in it"
    assert len(bodies) < len(answered)  # the copy is of a moment, not of the end


async def test_a_restored_copy_serves_again(tmp_path: Path) -> None:
    live, copy = tmp_path / "live.db", tmp_path / "copy.db"
    async with SqliteStore(live) as store:
        async with running_server(make_config(), store=store) as running:
            await running.inbox.upsert_profile({"phone": "+15551234567", "name": "Ada"})
            # while the store is open, with its -wal file in use
            await trio.to_thread.run_sync(backup_sqlite, live, copy)
    restored = tmp_path / "restored.db"
    copy.rename(restored)  # restore: put the copy where the store is expected
    async with running_server(make_config(**{"server.store": f"sqlite:///{restored}"})) as running:
        profile = await running.inbox.upsert_profile({"phone": "+15551234567"})
    assert profile.name == "Ada"


def test_backup_refuses_a_missing_store_and_an_existing_destination(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="no SQLite store at"):
        backup_sqlite(tmp_path / "none.db", tmp_path / "copy.db")
    assert not (tmp_path / "none.db").exists()  # never created by the attempt
    sqlite3.connect(tmp_path / "live.db").close()
    (tmp_path / "copy.db").write_bytes(b"keep")
    with pytest.raises(BackupError, match="already exists"):
        backup_sqlite(tmp_path / "live.db", tmp_path / "copy.db")
    assert (tmp_path / "copy.db").read_bytes() == b"keep"


@pytest.mark.parametrize(
    ("store", "hint"),
    [
        ("redis://127.0.0.1:6379/0", "back up Redis with its own persistence (BGSAVE"),
        ("memory://", "it copies sqlite:///PATH stores only"),
    ],
)
def test_backup_of_a_store_that_is_not_sqlite_exits_2(
    tmp_path: Path, store: str, hint: str
) -> None:
    done = subprocess.run(
        [*BACKUP, "--store", store, str(tmp_path / "copy.db")],
        capture_output=True, text=True, cwd=ROOT, timeout=30, env=child_env(),
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith(f"backup error: {store}: ") and hint in done.stderr
    assert done.stderr.count("\n") == 1
    assert not (tmp_path / "copy.db").exists()


def test_backup_takes_the_store_from_the_environment(tmp_path: Path) -> None:
    live = tmp_path / "live.db"
    with sqlite3.connect(live) as db:
        db.execute("CREATE TABLE t (x)")
        db.execute("INSERT INTO t VALUES (42)")
    env = child_env({"TIDINGS_SERVER__STORE": f"sqlite:///{live}"})
    done = subprocess.run(
        [*BACKUP, str(tmp_path / "copy.db")],
        capture_output=True, text=True, cwd=ROOT, timeout=30, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(tmp_path / "copy.db") as db:
        assert db.execute("SELECT x FROM t").fetchall() == [(42,)]
