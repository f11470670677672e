"""tidings' engine as a messaging backbone, without the inbox.

A document service: each document is an actor with durable state. Edits are told (fire
and forget); reads are asked with a deadline. Every edit (re)arms a keyed durable timer,
so a burst of edits is indexed once, `DEBOUNCE_S` after the last one (a debounce that
survives restarts). A supervised service beside the engine follows the event log.

Run it: `python examples/engine_backbone.py`
"""

from __future__ import annotations

import functools
import time

import msgspec
import trio

from tidings import (
    Batch,
    Child,
    Engine,
    MemoryStore,
    Request,
    StatefulActor,
    Supervisor,
    TrioWallClock,
    handler,
    open_engine,
)

DEBOUNCE_S = 0.5


class Document(msgspec.Struct):
    """A document's durable state."""

    text: str = ""
    edits: int = 0
    indexed_at_edit: int = 0


class Edit(msgspec.Struct):
    """Append text (a tell: nobody waits for an answer)."""

    text: str


class Read(Request[Document]):
    """The document as it is now (an ask: the answer's type is `Document`)."""


class Reindex(msgspec.Struct, tag="docs.reindex"):
    """The debounce ran out. Stored by its tag, so renaming the class is safe."""


class DocumentActor(StatefulActor[None, Document]):
    """One document; its state is loaded before its first message and kept at
    `doc:{key}`."""

    kind = "doc"
    state_type = Document
    __slots__ = ()

    @property
    def doc(self) -> Document:
        if self.state is None:
            self.state = Document()
        return self.state

    @handler
    async def edit(self, msg: Edit) -> None:
        doc = self.doc
        doc.text += msg.text
        doc.edits += 1
        batch = Batch()
        due = self.ctx.now() + DEBOUNCE_S  # setting the key again moves the timer
        self.ctx.timers.set_durable(batch, f"reindex:{self.key}", due, self.address, Reindex())
        await self.save(batch)  # state and timer in one atomic commit

    @handler
    async def read(self, msg: Read) -> Document:
        return self.doc

    @handler
    async def reindex(self, msg: Reindex) -> None:
        self.doc.indexed_at_edit = self.doc.edits
        batch = Batch()
        batch.event(msgspec.json.encode({"indexed": self.key, "edits": self.doc.edits}))
        await self.save(batch)


class Auditor:
    """A supervised service: follows the engine's event log (replayed, then live)."""

    def __init__(self) -> None:
        self.seen: list[dict[str, object]] = []

    async def run(
        self, engine: Engine, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        async for _, payload in engine.events.subscribe():
            self.seen.append(msgspec.json.decode(payload))


async def main() -> dict[str, object]:
    """Edit one document in a burst, read it with a deadline, wait for the debounce."""
    store = MemoryStore()
    auditor = Auditor()
    async with open_engine(store, [DocumentActor], clock=TrioWallClock(time.time())) as engine:
        async with trio.open_nursery() as nursery:
            # restarted (one_for_one, OTP semantics) if it fails
            service = Child("auditor", functools.partial(auditor.run, engine))
            await nursery.start(Supervisor([service], name="backbone").run)
            for word in ("tidings ", "is ", "a ", "backbone"):
                await engine.tell(("doc", "readme"), Edit(word))
                await trio.sleep(DEBOUNCE_S / 5)  # a burst: each edit moves the timer
            doc = await engine.ask(("doc", "readme"), Read(), timeout=1.0)
            before = doc.indexed_at_edit
            await trio.sleep(DEBOUNCE_S * 2)
            after = (await engine.ask(("doc", "readme"), Read(), timeout=1.0)).indexed_at_edit
            nursery.cancel_scope.cancel()
    summary: dict[str, object] = {
        "text": doc.text,
        "indexed_before_debounce": before,
        "indexed_after_debounce": after,
        "events": auditor.seen,
    }
    return summary


if __name__ == "__main__":
    print(trio.run(main))
