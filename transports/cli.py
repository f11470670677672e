"""The transports' command line: `tidings serve …` runs the engine, `tidings backup …`
copies a live SQLite store (PROTOCOL.md, "Command line"); `tidings --version` names the
release. `tidings bench …` is handed to the benchmarks by `tidings.cli`, above the layers."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
from collections.abc import Sequence

import trio

from tidings.engine.store.schema import SchemaTooNew
from tidings.transports import logs
from tidings.transports.config import ConfigError, is_loopback, load_config
from tidings.transports.release import version
from tidings.transports.server import Running, serve

__all__ = ["main"]

log = logging.getLogger(__name__)


REDIS_BACKUP_HINT = (
    "tidings backup copies SQLite stores only; back up Redis with its own persistence "
    "(BGSAVE, then copy dump.rdb, or copy the appendonly files; see the README, Deployment)"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tidings", description="Real-time support inbox engine")
    parser.add_argument("--version", action="version", version=f"tidings {version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run the engine with its HTTP and WebSocket server")
    run.add_argument("--config", help="TOML configuration file")
    run.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    run.add_argument("--port", type=int, help="port to listen on (0: any free port)")
    run.add_argument(
        "--store",
        help="memory://, sqlite:///PATH, redis://HOST:PORT/DB or redis+cluster://HOST:PORT",
    )
    run.add_argument("--node", help="this node's name among several on one Redis store")
    backup = commands.add_parser(
        "backup", help="write a consistent copy of a SQLite store, also while it is served"
    )
    backup.add_argument("--config", help="TOML configuration file (for server.store)")
    backup.add_argument("--store", help="sqlite:///PATH (default: server.store of the config)")
    backup.add_argument("file", help="the copy to write (must not exist yet)")
    check = commands.add_parser("check", help="report the crash invariants a store breaks")
    check.add_argument("--store", required=True, help="sqlite:///PATH or redis://HOST:PORT/DB")
    commands.add_parser("bench", help="the benchmark harness", add_help=False)
    return parser


def _backup(args: argparse.Namespace) -> int:
    from tidings.engine.store.sqlite_backup import BackupError, backup_sqlite

    try:
        store = load_config(args.config, {"server.store": args.store}).server.store
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr, flush=True)
        return 2
    if not store.startswith("sqlite:///"):
        hint = REDIS_BACKUP_HINT if store.startswith("redis") else "it copies sqlite:///PATH stores only"
        print(f"backup error: {store}: {hint}", file=sys.stderr, flush=True)
        return 2
    try:
        pages = backup_sqlite(store.removeprefix("sqlite:///"), args.file)
    except BackupError as exc:
        print(f"backup error: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"backup: {args.file} ({pages} pages)", flush=True)
    return 0


def _announce(running: Running) -> None:
    base = running.base_url
    print(f"console: {base}/", flush=True)
    print(f"chat: {base}/chat", flush=True)
    print(f"sms webhook: {base}/sms/inbound", flush=True)
    if running.demo_token:
        print(f"demo agent token: {running.demo_token}", flush=True)
    if running.demo_api_key:
        print(f"api key: {running.demo_api_key}", flush=True)


# Allocations (net of frees) between young-generation collections, and collections of
# one generation per collection of the next (CPython's defaults: 700, 10, 10).
GC_THRESHOLDS = (50_000, 20, 10)


def gc_policy() -> None:
    """Collect cycles less often in a server that holds many long-lived objects.

    With CPython's defaults the collector walked the objects of every open connection
    and actor again and again: on web chat at 5,000 visitors it took 822 µs of the
    server's 1,660 µs of CPU per message (README, Benchmarks). Called once start-up is
    done: `gc.freeze` moves what start-up made (modules, the app) out of every later
    collection, and higher thresholds collect less often. It stays a threshold, not
    `gc.disable`, so cyclic garbage is still collected and memory stays bounded. Only
    `tidings serve` does this; an application embedding the library keeps its own."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def _serve(config: object) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            running: Running = await nursery.start(serve, config)
            gc_policy()
            _announce(running)
            async for _ in signals:
                running.stop.set()
                break


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a configuration error)."""
    parser = _parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.command == "bench":  # listed for --help; `tidings bench` is tidings.cli's
        parser.error("the benchmarks run from the tidings command: tidings bench …")
    if args.command == "backup":
        return _backup(args)
    if args.command == "check":
        from tidings.transports.check import run

        return run(args.store)
    overrides = {
        "server.host": args.host,
        "server.port": args.port,
        "server.store": args.store,
        "cluster.node": args.node,
    }
    try:
        config = load_config(args.config, overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr, flush=True)
        return 2
    logs.configure()
    if not config.sms.auth_token and not is_loopback(config.server.host):
        log.warning(
            "sms.allow_unsigned: inbound SMS webhooks on %s are not signed; anyone who can "
            "reach it can forge messages and opt-outs",
            config.server.host,
        )
    newer: SchemaTooNew | None = None
    try:
        try:
            trio.run(_serve, config)
        except* SchemaTooNew as group:
            newer = _first(group)
    except KeyboardInterrupt:
        pass
    if newer is not None:
        # an older release must not touch what a newer one wrote: a config error, exit 2
        print(f"config error: server.store: {newer}", file=sys.stderr, flush=True)
        return 2
    return 0


def _first(group: BaseExceptionGroup[SchemaTooNew]) -> SchemaTooNew:
    """The first `SchemaTooNew` of `group`, however deeply the nurseries nested it."""
    found = group.exceptions[0]
    return found if isinstance(found, SchemaTooNew) else _first(found)


if __name__ == "__main__":
    sys.exit(main())
