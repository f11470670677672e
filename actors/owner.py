"""`MessageOwner`: what an actor that owns messages does with their delivery (R30).

The owner of a message (`handoff.message_owner`: its ticket, else its profile) is the
only writer of its record and outbox job, so the courier's reports and the provider's
status callbacks come to it: it records the courier's intent on the job before a first
provider call (`Attempting`), the outcome with the job's removal (`Sent`), and later
statuses (`StatusUpdate`). Each owner says in `delivered` what else follows (a profile
counts a campaign as received, R25; a carrier opt-out withdraws consent) and commits.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec

from tidings.actors import thread
from tidings.actors.context import InboxContext
from tidings.actors.courier import Attempting, Sent, record_attempt, remove_job
from tidings.actors.handoff import StatusUpdate
from tidings.actors.model import Status
from tidings.engine import Batch, StatefulActor, handler

S = TypeVar("S", bound=msgspec.Struct)


class MessageOwner(StatefulActor[InboxContext, S]):
    """Base of the actors that own messages: the ticket and the profile."""

    __slots__ = ()

    @handler
    async def attempting(self, msg: Attempting) -> bool:
        batch = Batch()
        found = await record_attempt(self.ctx.store, batch, msg)
        await self.ctx.commit(batch)
        return found

    @handler
    async def sent(self, msg: Sent) -> None:
        batch = Batch()
        moved = await thread.set_status(
            self.ctx.store, batch, msg.message, msg.status, msg.provider_id, msg.error_code
        )
        remove_job(batch, msg.job)
        await self.delivered(batch, msg.message, msg.status if moved else None, msg.error_code)

    @handler
    async def status_update(self, msg: StatusUpdate) -> None:
        batch = Batch()
        moved = await thread.set_status(
            self.ctx.store, batch, msg.message, msg.status, error_code=msg.error_code
        )
        await self.delivered(batch, msg.message, msg.status if moved else None, msg.error_code)

    async def delivered(
        self, batch: Batch, message: str, moved_to: Status | None, error_code: str | None
    ) -> None:
        """Commit `batch`, which records what the provider said of `message`: the status
        it `moved_to` (None: it did not move) and the provider's `error_code`, if any."""
        raise NotImplementedError
