"""Load test a server with a Locust scenario while recording memory: baseline, load, observe.

Phases: BASELINE (recording, no load) -> LOAD (Locust drives the target headless; per-second
request statistics go into the recording) -> OBSERVE (load stopped, recording goes on: where
a slow memory drain shows up). The server on this machine is found by the port of --target
(the process listening there and its whole tree); the Locust processes are recorded too,
labelled as load generator. At the end: a summary, the analyzer's verdict, and with --gate
the CI gates decide the exit code.

Ctrl-C: during baseline stops the run; during load stops the load and observes at most 60 s
more; during observe ends it early (everything kept). A second Ctrl-C stops at once; the
recording stays readable.

examples:
  loadmem run scenarios/demo.py --target demo                 # about two minutes
  loadmem run scenarios/demo.py --target demo --demo-variant frozen --label fixed
  loadmem run scenarios/browse.py --target http://127.0.0.1:8080 --users 50 \\
      --load 5m --observe 30m --label v2.3.1
  loadmem run scenarios/step_load.py --target http://127.0.0.1:8080  # the shape sets users
  loadmem run scenarios/browse.py --target http://10.0.0.5:8080 --no-record  # see
      docs/multi-machine.md to join it to a `loadmem record` made on that server
  loadmem run scenarios/demo.py --target demo --gate ci/loadmem.toml   # exit 1 if over budget

outputs: --out DIR (default recordings/<scenario>-<UTC time>): the recorder's tables plus
events (phase_start/phase_end) and requests (per second, per endpoint and "Aggregated").
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from loadmem.errors import EXIT_OK, LoadmemError
from loadmem.units import duration_arg, percent_arg

if TYPE_CHECKING:
    from loadmem.load.orchestrator import RunOptions

#: --target demo: short enough that the README's first command ends in about two minutes.
DEMO_DEFAULTS = {"baseline": 10.0, "load": 30.0, "observe": 60.0}
DEFAULTS = {"baseline": 30.0, "load": 60.0, "observe": 600.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", metavar="SCENARIO",
                        help="a locustfile (any ordinary one works), or the name of a bundled "
                             "scenario: demo, browse, step_load")
    parser.add_argument("--target", required=True, metavar="URL|demo",
                        help="base URL of the server under test (http://127.0.0.1:8080), or "
                             "`demo` to start the bundled pre-fork demo server on a free port")
    g = parser.add_argument_group("load")
    g.add_argument("--users", type=int, default=10, metavar="N",
                   help="concurrent Locust users (default 10)")
    g.add_argument("--spawn-rate", type=float, default=10.0, metavar="N",
                   help="users started per second (default 10)")
    g.add_argument("--processes", type=int, default=0, metavar="N",
                   help="run Locust as a master with N local worker processes (for more load "
                        "than one CPU core can generate)")
    g.add_argument("--master", action="store_true",
                   help="run Locust as a master; workers on other machines connect with "
                        "`loadmem run SCENARIO --worker --master-host THIS_HOST --target URL`")
    g.add_argument("--expect-workers", type=int, default=1, metavar="N",
                   help="with --master: wait for N workers before the load starts (default 1)")
    g.add_argument("--worker", action="store_true",
                   help="be a Locust worker only (no recording, no phases): the master decides")
    g.add_argument("--master-host", default="127.0.0.1", metavar="HOST",
                   help="with --worker: the master's address (default 127.0.0.1)")
    g.add_argument("--master-port", type=int, default=5557, metavar="PORT",
                   help="Locust master port (default 5557)")
    p = parser.add_argument_group("phases (durations: 90, 30s, 5m, 2h)")
    p.add_argument("--baseline", type=duration_arg, default=None, metavar="D",
                   help="recording before the load (default 30s; 10s with --target demo)")
    p.add_argument("--load", type=duration_arg, default=None, metavar="D",
                   help="load duration (default 1m; 30s with --target demo); with a "
                        "LoadTestShape scenario the shape decides unless --load is given")
    p.add_argument("--observe", type=duration_arg, default=None, metavar="D",
                   help="recording after the load (default 10m; 1m with --target demo); "
                        "may be hours")
    r = parser.add_argument_group("recording")
    r.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="recording directory (default recordings/<scenario>-<UTC time>)")
    r.add_argument("--label", default=None,
                   help="names the release under test (default: `git describe --always "
                        "--dirty` inside a git repository)")
    r.add_argument("--watch-pid", type=int, action="append", default=[], metavar="PID",
                   help="also watch this process and its children (repeatable)")
    r.add_argument("--watch-match", action="append", default=[], metavar="REGEX",
                   help="also watch processes whose command line matches (repeatable)")
    r.add_argument("--no-record", action="store_true",
                   help="no memory recording here: write only the run's events and request "
                        "stats (for a server on another machine; docs/multi-machine.md)")
    r.add_argument("--attach-to", type=Path, default=None, metavar="RECORDING",
                   help="with --no-record: at the end, copy this run's events and request "
                        "stats into RECORDING (a `loadmem record` made on the server, e.g. on "
                        "a shared disk), aligned by wall-clock time")
    r.add_argument("--interval", type=duration_arg, default=None, metavar="D",
                   help="recorder sampling interval (default: the recorder's, 1s)")
    r.add_argument("--pss-budget", type=percent_arg, default=None, metavar="PCT",
                   help="recorder CPU budget for smaps_rollup reads (default: the recorder's, 2%%)")
    r.add_argument("--pss-max-age", type=duration_arg, default=None, metavar="D",
                   help="re-read each process's PSS at least this often, budget permitting "
                        "(default: the recorder's, 15s; processes that fault are re-read sooner)")
    d = parser.add_argument_group("demo server (--target demo)")
    d.add_argument("--demo-variant", choices=("default", "frozen"), default="default",
                   help="default: idle GC unshares the preloaded table (memory drains with flat "
                        "RSS); frozen: gc.freeze() before fork, the known fix")
    d.add_argument("--demo-workers", type=int, default=4, metavar="N",
                   help="worker processes (default 4)")
    d.add_argument("--demo-table-mb", type=float, default=100.0, metavar="MB",
                   help="size of the preloaded table in MiB (default 100)")
    d.add_argument("--demo-idle-gc-after", type=duration_arg, default=None, metavar="D",
                   help="idle time before a worker's housekeeping GC (default: the demo's, 3s)")
    d.add_argument("--demo-idle-gc-stagger", type=duration_arg, default=None, metavar="D",
                   help="extra wait per worker index (default: the demo's, 5s)")
    parser.add_argument("--gate", nargs="?", const="", default=None, metavar="CONFIG",
                        help="run the CI gates at the end and exit 1 if one fails (CONFIG: a "
                             "loadmem.toml; default: found from the current directory)")


def git_label(cwd: Path | None = None) -> str | None:
    """``git describe --always --dirty`` when run inside a git repository, else None."""
    try:
        proc = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=cwd,
                              capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def default_out(scenario: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path("recordings") / f"{Path(scenario).stem}-{stamp}"


def _worker(args: argparse.Namespace) -> int:
    """--worker: run a Locust worker in the foreground until the master ends the test."""
    from loadmem.load.preflight import check_scenario, resolve_scenario
    from loadmem.load.target import parse_target

    target = parse_target(args.target)
    if target.is_demo:
        raise LoadmemError("--worker cannot use --target demo", "give the master's target URL")
    scenario = check_scenario(resolve_scenario(args.scenario))
    cmd = [sys.executable, "-m", "loadmem.load.locust_child", str(scenario.path),
           "--host", target.url, "--mode", "worker", "--master-host", args.master_host,
           "--master-port", str(args.master_port), "--log-level", "INFO"]
    print(f"Locust worker connecting to {args.master_host}:{args.master_port}", file=sys.stderr)
    return subprocess.run(cmd, stdout=subprocess.DEVNULL).returncode


def build_options(args: argparse.Namespace) -> RunOptions:
    from loadmem.demo.config import DemoConfig
    from loadmem.load.orchestrator import RunOptions

    if args.processes and args.master:
        raise LoadmemError("--processes and --master cannot be combined",
                           "--processes runs local workers; --master waits for remote ones")
    if args.users < 1 or args.spawn_rate <= 0:
        raise LoadmemError("--users must be 1 or more and --spawn-rate above 0")
    demo = args.target.strip().lower() == "demo"
    defaults = DEMO_DEFAULTS if demo else DEFAULTS
    demo_timers = {k: v for k, v in (("idle_gc_after", args.demo_idle_gc_after),
                                     ("idle_gc_stagger", args.demo_idle_gc_stagger))
                   if v is not None}  # unset: the demo server's own defaults
    return RunOptions(
        scenario=args.scenario,
        target=args.target,
        out=args.out or default_out(args.scenario),
        users=args.users,
        spawn_rate=args.spawn_rate,
        baseline=args.baseline if args.baseline is not None else defaults["baseline"],
        load=args.load if args.load is not None else defaults["load"],
        load_is_default=args.load is None,
        observe=args.observe if args.observe is not None else defaults["observe"],
        label=args.label if args.label is not None else git_label(),
        watch_pids=args.watch_pid,
        watch_matches=args.watch_match,
        no_record=args.no_record,
        processes=args.processes,
        master=args.master,
        expect_workers=args.expect_workers,
        master_port=args.master_port,
        demo=DemoConfig(variant=args.demo_variant, workers=args.demo_workers,
                        table_mb=args.demo_table_mb, **demo_timers) if demo else DemoConfig(),
        interval=args.interval,
        pss_budget=args.pss_budget,
        pss_max_age=args.pss_max_age,
        argv=["loadmem", *sys.argv[1:]],
    )


def run(args: argparse.Namespace) -> int:
    if args.worker:
        return _worker(args)
    from loadmem.load.orchestrator import Orchestrator
    from loadmem.load.report import finish

    if args.attach_to is not None and not args.no_record:
        raise LoadmemError("--attach-to needs --no-record",
                           "it joins a run-only recording to one made on another machine")
    opts = build_options(args)
    result = Orchestrator(opts).execute()
    if args.attach_to is not None:
        from loadmem.load.attach import attach_run

        counts = attach_run(result.path, args.attach_to)
        print(f"attached {counts.get('events', 0)} events and {counts.get('requests', 0)} "
              f"request rows to {args.attach_to}")
    code = finish(result, gate=args.gate)
    if result.status == "interrupted":
        return 130
    return code if code is not None else EXIT_OK
