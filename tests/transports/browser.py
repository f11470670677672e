"""What the browser tests share: Debian's Chromium driven by Playwright's sync API, and a
`tidings serve` subprocess (port 0, memory store) whose printed lines they read.

The tests are plain synchronous tests, so Playwright's sync API never meets trio's event
loop. Without /usr/bin/chromium they skip, unless TIDINGS_REQUIRE_BROWSER=1 (CI).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "tests" / "artifacts"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 10_000


def need_browser() -> None:
    """Skip (or fail, with TIDINGS_REQUIRE_BROWSER=1) when Chromium or Playwright is missing."""
    if os.path.exists(CHROMIUM):
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            if os.environ.get("TIDINGS_REQUIRE_BROWSER") == "1":
                pytest.fail("playwright is not installed and TIDINGS_REQUIRE_BROWSER=1")
            pytest.skip("playwright is not installed")
        return
    if os.environ.get("TIDINGS_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{CHROMIUM} is missing and TIDINGS_REQUIRE_BROWSER=1")
    pytest.skip(f"{CHROMIUM} is missing")


@contextmanager
def serve_console(
    until: tuple[str, ...], env: Mapping[str, str] | None = None
) -> Iterator[dict[str, str]]:
    """`tidings serve --port 0 --store memory://` with `env` added to the environment
    (settings inherited as `TIDINGS_<SECTION>__<NAME>` left out, so only `env` configures
    it); yields the printed `name: value` lines once every name in `until` was printed."""
    inherited = {
        k: v for k, v in os.environ.items() if not (k.startswith("TIDINGS_") and "__" in k)
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tidings.transports.cli",
            "serve",
            "--port",
            "0",
            "--store",
            "memory://",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=str(ROOT),
        env={**inherited, **(env or {})},
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    urls: dict[str, str] = {}
    try:
        while not all(name in urls for name in until):
            line = lines.get(timeout=20)
            assert line is not None, "the server exited early"
            name, _, value = line.strip().partition(": ")
            urls[name] = value
        yield urls
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
