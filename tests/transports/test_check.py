"""`tidings check --store URL`: one line per violation with its keys; exit 0 when clean,
1 when not, 2 for a store it cannot read."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tidings.engine import Batch
from tidings.engine.store import open_store
from tidings.transports.cli import main

ORPHAN_JOB = b'{"type":"sms","message":"m9","profile":"p9","to":"+15550000009","sender":"+15550001111","body":"x","media":[]}'


async def write(url: str, *, broken: bool) -> None:
    store = await open_store(url)
    try:
        batch = Batch()
        batch.put("settings", b"{}")
        batch.event(b'{"name":"badge","data":{}}')
        if broken:  # a badge entry nobody earned and an outbox job whose message is gone
            batch.index("badge", "p1", 1.0, frozenset())
            batch.put("outbox:m9", ORPHAN_JOB)
            batch.index("outbox", "m9", 1.0, frozenset())
        await store.commit(batch)
    finally:
        await store.aclose()


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    code = main(["check", *args])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def test_a_clean_sqlite_store_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'clean.db'}"
    trio.run(lambda: write(url, broken=False))
    code, lines, err = run(["--store", url], capsys)
    assert (code, lines) == (0, [])
    assert "clean" in err


def test_each_violation_is_one_line_with_its_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'broken.db'}"
    trio.run(lambda: write(url, broken=True))
    code, lines, err = run(["--store", url], capsys)
    assert code == 1
    assert lines == [
        "badge: is in the badge index without an open unread ticket [profile:p1]",
        "outbox_orphan: its message is not stored [outbox:m9 msg:m9]",
    ]
    assert "2 violation(s)" in err


def test_redis_stores_are_checked_too(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    trio.run(lambda: write(redis_url, broken=True))
    code, lines, _ = run(["--store", redis_url], capsys)
    assert code == 1 and len(lines) == 2


@pytest.mark.parametrize(
    "url",
    ["nope", "ftp://host/x", "redis://127.0.0.1:notaport/0", "sqlite:///{tmp}/missing.db"],
)
def test_a_bad_store_url_exits_2_and_creates_nothing(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = url.format(tmp=tmp_path)
    code, lines, err = run(["--store", url], capsys)
    assert (code, lines) == (2, [])
    assert err.startswith("check error: ")
    assert list(tmp_path.iterdir()) == []


def test_the_store_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["check"])
    assert exc.value.code == 2
