"""Record system and per-process memory (RSS, PSS, shared/private) into a Parquet recording.

Samples /proc/meminfo, the memory cgroup and the selected processes (plus all their
descendants, re-found every tick so respawned workers are picked up) until --duration ends
or you press Ctrl-C (or send SIGTERM). Cheap per-process counters (RSS split, swap, faults,
CPU) are read every tick; /proc/PID/smaps_rollup (PSS, shared/private dirty...) walks page
tables and is read within a CPU budget (--pss-budget) when something that moves it moved:
the process's or its sharing group's faults or RSS, a fork or an exit. An idle process keeps
its figure, confirmed by those counters every tick. Each PSS figure carries the time it was
read.

Select processes with --pid, --match, --port, --cgroup, --container and --unit (each may
repeat). --port finds the server in any network namespace, also behind a userland proxy
(docker-proxy, rootlesskit, slirp4netns, pasta, kubectl port-forward, or any process that
only forwards): the server is watched, the proxy is recorded with role "proxy". With no
selector the recording holds system-wide figures only. PSS needs the processes' user or root: other
processes are recorded without it (error "smaps:access-denied"). When it stops, it prints
where the recording is and the next command to run: loadmem analyze DIR.

examples:
  loadmem record --port 8000 --duration 10m          # the server on :8000 and its workers
  loadmem record --match 'gunicorn: master' --interval 0.5s
  loadmem record --pid 4242 --pss-budget 5% --out recordings/before-fix
  loadmem record --match unicorn --label release-2.3  # Ctrl-C to stop
  loadmem record --container web --duration 30m      # a docker/podman/Kubernetes container
  loadmem record --unit nginx --cgroup /system.slice/app.service
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from loadmem.recorder.recorder import Recorder, RecordOptions
from loadmem.recorder.selection import Selection
from loadmem.recording.writer import COMPACT_EVERY
from loadmem.units import duration_arg, percent_arg


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: must be 1 to 65535")
    return port


def _pid(text: str) -> int:
    try:
        pid = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid pid {text!r}") from None
    if pid <= 0:
        raise argparse.ArgumentTypeError(f"invalid pid {text!r}: must be positive")
    return pid


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sel = parser.add_argument_group("what to watch (each may repeat; descendants included)")
    sel.add_argument("--pid", type=_pid, action="append", default=[], metavar="PID",
                     help="a process to watch, with all its descendants")
    sel.add_argument("--match", action="append", default=[], metavar="REGEX",
                     help="watch processes whose name or command line matches REGEX "
                          "(Python syntax, searched anywhere), with their descendants")
    sel.add_argument("--port", type=_port, action="append", default=[], metavar="PORT",
                     help="watch the server listening on TCP PORT on this machine (the "
                          "master, not its workers, is the root) and its descendants; in "
                          "another network namespace (a container) too, also behind a "
                          "userland proxy such as docker-proxy")
    sel.add_argument("--cgroup", action="append", default=[], metavar="PATH",
                     help="watch exactly the processes in this cgroup and the cgroups below "
                          "it, re-read every tick; PATH as in /proc/PID/cgroup "
                          "(/system.slice/app.service), v1 or v2")
    sel.add_argument("--container", action="append", default=[], metavar="NAME|ID",
                     help="watch a docker, podman, containerd or Kubernetes container: its id "
                          "(or a unique prefix) as found in /proc/PID/cgroup; a name is "
                          "turned into an id by the runtime's CLI when one is installed")
    sel.add_argument("--unit", action="append", default=[], metavar="NAME",
                     help="watch the processes of a systemd unit (nginx or nginx.service)")
    s = parser.add_argument_group("sampling")
    s.add_argument("--duration", type=duration_arg, metavar="D",
                   help="stop after D (90, 30s, 10m, 2h); default: until Ctrl-C or SIGTERM")
    s.add_argument("--interval", type=duration_arg, default=1.0, metavar="D",
                   help="time between samples (default 1s)")
    s.add_argument("--pss-budget", type=percent_arg, default=0.02, metavar="PCT",
                   help="the recorder's total CPU budget, in %% of one core, which limits how "
                        "often smaps_rollup (PSS) is read (default 2%%)")
    s.add_argument("--pss-max-age", type=duration_arg, default=15.0, metavar="D",
                   help="no PSS figure goes unconfirmed for longer than this, budget "
                        "permitting (default 15s): a process is re-read when its faults, "
                        "RSS or sharing group moved; an idle one every 8x this")
    m = parser.add_argument_group("per-mapping snapshots (/proc/PID/smaps: where memory is)")
    m.add_argument("--mappings-every", type=duration_arg, metavar="D",
                   help="also snapshot every mapping of the target processes every D (e.g. "
                        "10m for a long observation); always taken at the start and the stop")
    m.add_argument("--no-mappings", action="store_true",
                   help="take no per-mapping snapshots")
    o = parser.add_argument_group("output")
    o.add_argument("--out", type=Path, metavar="DIR",
                   help="recording directory (default recordings/record-<UTC time>)")
    o.add_argument("--flush", type=duration_arg, default=5.0, metavar="D",
                   help="write a Parquet segment this often (default 5s): a killed recorder "
                        "loses at most this much")
    o.add_argument("--label", metavar="TEXT", help="a name stored with the recording "
                   "(shown by analyze, compare, ls)")
    o.add_argument("--no-redact", action="store_true",
                   help="store command lines as they are (default: secrets such as "
                        "--password=..., tokens and URL credentials are redacted)")
    o.add_argument("--force", action="store_true",
                   help="write into --out even if it already holds a recording")
    # for `loadmem run`, which drives the recorder as a child process
    parser.add_argument("--control-stdin", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--status-stdout", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true",
                        help="at the end, print a JSON summary on stdout (recording, samples, "
                             "processes, why it stopped, failed reads, exit code); the text "
                             "lines go to stderr")
    parser.add_argument("--no-finalize", action="store_true", help=argparse.SUPPRESS)
    # tests and the soak benchmark: compact after N segments instead of 120
    parser.add_argument("--compact-every", type=int, default=COMPACT_EVERY,
                        help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    out = args.out or Path("recordings") / time.strftime("record-%Y%m%dT%H%M%SZ", time.gmtime())
    options = RecordOptions(
        out=out,
        selection=Selection(pids=args.pid, patterns=args.match, ports=args.port,
                            cgroups=args.cgroup, containers=args.container, units=args.unit),
        interval=args.interval,
        duration=args.duration,
        flush=args.flush,
        pss_budget=args.pss_budget,
        pss_max_age=args.pss_max_age,
        label=args.label,
        redact=not args.no_redact,
        force=args.force,
        finalize=not args.no_finalize,
        control_stdin=args.control_stdin,
        status_stdout=args.status_stdout,
        progress=sys.stderr.isatty() and not args.status_stdout,
        argv=["loadmem", *sys.argv[1:]],
        lean=True,
        mappings=not args.no_mappings,
        mappings_every=args.mappings_every,
        compact_every=max(0, args.compact_every),
    )
    msg = sys.stderr if args.status_stdout or args.json else sys.stdout
    options.announce = lambda line: print(f"watching: {line}", file=msg, flush=True)
    result = Recorder(options).run()
    failures = ", ".join(f"{k} x{v}" for k, v in sorted(result.failures.items()))
    print(
        f"recorded {result.ticks} samples of {result.processes} processes "
        f"({result.stop_reason}) into {result.path}"
        + (f"; failed reads: {failures}" if failures else ""),
        file=msg,
    )
    print(f"next: loadmem analyze {result.path}", file=msg)
    if args.json:
        import json

        print(json.dumps({
            "command": "record", "exit_code": 0, "recording": str(result.path),
            "status": result.status, "samples": result.ticks, "processes": result.processes,
            "stop_reason": result.stop_reason, "failed_reads": dict(result.failures),
            "finalized": result.finalized,
        }), flush=True)
    return 0
