"""`tidings serve` as a subprocess: config errors (R05) and the quick start."""

from __future__ import annotations

import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import httpx
import trio

ROOT = Path(__file__).resolve().parents[2]


def test_r05_alphanumeric_sender_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[sms]\nsender = "ACME"\n')
    done = subprocess.run(
        [sys.executable, "-m", "tidings.transports.cli", "serve", "--config", str(bad)],
        capture_output=True, text=True, cwd=ROOT, timeout=30,
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
        capture_output=True, text=True, cwd=ROOT, timeout=30,
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
                [sys.executable, "-m", "tidings.transports.cli", "serve", "--port", "0", "--store", store],
                stdout=subprocess.PIPE, cwd=str(ROOT), check=False,
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
    first, second = (json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{"))
    assert first["level"] == "warning" and first["message"] == "ticket t1 closed"
    assert first["logger"] == "tidings.test" and first["ticket"] == "t1"
    assert first["time"].endswith("+00:00")
    assert "ValueError: boom" in second["error"]
