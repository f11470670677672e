"""The `tidings` command: `tidings serve …` runs the engine, `tidings bench …` the
benchmark harness (PROTOCOL.md, "Command line")."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

import trio
from tidings.transports import logs
from tidings.transports.config import ConfigError, load_config
from tidings.transports.server import Running, serve

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tidings", description="Real-time support inbox engine")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run the engine with its HTTP and WebSocket server")
    run.add_argument("--config", help="TOML configuration file")
    run.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    run.add_argument("--port", type=int, help="port to listen on (0: any free port)")
    run.add_argument("--store", help="memory://, sqlite:///PATH or redis://HOST:PORT/DB")
    commands.add_parser("bench", help="the benchmark harness", add_help=False)
    return parser


def _announce(running: Running) -> None:
    base = running.base_url
    print(f"console: {base}/", flush=True)
    print(f"chat: {base}/chat", flush=True)
    print(f"sms webhook: {base}/sms/inbound", flush=True)
    if running.demo_token:
        print(f"demo agent token: {running.demo_token}", flush=True)
    if running.demo_api_key:
        print(f"api key: {running.demo_api_key}", flush=True)


async def _serve(config: object) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            running: Running = await nursery.start(serve, config)
            _announce(running)
            async for _ in signals:
                running.stop.set()
                break


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a configuration error)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "bench":
        from tidings.bench import main as bench_main  # only the bench needs its imports

        return int(bench_main(args_list[1:]) or 0)
    args = _parser().parse_args(args_list)
    overrides = {"server.host": args.host, "server.port": args.port, "server.store": args.store}
    try:
        config = load_config(args.config, overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr, flush=True)
        return 2
    logs.configure()
    try:
        trio.run(_serve, config)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
