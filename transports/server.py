"""Run the engine with its HTTP and WebSocket server (hypercorn's trio worker).

`serve(config)` runs until cancelled or until `stop` is set; `running_server(config)`
is the same for tests: it yields the base URL, the inbox and the outbox providers.
"""

from __future__ import annotations

import logging
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from tidings.actors.brand import Account, Timing
from tidings.actors.inbox import Inbox, open_inbox
from tidings.engine.placement import Placement
from tidings.engine.store import Batch, Store, open_store
from tidings.engine.store.redis import RedisStore
from tidings.engine.store.redis_shards import ShardStore
from tidings.transports.app import build_app
from tidings.transports.config import AgentConfig, Config
from tidings.transports.mail import OutboxMail, SmtpMail
from tidings.transports.sms_providers import OutboxSms, TwilioSms
from tidings.transports.webhooks import running_webhooks
from tidings.transports.wire import MAX_FRAME, Context, PerAddress

__all__ = ["Running", "serve", "running_server", "demo_credentials"]

GRACEFUL_S = 2.0
DAY_S = 86400.0


@dataclass
class Running:
    """A running server: where it listens and what it runs."""

    base_url: str
    inbox: Inbox
    sms: Any
    mail: Any
    context: Context
    demo_token: str | None = None
    demo_api_key: str | None = None
    stop: trio.Event = field(default_factory=trio.Event)


DEMO_CREDENTIALS_KEY = "demo_credentials"


class _DemoCredentials(msgspec.Struct, kw_only=True):
    """What the store keeps under `DEMO_CREDENTIALS_KEY`."""

    token: str | None = None
    api_key: str | None = None


async def demo_credentials(config: Config, store: Store) -> tuple[Config, str | None, str | None]:
    """With no agents, a demo owner; with no API keys, one key. Their values are made
    once and kept in `store`, so a restart prints (and accepts) the same ones."""
    if config.agents and config.api.keys:
        return config, None, None
    raw = await store.get(DEMO_CREDENTIALS_KEY)
    try:
        kept = msgspec.json.decode(raw, type=_DemoCredentials) if raw else _DemoCredentials()
    except msgspec.DecodeError:
        kept = _DemoCredentials()  # unreadable: made again, as on a new store
    wanted = msgspec.structs.replace(
        kept,
        token=kept.token or (None if config.agents else secrets.token_urlsafe(24)),
        api_key=kept.api_key or (None if config.api.keys else secrets.token_urlsafe(24)),
    )
    if wanted != kept:
        batch = Batch()
        batch.put(DEMO_CREDENTIALS_KEY, msgspec.json.encode(wanted))
        await store.commit(batch)
    token = key = None
    if not config.agents:
        token = wanted.token
        agent = AgentConfig(id="demo", name="Demo agent", role="owner", token=token or "")
        config = msgspec.structs.replace(config, agents=[agent])
    if not config.api.keys:
        key = wanted.api_key
        config = msgspec.structs.replace(
            config, api=msgspec.structs.replace(config.api, keys=[key or ""])
        )
    return config, token, key


def _hypercorn_config(config: Config) -> HypercornConfig:
    hc = HypercornConfig()
    host = config.server.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    hc.bind = [f"{host}:{config.server.port}"]
    hc.websocket_max_message_size = MAX_FRAME
    hc.graceful_timeout = GRACEFUL_S
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")  # an app's crash reaches the JSON log
    return hc


def _port_of(binds: list[str]) -> int:
    return int(binds[0].rsplit(":", 1)[1])


async def _http(
    app: Any,
    hc: HypercornConfig,
    stop_http: trio.Event,
    done: trio.Event,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    try:
        await hypercorn_serve(app, hc, shutdown_trigger=stop_http.wait, task_status=task_status)
    finally:
        done.set()


@asynccontextmanager
async def running_server(
    config: Config, *, demo: bool = True, store: Any = None
) -> AsyncIterator[Running]:
    """Run the server for the block; yields `Running`. `store` overrides
    `config.server.store` (an open `Store` the caller owns)."""
    owned = store is None
    if store is None:
        store = await open_store(config.server.store)
    sms: Any
    mail: Any
    try:
        token = key = None
        if demo:
            config, token, key = await demo_credentials(config, store)
        ctx = Context(
            config=config,
            agents={a.token: a for a in config.agents},
            api_keys=frozenset(config.api.keys),
            addresses=PerAddress(config.limits),
        )
        app = build_app(ctx, store)
        mail = (
            OutboxMail() if config.email.smtp_url == "outbox" else SmtpMail(config.email.smtp_url)
        )
        async with trio.open_nursery() as nursery:
            stop_http, http_done = trio.Event(), trio.Event()
            binds = await nursery.start(_http, app, _hypercorn_config(config), stop_http, http_done)
            port = _port_of(binds)
            base = config.public_base(port)
            ctx.public_base = base
            local = f"http://{_local_host(config.server.host)}:{port}"
            if config.sms.provider == "twilio":
                sms = TwilioSms(
                    config.sms.account_sid,
                    config.sms.auth_token,
                    config.sms.base_url,
                    status_callback_url=f"{base}/sms/status",
                    messaging_service_sid=config.sms.messaging_service_sid,
                )
            else:
                sms = OutboxSms()
            account = Account(
                **msgspec.structs.asdict(config.account),
                support_email=config.email.support_address,
                sms_sender=config.sms.sender,
                public_url=base,
                chat_page_url=config.chat.page_url,
            )
            timing = Timing(**msgspec.structs.asdict(config.timing))
            placement = _placement(config, store, port)
            try:
                async with open_inbox(
                    store,
                    account=account,
                    timing=timing,
                    sms=sms,
                    mail=mail,
                    settings=config.settings,
                    events_kept_s=config.limits.events_kept_days * DAY_S,
                    idempotency_kept_s=config.limits.idempotency_kept_days * DAY_S,
                    placement=placement,
                ) as inbox, running_webhooks(config.webhooks, inbox) as webhooks:
                    if placement is not None:
                        # a dead node's shards come free within a lease
                        with trio.move_on_after(2 * config.cluster.lease + 1):
                            await placement.ready.wait()
                    ctx.inbox = inbox
                    app.state.metrics.watch(inbox, webhooks)
                    try:
                        yield Running(local, inbox, sms, mail, ctx, token, key)
                    finally:
                        # Stop taking requests before the inbox closes.
                        stop_http.set()
                        with trio.move_on_after(GRACEFUL_S + 1) as cs:
                            cs.shield = True
                            await http_done.wait()
                        ctx.inbox = None
            finally:
                nursery.cancel_scope.cancel()
                with trio.CancelScope(shield=True):
                    await sms.aclose()
                    await mail.aclose()
    finally:
        if owned:
            with trio.CancelScope(shield=True):
                await store.aclose()


def _placement(config: Config, store: Store, port: int) -> Placement | None:
    """On a Redis store, this node's placement among the nodes sharing it (PROTOCOL.md,
    "Operations"); None on a store that serves one process."""
    if not isinstance(store, RedisStore):
        return None
    node = config.cluster.node or f"{socket.gethostname()}:{port}"
    cluster = config.cluster
    return Placement(ShardStore(store, node), count=cluster.shards, lease=cluster.lease)


def _local_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


async def serve(
    config: Config,
    *,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run until cancelled or until `Running.stop` is set; `task_status` gets `Running`."""
    async with running_server(config) as running:
        task_status.started(running)
        await running.stop.wait()
