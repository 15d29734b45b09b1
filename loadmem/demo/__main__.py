"""``python -m loadmem.demo``: run the pre-forking demo server in the foreground.

Prints one ``{"event": "ready", ...}`` JSON line on stdout when the table is built and every
worker is accepting; everything else goes to stderr. Stop it with SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

from loadmem.demo.config import VARIANTS, DemoConfig
from loadmem.demo.master import serve
from loadmem.errors import EXIT_USAGE, LoadmemError
from loadmem.units import duration_arg

_EPILOG = """\
examples:
  python -m loadmem.demo                       # 4 workers, 100 MiB table, port chosen freely
  python -m loadmem.demo --port 8080 --variant frozen
  python -m loadmem.demo --workers 2 --table-mb 24 --idle-gc-after 1s --idle-gc-stagger 0.5s

Without traffic the workers do nothing. After a request (other than /health), each worker
waits --idle-gc-after plus its index times --idle-gc-stagger of quiet, then runs a full
gc.collect(): in the default variant that copies every inherited page of the table into the
worker (RSS flat, PSS and used memory up); in the frozen variant it does not.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadmem.demo",
        description="A pre-forking HTTP/1.1 demo server whose workers unshare their "
        "copy-on-write memory when idle: the puzzle loadmem explains.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = DemoConfig()
    p.add_argument("--host", default=d.host, help="loopback address (default %(default)s)")
    p.add_argument("--port", type=int, default=d.port, help="TCP port; 0 picks a free one")
    p.add_argument(
        "--workers",
        type=int,
        default=d.workers,
        metavar="N",
        help="worker processes the master forks (default %(default)s)",
    )
    p.add_argument(
        "--table-mb",
        type=float,
        default=d.table_mb,
        metavar="MIB",
        help="MiB of container objects the master preloads before forking (default %(default)g)",
    )
    p.add_argument(
        "--variant",
        choices=VARIANTS,
        default=d.variant,
        help="default: plain fork, idle GC unshares the table; frozen: gc.disable() before "
        "building, gc.freeze() before forking, gc.enable() in workers (the fix)",
    )
    p.add_argument(
        "--idle-gc-after",
        type=duration_arg,
        default=d.idle_gc_after,
        metavar="DURATION",
        help="quiet time after traffic before a worker runs gc.collect() (default 3s)",
    )
    p.add_argument(
        "--idle-gc-stagger",
        type=duration_arg,
        default=d.idle_gc_stagger,
        metavar="DURATION",
        help="extra wait per worker index, so the drain is a slope, not a step (default 5s)",
    )
    p.add_argument(
        "--idle-gc-repeat",
        type=duration_arg,
        default=d.idle_gc_repeat,
        metavar="DURATION",
        help="repeat the collection this often while idle; 0 = once per idle period (default)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from loadmem.load import lifeline

    # started by `loadmem run --target demo`: die with it (SIGTERM: the master stops its
    # workers, which also die with their master), even when it is SIGKILLed
    lifeline.arm(signal.SIGTERM)
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s loadmem-demo[%(process)d] %(message)s",
    )
    try:
        config = DemoConfig(
            host=args.host,
            port=args.port,
            workers=args.workers,
            table_mb=args.table_mb,
            variant=args.variant,
            idle_gc_after=args.idle_gc_after,
            idle_gc_stagger=args.idle_gc_stagger,
            idle_gc_repeat=args.idle_gc_repeat,
        )
        return serve(config)
    except LoadmemError as e:
        print(f"loadmem demo: error: {e}", file=sys.stderr)
        return e.exit_code or EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
