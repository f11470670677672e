"""Webhooks on several nodes: the service's writes (its cursor, its deliveries) carry the
fencing token of the shard of `SERVICE`, so a node that lost that shard while it did not
look (paused past its lease) cannot move the cursor or write a delivery late."""

from __future__ import annotations

import msgspec
import trio

from tests.polling import until
from tests.transports.helpers import free_port
from tidings.actors.inbox import open_inbox
from tidings.engine import Batch
from tidings.engine.placement import Placement
from tidings.engine.store.redis import RedisStore
from tidings.engine.store.redis_shards import ShardStore
from tidings.transports.config import WebhookConfig
from tidings.transports.mail import OutboxMail
from tidings.transports.sms_providers import OutboxSms
from tidings.transports.webhooks import CURSOR_KEY, PENDING, SERVICE, running_webhooks

SHARDS = 8


def _event(name: str) -> bytes:
    return msgspec.json.encode({"event": name, "data": {}})


class _Seq(msgspec.Struct):
    seq: int = -1


async def _cursor_seq(store: RedisStore) -> int:
    return msgspec.json.decode(await store.get(CURSOR_KEY) or b"{}", type=_Seq).seq


async def test_a_node_that_lost_the_webhooks_shard_cannot_move_the_cursor(redis_url: str) -> None:
    # nothing listens on the hook's port: every attempt fails and is rescheduled, which
    # is a write too
    hook = WebhookConfig(url=f"http://127.0.0.1:{free_port()}/hook", secret="s")
    async with (
        RedisStore(redis_url, prefix="t:") as store,
        RedisStore(redis_url, prefix="t:") as other,
    ):
        # no heartbeat during the test: node a keeps believing it holds every shard, as a
        # paused node does until it looks again
        placement = Placement(ShardStore(store, "a"), count=SHARDS, lease=1.5, heartbeat=600)
        async with (
            open_inbox(store, sms=OutboxSms(), mail=OutboxMail(), placement=placement) as inbox,
            running_webhooks([hook], inbox),
        ):
            with trio.fail_after(10):
                await placement.ready.wait()

            async def holds_all() -> bool:
                return len(placement.owned) == SHARDS

            await until(holds_all, "node a holds every shard")
            # an event while a holds the shard: delivered as pending, cursor moved on
            first = Batch()
            first.event(_event("ticket.created"))
            (seq,) = await other.commit(first)

            async def cursor_moved() -> bool:
                return await _cursor_seq(other) >= seq

            await until(cursor_moved, "the cursor passes the first event")
            pending = await other.index_query(PENDING, frozenset(), 100, descending=False)
            assert len(pending) == 1

            # another node takes the shard of SERVICE (its lease ran out unseen by a)
            shard = placement.shard(SERVICE)
            await other._live().delete([other.shard_key(shard, "lease")])
            assert await ShardStore(other, "z").acquire(shard, 60_000) > 0
            fenced = placement.fenced

            # an event a still sees live: its consumer's write must be refused
            later = Batch()
            later.event(_event("ticket.created"))
            (late,) = await other.commit(later)

            async def refused() -> bool:
                return placement.fenced > fenced

            await until(refused, "node a's write is fenced")
            assert shard not in placement.owned  # a gave the shard up on the fenced write
            assert await _cursor_seq(other) == seq < late
            assert await other.index_query(PENDING, frozenset(), 100, descending=False) == pending
