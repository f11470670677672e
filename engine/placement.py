"""Placement: which node of several sharing one Redis store runs which actor.

Actor addresses hash onto a fixed number of shards. A node owns a shard through a lease
in Redis (renewed by heartbeat) whose epoch, incremented on every acquisition, is the
*fencing token* of the shard's writes: an actor remembers the epoch at which it was
activated, every batch it commits carries it, and the store's commit script refuses the
batch (`Fenced`) when the shard's epoch moved on, so a node that paused past its lease
(GC, SIGSTOP, a partition) cannot write after another node took the shard.

Membership is by heartbeat (a node silent for a lease is gone). Each node assigns every
shard to the live node that ranks highest for it (rendezvous hashing, so a join or leave
moves only the shards that must move), gives up the shards it holds that now belong to
another node once their actors are idle and passivated, and takes the free shards that
belong to it. A node is *ready* once it holds all the shards assigned to it.
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from collections.abc import Callable
from typing import Protocol

import trio

from tidings.engine.errors import EngineError
from tidings.engine.messages import Address
from tidings.engine.store.base import StoreError
from tidings.engine.store.redis_shards import ShardStore

log = logging.getLogger("tidings.placement")


class Host(Protocol):
    """What placement asks of the engine whose actors it places."""

    async def hand_over(self, shard: int, timeout: float) -> bool: ...

    def evict(self, shard: int) -> None: ...

    async def gained(self, shards: list[int]) -> None: ...


class ShardMoved(EngineError):
    """The actor's shard moved to another node while a message was with it here."""


def shard_of(address: Address, shards: int) -> int:
    """The shard of an actor address (the same on every node)."""
    return zlib.crc32(f"{address[0]}:{address[1]}".encode()) % shards


def _rank(node: str, shard: int) -> bytes:
    return hashlib.blake2b(f"{node}/{shard}".encode(), digest_size=8).digest()


def assign(shard: int, members: list[str]) -> str | None:
    """The live node that should own `shard` (rendezvous hashing)."""
    return max(members, key=lambda node: _rank(node, shard), default=None)


class Placement:
    """This node's shards: their leases and epochs, renewed and rebalanced by `run`."""

    def __init__(
        self, shards: ShardStore, *, count: int = 256, lease: float = 5.0, heartbeat: float = 0.0
    ) -> None:
        if count < 1:
            raise ValueError("the shard count must be at least 1")
        if lease <= 0:
            raise ValueError("the lease time must be positive")
        self.store = shards
        self.node = shards.node
        self.count = count
        self.lease = lease
        self.heartbeat = heartbeat or lease / 4
        self.owned: dict[int, int] = {}  # shard → epoch held
        self.leaving: set[int] = set()  # being handed over: new mail goes to the stream
        self.members: list[str] = []
        self.ready = trio.Event()
        self.renewals = 0
        self.fenced = 0  # writes refused because their epoch moved on
        self.leases_lost = 0  # shards found taken by another node when renewing
        self.moved: list[Callable[[], None]] = []  # told when a shard leaves this node
        self._lease_ms = int(lease * 1000)

    def shard(self, address: Address) -> int:
        """The shard of `address`."""
        return shard_of(address, self.count)

    def owns(self, address: Address) -> bool:
        """Whether the actor at `address` runs here now."""
        shard = self.shard(address)
        return shard in self.owned and shard not in self.leaving

    def token(self, address: Address) -> tuple[int, int]:
        """The fencing token (shard, epoch) of an actor activated here now; epoch 0, which
        no shard ever has, when the shard is not held."""
        shard = self.shard(address)
        return shard, self.owned.get(shard, 0)

    async def run(
        self, host: Host, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Heartbeat and renew every `heartbeat` seconds, and rebalance after each
        heartbeat (in a task of its own, so a slow hand-over never delays a renewal);
        leave on cancellation."""
        try:
            async with trio.open_nursery() as nursery:
                await self.beat(host)
                nursery.start_soon(self._rebalancer, host)
                task_status.started()
                while True:
                    await trio.sleep(self.heartbeat)
                    await self.beat(host)
        finally:
            with trio.CancelScope(shield=True):
                await self._leave()

    async def _rebalancer(self, host: Host) -> None:
        while True:
            try:
                await self.rebalance(host)
            except StoreError as exc:
                log.warning("rebalancing failed: %s", exc)
            await trio.sleep(self.heartbeat)

    async def beat(self, host: Host) -> None:
        """One heartbeat: membership and lease renewal (shards found lost are dropped)."""
        try:
            members = await self.store.heartbeat(self._lease_ms)
            lost = await self.store.renew(dict(self.owned), self._lease_ms)
        except StoreError as exc:
            log.warning("heartbeat failed: %s", exc)
            return
        self.members = members if self.node in members else sorted([*members, self.node])
        self.renewals += len(self.owned) - len(lost)
        for shard in lost:
            if shard in self.owned:
                log.warning("node %s lost the lease of shard %d", self.node, shard)
                self.leases_lost += 1
                self._drop(host, shard)

    async def rebalance(self, host: Host) -> None:
        """Hand over the shards that now belong to another node; take free ones that
        belong to this one."""
        mine = {s for s in range(self.count) if assign(s, self.members) == self.node}
        await self._hand_over(host, [s for s in self.owned if s not in mine])
        gained: list[int] = []
        for shard in sorted(mine - self.owned.keys()):
            epoch = await self.store.acquire(shard, self._lease_ms)
            if epoch:
                self.owned[shard] = epoch
                gained.append(shard)
        if gained:
            await host.gained(gained)
            self._tell_moved()
        if mine <= self.owned.keys():
            self.ready.set()

    def lost(self, host: Host, shard: int) -> None:
        """A write of `shard` was fenced: another node holds it now."""
        self.fenced += 1
        if shard in self.owned:
            log.warning("node %s was fenced off shard %d", self.node, shard)
            self._drop(host, shard)

    def _drop(self, host: Host, shard: int) -> None:
        self.owned.pop(shard, None)
        self.leaving.discard(shard)
        host.evict(shard)
        self._tell_moved()

    def _tell_moved(self) -> None:
        for listener in self.moved:
            listener()

    async def _hand_over(self, host: Host, shards: list[int]) -> None:
        """Give `shards` up: new mail goes to their streams at once; each lease is
        released once the shard's actors here are idle and passivated."""
        if not shards:
            return
        self.leaving.update(shards)
        self._tell_moved()
        for shard in shards:
            if await host.hand_over(shard, self.lease / 2):
                epoch = self.owned.pop(shard)
                self.leaving.discard(shard)
                await self.store.release(shard, epoch)

    async def _leave(self) -> None:
        """Stop heartbeating and release every lease (on shutdown), so that the other
        nodes take the shards at once instead of after a lease time."""
        try:
            with trio.move_on_after(2):
                await self.store.heartbeat(self._lease_ms, leaving=True)
                for shard, epoch in list(self.owned.items()):
                    await self.store.release(shard, epoch)
        except StoreError:
            pass  # the leases expire by themselves
        self.owned.clear()
