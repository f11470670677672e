"""`tidings serve` as a child process for the operations tests: started with its own
environment, its announced lines read, stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[2]
SERVE = [sys.executable, "-m", "tidings.transports.cli", "serve"]


@dataclass
class Served:
    """A running `tidings serve`: the lines it printed on start (`console`, `api key`, …)."""

    process: trio.Process
    lines: dict[str, str]
    killed: bool = False

    def kill(self) -> None:
        """SIGKILL the server (a crash); the end of the block then only reaps it."""
        self.killed = True
        self.process.send_signal(signal.SIGKILL)

    @property
    def base(self) -> str:
        """The console URL without its trailing slash."""
        return self.lines["console"].rstrip("/")


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any `TIDINGS_*` config variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not (k.startswith("TIDINGS_") and "__" in k)}
    env.update(extra or {})
    return env


@asynccontextmanager
async def serving(
    command: Sequence[str],
    env: Mapping[str, str],
    *,
    until: Sequence[str] = ("sms webhook",),
    stderr: int | None = None,
) -> AsyncIterator[Served]:
    """Run `command` until the block ends, then SIGTERM it and check it exits with 0
    (unless the block `kill`ed it). Yields once it has printed the lines named in `until`."""
    async with trio.open_nursery() as nursery:
        proc: trio.Process = await nursery.start(
            partial(
                trio.run_process, list(command), stdout=subprocess.PIPE, stderr=stderr,
                cwd=str(ROOT), env=dict(env), check=False,
            )
        )  # fmt: skip
        try:
            served = Served(proc, await _announced(proc, until))
            yield served
        finally:
            proc.send_signal(signal.SIGTERM)
            with trio.fail_after(15):
                code = await proc.wait()
    assert code == (-signal.SIGKILL if served.killed else 0)


async def _announced(proc: trio.Process, until: Sequence[str]) -> dict[str, str]:
    assert proc.stdout is not None
    buffer = b""
    lines: dict[str, str] = {}
    with trio.fail_after(30):
        while not all(name in lines for name in until):
            chunk = await proc.stdout.receive_some(4096)
            assert chunk, f"the server exited early after printing {lines}"
            buffer += chunk
            *done, buffer = buffer.split(b"\n")
            for line in done:
                name, _, value = line.decode().partition(": ")
                lines[name] = value
    return lines
