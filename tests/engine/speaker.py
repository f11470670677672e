"""A test actor for the event log: `Say` commits one stored event, `Shout` announces a
live-only one."""

from __future__ import annotations

import msgspec

from tidings.engine import Actor, Batch, handler


class Say(msgspec.Struct):
    text: str


class Shout(msgspec.Struct):
    text: str


class Speaker(Actor):
    kind = "speaker"
    __slots__ = ()

    @handler
    async def say(self, msg: Say) -> None:
        batch = Batch()
        batch.event(msg.text.encode())
        await self.ctx.commit(batch)

    @handler
    async def shout(self, msg: Shout) -> None:
        self.ctx.announce(msg.text.encode())
