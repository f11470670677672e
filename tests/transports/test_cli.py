"""`tidings serve` as a subprocess: config errors (R05) and the quick start."""

from __future__ import annotations

import gc
import json
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio
from trio_websocket import open_websocket_url

from tidings.transports.cli import GC_THRESHOLDS, gc_policy

ROOT = Path(__file__).resolve().parents[2]


def test_r05_alphanumeric_sender_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[sms]\nsender = "ACME"\n')
    done = subprocess.run(
        [sys.executable, "-m", "tidings.transports.cli", "serve", "--config", str(bad)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "config error: sms.sender: alphanumeric sender IDs cannot receive messages"
    )


def test_unknown_key_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nnope = 1\n")
    done = subprocess.run(
        [sys.executable, "-m", "tidings.transports.cli", "serve", "--config", str(bad)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert done.returncode == 2 and done.stderr.startswith("config error: server.nope:")


async def _read_urls(proc: trio.Process) -> dict[str, str]:
    assert proc.stdout is not None
    buffer = b""
    lines: dict[str, str] = {}
    with trio.fail_after(20):
        while "sms webhook" not in lines or "demo agent token" not in lines:
            chunk = await proc.stdout.receive_some(4096)
            assert chunk, "the server exited early"
            buffer += chunk
            *done, buffer = buffer.split(b"\n")
            for line in done:
                name, _, value = line.decode().partition(": ")
                lines[name] = value
    return lines


async def test_quick_start_serves_console_chat_and_health(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'x.db'}"
    async with trio.open_nursery() as nursery:
        proc: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                [
                    sys.executable,
                    "-m",
                    "tidings.transports.cli",
                    "serve",
                    "--port",
                    "0",
                    "--store",
                    store,
                ],
                stdout=subprocess.PIPE,
                cwd=str(ROOT),
                check=False,
            )
        )
        try:
            urls = await _read_urls(proc)
            console = urls["console"]
            assert console.startswith("http://127.0.0.1:") and not console.endswith(":0/")
            assert urls["chat"] == console + "chat"
            assert urls["sms webhook"] == console + "sms/inbound"
            assert len(urls["demo agent token"]) >= 20
            async with httpx.AsyncClient() as client:
                assert (await client.get(console + "healthz")).json() == {"status": "ok"}
                assert (await client.get(console)).status_code == 200
                assert (await client.get(urls["chat"])).status_code == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                code = await proc.wait()
    assert code == 0


def test_logs_are_one_json_object_per_line() -> None:
    import io
    import json
    import logging

    from tidings.transports.logs import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tidings.test")
    logger.addHandler(handler)
    try:
        logger.warning("ticket %s closed", "t1", extra={"ticket": "t1"})
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("it failed")
    finally:
        logger.removeHandler(handler)
    first, second = (
        json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")
    )
    assert first["level"] == "warning" and first["message"] == "ticket t1 closed"
    assert first["logger"] == "tidings.test" and first["ticket"] == "t1"
    assert first["time"].endswith("+00:00")
    assert "ValueError: boom" in second["error"]


ABSURD_UNTIL: list[object] = [
    "9999-12-31T23:59:59-14:00",  # past year 9999 in UTC: astimezone overflowed in the actor
    "0001-01-01T00:00:00+14:00",  # before year 1 in UTC
    "9000-12-31T23:59:59-14:00",
    "2024-01-01T00:00:00+99:00",
    "2024-01-01T00:00:00-23:59:59.999999",
    "nan",
    "inf",
    "",
    10**30,
    -(10**30),
    1.7976931348623157e308,
    None,
    ["2030-01-01T00:00:00+00:00"],
    {"at": "2030-01-01T00:00:00+00:00"},
    True,
    "2020-01-01T00:00:00+00:00",  # in the past
]
FRAMES = 1000
FRAMES_PER_S = 45  # under the connection's rate limit (50 a second after a burst of 100)


async def test_absurd_snooze_times_are_bad_requests_and_the_server_lives_on(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'x.db'}"
    cmd = [sys.executable, "-m", "tidings.transports.cli", "serve", "--port", "0", "--store", store]
    async with trio.open_nursery() as nursery:
        proc: trio.Process = await nursery.start(
            partial(trio.run_process, cmd, stdout=subprocess.PIPE, cwd=str(ROOT), check=False)
        )
        try:
            urls = await _read_urls(proc)
            async with httpx.AsyncClient(timeout=10) as client:
                sms = {"MessageSid": "SM1", "From": "+15551230000", "Body": "hello"}
                assert (await client.post(urls["sms webhook"], data=sms)).status_code == 200
                errors = await _set_state_absurdly(urls)
                assert (await client.get(urls["console"] + "healthz")).status_code == 200
            assert proc.returncode is None  # still running
            assert len(errors) == FRAMES
            wrong = {rid: e for rid, e in errors.items() if e["code"] != "bad_request"}
            assert wrong == {}
            assert all(e["detail"].startswith(("until", "state")) for e in errors.values())
        finally:
            proc.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                code = await proc.wait()
    assert code == 0


async def _set_state_absurdly(urls: dict[str, str]) -> dict[int, dict[str, Any]]:
    """Send FRAMES `ticket.set_state` snoozes with absurd `until`s over one agent
    connection; the error of each reply by request id."""
    ws_url = urls["console"].replace("http://", "ws://") + "ws/agent"
    errors: dict[int, dict[str, Any]] = {}
    async with open_websocket_url(ws_url) as ws:
        await ws.send_message(json.dumps({"type": "auth", "token": urls["demo agent token"]}))
        assert json.loads(await ws.get_message())["type"] == "ready"
        await ws.send_message(json.dumps({"id": 0, "op": "tickets.list"}))
        (ticket,) = json.loads(await ws.get_message())["result"]["tickets"]

        async def send() -> None:
            for rid in range(1, FRAMES + 1):
                until = ABSURD_UNTIL[rid % len(ABSURD_UNTIL)]
                frame = {"id": rid, "op": "ticket.set_state", "ticket": ticket["id"],
                         "state": "snoozed", "until": until}  # fmt: skip
                await ws.send_message(json.dumps(frame))
                if rid > 90:  # the burst is spent: stay under the refill rate
                    await trio.sleep(1 / FRAMES_PER_S)

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                while len(errors) < FRAMES:
                    reply = json.loads(await ws.get_message())
                    assert "id" in reply, f"not an answer: {reply}"
                    assert reply["ok"] is False, reply
                    errors[reply["id"]] = reply["error"]
    return errors


def test_serve_gc_policy_freezes_start_up_and_raises_the_thresholds() -> None:
    """What `tidings serve` does once started (README, Benchmarks): start-up's objects
    leave the collections, and young objects are collected less often, not never."""
    before = gc.get_threshold()
    try:
        gc_policy()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] > before[0] and gc.isenabled()
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
