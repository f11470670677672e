"""DirectoryActor: finds the profile of a phone number or e-mail address, one actor per
number or address, so that two first messages from one new number make one profile."""

from __future__ import annotations

from tidings.actors import thread
from tidings.actors.context import InboxContext
from tidings.engine import Actor, Batch, Request, handler


class Resolve(Request[str | None]):
    """The profile id for this actor's key (`phone:+1555…` / `email:a@b`), made when
    missing and `create` is set; None otherwise."""

    create: bool = True


class DirectoryActor(Actor[InboxContext]):
    """Key: `phone:<E.164>` or `email:<lower-case address>`."""

    kind = "directory"
    __slots__ = ()

    @handler
    async def resolve(self, msg: Resolve) -> str | None:
        store = self.ctx.store
        found = await store.get(self.key)
        if found is not None:
            return found.decode()
        if not msg.create:
            return None
        profile = thread.new_id("p", self.ctx.now())
        batch = Batch()
        batch.put(self.key, profile.encode())
        await self.ctx.commit(batch)
        return profile
