"""Waiting in tests for what another task, process or Redis changes (no event to wait on)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio


async def until(done: Callable[[], Awaitable[bool]], what: str, seconds: float = 10.0) -> None:
    """Poll `done` every 50 ms until it is true; fail naming `what` after `seconds`."""
    for _ in range(int(seconds / 0.05)):
        if await done():
            return
        await trio.sleep(0.05)
    raise AssertionError(f"not within {seconds:g} s: {what}")
