"""DirectoryActor: finds the profile of a phone number or e-mail address, one actor per
number or address, so that two first messages from one new number make one profile.

Keys it owns: `phone:{E.164}` and `email:{lower-case address}` → profile id, and the
`InboxContext.directory` cache of them; no other actor writes either. A profile that
takes or gives up a number or address tells the directory (`Claim`/`Release`); the
directory asks nobody, so profile → directory asks never form a cycle.
"""

from __future__ import annotations

from tidings.actors import thread
from tidings.actors.context import InboxContext
from tidings.engine import Actor, Batch, Request, handler


class Resolve(Request[str | None]):
    """The profile id for this actor's key (`phone:+1555…` / `email:a@b`), made when
    missing and `create` is set; None otherwise."""

    create: bool = True


class Claim(Request[None]):
    """`profile` takes this number or address: the last claim wins, as a new owner of a
    phone number takes its messages."""

    profile: str


class Release(Request[None]):
    """`profile` gave this number or address up; the mapping goes only if it still names
    `profile` (another profile may have claimed it since)."""

    profile: str


def directory_key(kind: str, value: str) -> str:
    """The directory actor's key of a phone number (`kind` "phone") or e-mail address."""
    return f"{kind}:{value.lower()}"


class DirectoryActor(Actor[InboxContext]):
    """Key: `phone:<E.164>` or `email:<lower-case address>`."""

    kind = "directory"
    __slots__ = ()

    async def _write(self, profile: str | None) -> None:
        batch = Batch()
        if profile is None:
            batch.delete(self.key)
        else:
            batch.put(self.key, profile.encode())
        await self.ctx.commit(batch)
        if profile is None:
            self.ctx.app.directory.forget(self.key)
        else:
            self.ctx.app.directory.put(self.key, profile)

    @handler
    async def resolve(self, msg: Resolve) -> str | None:
        found = await self.ctx.store.get(self.key)
        if found is not None:
            profile = found.decode()
            self.ctx.app.directory.put(self.key, profile)
            return profile
        if not msg.create:
            return None
        profile = thread.new_id("p", self.ctx.now())
        await self._write(profile)
        return profile

    @handler
    async def claim(self, msg: Claim) -> None:
        found = await self.ctx.store.get(self.key)
        if found is None or found.decode() != msg.profile:
            await self._write(msg.profile)

    @handler
    async def release(self, msg: Release) -> None:
        found = await self.ctx.store.get(self.key)
        if found is not None and found.decode() == msg.profile:
            await self._write(None)
