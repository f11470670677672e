"""A private `redis-server` for the benchmarks and the tests: started on a free port in a
directory of the caller's (a temporary one), as a child process, and killed after.

It is part of the installed package (not of ``tests/``), so ``tidings bench pipeline`` and
``tidings bench cluster`` run outside the source tree too; ``tests/redis_server.py``
re-exports it for the test fixtures. Only servers started here are ever flushed or killed;
the machine's own server (6379) is never touched.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A `redis-server` child process with AOF (`appendfsync always`) in `directory`."""

    def __init__(self, directory: Path, executable: str = "redis-server") -> None:
        found = shutil.which(executable)
        if found is None:
            raise FileNotFoundError(f"{executable} is not on PATH")
        self.executable = found
        self.directory = directory
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The redis:// URL of database 0 on this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        """The process id of the running server (for its CPU time)."""
        if self.process is None:
            raise RuntimeError("redis-server is not running")
        return self.process.pid

    def start(self, timeout: float = 10.0) -> None:
        """Start the server (on a free port the first time) and wait until it answers PING."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        self.process = subprocess.Popen(
            [
                self.executable,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.directory),
                "--save", "",
                "--appendonly", "yes",
                "--appendfsync", "always",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            if self.command("PING") == b"+PONG\r\n":
                return
            time.sleep(0.02)  # only while waiting for the server to come up
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING within {timeout} s")

    def command(self, *words: str) -> bytes:
        """Send one inline command to this server and return its raw reply (b"" if down)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                sock.sendall(" ".join(words).encode() + b"\r\n")
                return sock.recv(65536)
        except OSError:
            return b""

    def flush(self) -> None:
        """Empty every database of this server (and only this one)."""
        if self.command("FLUSHALL") != b"+OK\r\n":
            raise RuntimeError("FLUSHALL failed on the private redis-server")

    def restart(self) -> None:
        """Kill the server (no shutdown save) and start it again on the same port and dir."""
        self.stop()
        self.start()

    def stop(self) -> None:
        """Kill the server and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None
