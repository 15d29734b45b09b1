"""Load test a server with Locust while recording memory: baseline, load, observe.

Phases: BASELINE (recording, no load) -> LOAD (Locust runs headless, through its own
command line: per-second request statistics go into the recording) -> OBSERVE (load
stopped, recording goes on: where a slow memory drain shows up). The server on this machine
is found by the port of its URL (the process listening there and its whole tree); the
Locust processes are recorded too, labelled as load generator. At the end: a summary, the
analyzer's verdict, and the exit code (below).

Locust's options work as under `locust --headless`, with Locust's meaning and precedence
(command line > LOCUST_* variables > --config / locust.conf / ~/.locust.conf /
[tool.locust] in pyproject.toml): -f/--locustfile (a file, a comma list, a directory),
-H/--host, -u/--users, -r/--spawn-rate, -t/--run-time, --tags, --exclude-tags,
--exit-code-on-error, -s/--stop-timeout, --reset-stats, --processes, --master,
--expect-workers, --worker, --master-host, --master-port, --csv, --html, -L/--loglevel,
User class names, a LoadTestShape, and the locustfile's own arguments
(events.init_command_line_parser); anything after `--` goes to Locust untouched. Every
event hook fires as under Locust. `locust --help` lists them all.

Where loadmem and Locust overlap:
  SCENARIO          the first argument, when it is not an option: same as -f SCENARIO
                    (or a bundled scenario's name: demo, browse, step_load)
  --target URL      loadmem's name for -H/--host (give one of them); `demo` starts the
                    bundled demo server. Default: -H, else LOCUST_HOST/config, else the
                    User classes' `host` attributes.
  --load D          loadmem's name for -t/--run-time: the load phase (give one of them).
                    Default 1m (30s with --target demo); with a LoadTestShape the shape
                    decides unless --load is given.
  -u/-r             when set nowhere (command line, LOCUST_*, config), loadmem uses 10 users
                    at 10/s where Locust would use 1 at 1/s: a memory test needs load.
  --json            loadmem's (the run's summary as JSON on stdout); Locust's final stats
                    are in the recording, or use --json-file FILE for Locust's own.
  --headful, --autostart (the web UI), -l, --show-task-ratio: refused (loadmem runs
                    Locust headless); --web-* options are ignored, as under --headless.
  -t                lasts what it says (plain Locust 2.47 ends early by its start-up time).

Ctrl-C: during baseline stops the run; during load stops the load and observes at most 60 s
more; during observe ends it early (everything kept). A second Ctrl-C stops at once; the
recording stays readable.

exit codes (the same for every loadmem command):
  0    ok
  1    the run failed a check: the load failed as Locust decides it (then Locust's own
       non-zero code is kept: --exit-code-on-error N, a listener's
       environment.process_exit_code), no request completed during the load, a finding
       at or above --fail-on (default warning, as `loadmem analyze`), or a --gate failed
  2    bad input (options, locustfile, target, config): one line, nothing recorded
  130  interrupted (a second Ctrl-C or SIGTERM)

examples:
  loadmem run scenarios/demo.py --target demo                 # about two minutes
  loadmem run -f locustfile.py -H http://127.0.0.1:8080 -u 4 -r 4 -t 10s --observe 1m
  loadmem run scenarios/browse.py --target http://127.0.0.1:8080 --users 50 \\
      --load 5m --observe 30m --label v2.3.1
  loadmem run scenarios/step_load.py --target http://127.0.0.1:8080  # the shape sets users
  loadmem run -f tests/ --tags checkout --target http://127.0.0.1:8080 -- --my-arg 5
  loadmem run scenarios/browse.py --target http://10.0.0.5:8080 --no-record  # see
      docs/multi-machine.md to join it to a `loadmem record` made on that server
  loadmem run scenarios/demo.py --target demo --gate ci/loadmem.toml   # exit 1 if over budget

outputs: --out DIR (default recordings/<scenario>-<UTC time>): the recorder's tables plus
events (phase_start/phase_end) and requests (per second, per endpoint and "Aggregated").
In CI (no terminal) a heartbeat line every --heartbeat (30s); under GitHub Actions the
Markdown summary goes to $GITHUB_STEP_SUMMARY and failures become ::error annotations.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from loadmem.errors import LoadmemError
from loadmem.load.locust_argv import locustfile_values
from loadmem.units import duration_arg, percent_arg

if TYPE_CHECKING:
    from loadmem.load.orchestrator import RunOptions

#: --target demo: short enough that the README's first command ends in about two minutes.
DEMO_DEFAULTS = {"baseline": 10.0, "load": 30.0, "observe": 60.0}
DEFAULTS = {"baseline": 30.0, "load": 60.0, "observe": 600.0}
FAIL_ON = ("info", "warning", "critical", "never")


def split_argv(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[list[str], list[str]]:
    """Split ``loadmem run``'s arguments into loadmem's own and Locust's.

    loadmem's options (exact spellings, ``--opt VALUE`` or ``--opt=VALUE``) and their values
    are loadmem's; everything else is Locust's, in order (Locust's parser, which knows the
    locustfile's custom arguments, judges it in the preflight). Everything after ``--`` is
    Locust's. The first remaining argument, when it is not an option, is the SCENARIO.
    """
    own: list[str] = []
    locust: list[str] = []
    actions = parser._option_string_actions
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            locust += argv[i + 1:]
            break
        name, eq, _value = arg.partition("=")
        action = actions.get(name) if arg.startswith("-") else None
        if action is None:
            locust.append(arg)
            i += 1
            continue
        own.append(arg)
        i += 1
        takes = action.nargs not in (0,) and not isinstance(
            action, argparse._StoreTrueAction | argparse._StoreFalseAction |
            argparse._HelpAction | argparse._StoreConstAction)
        if takes and not eq and i < len(argv):
            nxt = argv[i]
            if action.nargs == "?" and (nxt.startswith("-") or nxt == "--"):
                continue
            own.append(nxt)
            i += 1
    if locust and not locust[0].startswith("-"):
        own.append(locust.pop(0))  # the SCENARIO positional
    return own, locust


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", metavar="SCENARIO", nargs="?", default=None,
                        help="a locustfile or directory (same as -f; any ordinary locustfile "
                             "works), or a bundled scenario's name: demo, browse, step_load")
    parser.add_argument("--target", default=None, metavar="URL|demo",
                        help="base URL of the server under test (http://127.0.0.1:8080; "
                             "user:password@ becomes Locust's basic auth and is never "
                             "recorded), or `demo` to start the bundled pre-fork demo server on "
                             "a free port. loadmem's name for Locust's -H/--host")
    p = parser.add_argument_group("phases (durations: 90, 30s, 5m, 2h)")
    p.add_argument("--baseline", type=duration_arg, default=None, metavar="D",
                   help="recording before the load (default 30s; 10s with --target demo)")
    p.add_argument("--load", type=duration_arg, default=None, metavar="D",
                   help="load duration, loadmem's name for -t/--run-time (default 1m; 30s "
                        "with --target demo); with a LoadTestShape the shape decides unless "
                        "--load is given")
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
    r.add_argument("--mappings-every", type=duration_arg, default=None, metavar="D",
                   help="also snapshot every mapping of the target processes (smaps) every D "
                        "of a long run; always taken at the end of each phase")
    r.add_argument("--no-mappings", action="store_true",
                   help="take no per-mapping snapshots (the verdict then cannot say where "
                        "memory was unshared)")
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
    c = parser.add_argument_group("checks and CI output")
    c.add_argument("--gate", nargs="?", const="", default=None, metavar="CONFIG",
                   help="run the CI gates at the end and exit 1 if one fails (CONFIG: a "
                        "loadmem.toml; default: found from the current directory); checked "
                        "before the run starts")
    c.add_argument("--fail-on", choices=FAIL_ON, default="warning",
                   help="exit 1 when a finding of the verdict reaches this severity (default "
                        "warning, as `loadmem analyze`; never: only load failures and gates)")
    c.add_argument("--heartbeat", type=duration_arg, default=30.0, metavar="D",
                   help="without a terminal (CI logs): one progress line this often "
                        "(default 30s; 0: none)")
    c.add_argument("--json", action="store_true",
                   help="print the run's summary as one JSON object on stdout at the end "
                        "(the text summary goes to stderr)")


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


def _worker(opts: RunOptions) -> int:
    """--worker: a bare Locust worker in the foreground (no recording, no phases) until the
    master ends the test: Locust's own entry point and output, Locust's exit code."""
    from loadmem.load.plan import has_option, locust_argv_from
    from loadmem.load.preflight import child_cmd, child_env
    from loadmem.load.target import parse_target

    argv = [*locust_argv_from(opts), "--headless"]
    if has_option(argv, None, "--master"):
        raise LoadmemError("--master and --worker cannot be combined",
                           "one process is either the master or a worker")
    if opts.target is not None:
        target = parse_target(opts.target)
        if target.is_demo:
            raise LoadmemError("--worker cannot use --target demo",
                               "a worker loads the master's target: give its URL or nothing")
        argv += ["-H", target.host_for_locust]
    print("Locust worker (no recording): the master decides the load", file=sys.stderr)
    return subprocess.run(child_cmd(), env=child_env(argv), stdin=subprocess.DEVNULL).returncode


def build_options(args: argparse.Namespace) -> RunOptions:
    from loadmem.demo.config import DemoConfig
    from loadmem.load.orchestrator import RunOptions

    demo = args.target is not None and args.target.strip().lower() == "demo"
    defaults = DEMO_DEFAULTS if demo else DEFAULTS
    demo_timers = {k: v for k, v in (("idle_gc_after", args.demo_idle_gc_after),
                                     ("idle_gc_stagger", args.demo_idle_gc_stagger))
                   if v is not None}  # unset: the demo server's own defaults
    name = args.scenario or _locustfile_name(args.locust_args) or "locustfile"
    return RunOptions(
        scenario=args.scenario,
        target=args.target,
        out=args.out or default_out(name),
        locust_args=list(args.locust_args),
        baseline=args.baseline if args.baseline is not None else defaults["baseline"],
        load=args.load,
        default_load=defaults["load"],
        observe=args.observe if args.observe is not None else defaults["observe"],
        label=args.label if args.label is not None else git_label(),
        watch_pids=args.watch_pid,
        watch_matches=args.watch_match,
        no_record=args.no_record,
        attach_to=args.attach_to,
        gate=args.gate,
        demo=DemoConfig(variant=args.demo_variant, workers=args.demo_workers,
                        table_mb=args.demo_table_mb, **demo_timers) if demo else DemoConfig(),
        interval=args.interval,
        pss_budget=args.pss_budget,
        pss_max_age=args.pss_max_age,
        mappings=not args.no_mappings,
        mappings_every=args.mappings_every,
        heartbeat=args.heartbeat,
        argv=["loadmem", *sys.argv[1:]],
    )


def _locustfile_name(argv: list[str]) -> str | None:
    """The first locustfile named by -f/--locustfile (for the default --out), if any."""
    values = locustfile_values(argv)
    if not values:
        return None
    first = values[0].split(",")[0].rstrip("/")
    return Path(first).stem or None


def run(args: argparse.Namespace) -> int:
    import io

    from loadmem.load import ci
    from loadmem.load.orchestrator import Orchestrator
    from loadmem.load.plan import is_worker, locust_argv_from
    from loadmem.load.report import finish

    if not hasattr(args, "locust_args"):
        args.locust_args = []
    opts = build_options(args)
    if is_worker(locust_argv_from(opts)):
        return _worker(opts)
    orchestrator = Orchestrator(opts)
    orchestrator.plan()  # everything checked: exit 2 before anything records
    result = orchestrator.execute()
    human = sys.stderr if args.json else sys.stdout
    if args.attach_to is not None:
        from loadmem.load.attach import attach_run

        counts = attach_run(result.path, args.attach_to)
        print(f"attached {counts.get('events', 0)} events and {counts.get('requests', 0)} "
              f"request rows to {args.attach_to}", file=human)
    text = io.StringIO()
    try:
        done = finish(result, gate=args.gate, out=text)
    finally:
        human.write(text.getvalue())
        human.flush()
    code = ci.exit_code(result, done, args.fail_on)
    ci.github_outputs(result, done, args.fail_on, text.getvalue().splitlines(),
                      stdout=sys.stderr if args.json else sys.stdout)
    if args.json:
        ci.print_json(ci.summary_json(result, done, args.fail_on, code), sys.stdout)
    return code
