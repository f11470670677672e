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

    def __init__(
        self, directory: Path, executable: str = "redis-server", extra: tuple[str, ...] = ()
    ) -> None:
        found = shutil.which(executable)
        if found is None:
            raise FileNotFoundError(f"{executable} is not on PATH")
        self.executable = found
        self.directory = directory
        self.extra = extra  # more command-line options
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
                *self.extra,
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


def _bus_port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cluster_port() -> int:
    """A free port for a cluster master whose bus port (the port + 10000, which must
    exist) is free too."""
    while True:
        port = free_port()
        if port + 10000 <= 65535 and _bus_port_free(port + 10000):
            return port


class RedisCluster:
    """A Redis Cluster of `masters` private `redis-server`s (no replicas) in `directory`:
    the 16384 slots split evenly, joined with ``CLUSTER MEET`` (no ``redis-cli`` needed)."""

    SLOTS = 16384

    def __init__(self, directory: Path, masters: int = 3) -> None:
        self.servers = [
            RedisServer(
                directory / f"m{i}",
                extra=("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
            )
            for i in range(masters)
        ]

    @property
    def url(self) -> str:
        """The ``redis+cluster://`` URL of the cluster (its first master)."""
        return f"redis+cluster://127.0.0.1:{self.servers[0].port}"

    def start(self, timeout: float = 20.0) -> None:
        """Start the masters, give each its slots, join them, and wait until every
        master says ``cluster_state:ok``."""
        try:
            self._form(timeout)
        except BaseException:
            self.stop()  # none of the masters outlives a failed start
            raise

    def _form(self, timeout: float) -> None:
        for server in self.servers:
            server.port = server.port or cluster_port()
            server.start()
        share = self.SLOTS // len(self.servers)
        for i, server in enumerate(self.servers):
            last = self.SLOTS - 1 if i == len(self.servers) - 1 else (i + 1) * share - 1
            self._ok(server, "CLUSTER", "ADDSLOTSRANGE", str(i * share), str(last))
        first = self.servers[0]
        for server in self.servers[1:]:
            self._ok(first, "CLUSTER", "MEET", "127.0.0.1", str(server.port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(b"cluster_state:ok" in s.command("CLUSTER", "INFO") for s in self.servers):
                return
            time.sleep(0.05)  # only while the masters gossip their slots
        raise RuntimeError(f"the Redis Cluster was not ok within {timeout} s")

    @staticmethod
    def _ok(server: RedisServer, *words: str) -> None:
        answer = server.command(*words)
        if answer != b"+OK\r\n":
            raise RuntimeError(f"{' '.join(words)} answered {answer!r}")

    def flush(self) -> None:
        """Empty every master of this cluster (and only those)."""
        for server in self.servers:
            server.flush()

    def stop(self) -> None:
        """Kill every master and reap it."""
        for server in self.servers:
            server.stop()
