"""The `tidings` command. It sits above every layer: `tidings bench …` goes to the
benchmark harness (`tidings.bench`), every other command (`serve`, `backup`, `--version`)
to the transports' command line (`tidings.transports.cli`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["bench"]:
        from tidings.bench import main as bench_main  # only the bench needs its imports

        return int(bench_main(args[1:]) or 0)
    from tidings.transports.cli import main as transports_main

    return transports_main(args)


if __name__ == "__main__":
    sys.exit(main())
