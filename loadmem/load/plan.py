"""The run's plan, decided before anything records: Locust's command line, targets, phases.

``make_plan`` checks everything that can be checked up front (issue: a bad argument must
cost one line and exit 2, never a half-made recording):

1. loadmem's own arguments: ``--target`` parsed strictly, durations above 0, ``--gate``'s
   config readable, ``--attach-to`` a recording, no ``--target`` together with ``-H``
   and no ``--load`` together with ``-t``;
2. Locust's arguments, by Locust: the run's Locust child starts now and parses them with
   Locust's own parser (config files, ``LOCUST_*`` variables, custom arguments), loads the
   locustfiles and, inside Locust's ``init`` event, reports the resolved options and User
   classes, then waits (``locust_link``); on bad input it is aborted before any other
   listener runs;
3. what Locust would accept but a recorded run cannot use: a web UI (``--headful``,
   ``--autostart``), ``--list``/``--show-task-ratio``, ``--master`` with ``--worker``,
   ``--processes 0`` or below -1, ``-u 0``, ``-t 0`` (Locust's "run forever");
4. the targets: ``--target``, else Locust's resolved ``host`` (``-H``, ``LOCUST_HOST``,
   config), else each User class's ``host``; each parsed strictly, recordable from here,
   and answering a TCP connect.

The Locust command line is the user's, plus ``--headless`` and what loadmem's own options
say in Locust's words (``-H`` from ``--target``, ``-t`` from ``--load``), appended so they
take Locust's command-line precedence. Values for options set nowhere (loadmem's default
users, spawn rate and load length; the demo server's URL) go with the go message, as if
given on the command line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadmem.errors import LoadmemError
from loadmem.load.locust_link import LocustProcess
from loadmem.load.preflight import ScenarioInfo, check_target, resolve_scenario, scenario_info
from loadmem.load.target import Target, check_recordable, parse_target

#: When -u/-r are set nowhere, a memory test still needs load: 10 users at 10/s.
DEFAULT_USERS = 10
DEFAULT_SPAWN_RATE = 10.0
#: Locust options loadmem refuses, with the reason (loadmem runs Locust headless).
REFUSED = {
    "headful": "--headful starts Locust's web UI; loadmem runs Locust headless",
    "autostart": "--autostart is for Locust's web UI; loadmem runs Locust headless",
    "list_commands": "-l/--list only lists the User classes: run `locust -f ... --list`",
    "show_task_ratio": "--show-task-ratio only prints: run `locust -f ... --show-task-ratio`",
    "show_task_ratio_json": "--show-task-ratio-json only prints: run it with `locust`",
}


@dataclass
class RunPlan:
    """What the run will do; every field is checked."""

    scenario: ScenarioInfo
    locust: LocustProcess  # started, waiting in Locust's init event for go() or abort()
    target: Target  # the first target (names it in outputs); demo: filled in at start
    overrides: dict[str, Any] = field(default_factory=dict)  # sent with go()
    targets: list[Target] = field(default_factory=list)
    load: float | None = None  # None: the shape decides
    load_from_loadmem: bool = False  # --load given: loadmem stops a shape at that time
    users: int | None = None
    spawn_rate: float | None = None
    processes: int | None = None
    master: bool = False
    worker: bool = False
    expect_workers: int = 1
    workers_max_wait: float | None = None

    @property
    def is_demo(self) -> bool:
        return self.target.is_demo


def is_worker(argv: list[str]) -> bool:
    """``--worker`` on Locust's command line or in LOCUST_MODE_WORKER: a bare worker."""
    import os

    return has_option(argv, None, "--worker") or os.environ.get(
        "LOCUST_MODE_WORKER", "").lower() in ("1", "true", "yes")


def has_option(argv: list[str], short: str | None, long: str) -> bool:
    """Whether Locust's ``argv`` gives this option on the command line (any spelling)."""
    for arg in argv:
        if arg == "--":
            break
        if arg == long or arg.startswith(long + "="):
            return True
        if short and (arg == short or (arg.startswith(short) and not arg.startswith("--"))):
            return True
    return False


def _positive(name: str, value: float | None, hint: str) -> None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise LoadmemError(f"{name} must be more than 0, not {value:g}", hint)


def _check_own(opts: Any) -> Target | None:
    """loadmem's own arguments, before any child runs."""
    target = parse_target(opts.target) if opts.target is not None else None
    _positive("--load", opts.load, "e.g. --load 1m")
    for name in ("baseline", "observe"):
        value = getattr(opts, name)
        if value is not None and (value < 0 or not math.isfinite(value)):
            raise LoadmemError(f"--{name} must be 0 or more", f"e.g. --{name} 30s")
    if opts.interval is not None:
        _positive("--interval", opts.interval, "e.g. --interval 1s")
    if opts.attach_to is not None:
        if not opts.no_record:
            raise LoadmemError("--attach-to needs --no-record",
                               "it joins a run-only recording to one made on another machine")
        meta = Path(opts.attach_to) / "meta.json"
        try:
            json.loads(meta.read_text())
        except (OSError, ValueError) as e:
            raise LoadmemError(
                f"--attach-to {opts.attach_to}: not a readable recording "
                f"({getattr(e, 'strerror', None) or e})",
                "give the directory `loadmem record` writes on the server",
            ) from None
    if opts.gate is not None:
        from loadmem.gates import resolve_config

        resolve_config(Path(opts.gate) if opts.gate else None, Path.cwd())
    if opts.demo.workers < 1 or opts.demo.table_mb < 0:
        raise LoadmemError("--demo-workers must be 1 or more and --demo-table-mb 0 or more")
    return target


def _local_master_port(argv: list[str]) -> list[str]:
    """``--processes`` (on the command line or in LOCUST_PROCESSES) without a master port:
    the master and its forked workers talk over loopback on a free port, instead of
    Locust's default of port 5557 on every interface (two runs on one machine would clash,
    and local workers need no network)."""
    import os
    import socket

    if not (has_option(argv, None, "--processes") or os.environ.get("LOCUST_PROCESSES")):
        return []
    if any(has_option(argv, None, o) for o in ("--master-port", "--master-bind-port",
                                               "--worker")):
        return []
    if os.environ.get("LOCUST_MASTER_NODE_PORT") or os.environ.get("LOCUST_MASTER_BIND_PORT"):
        return []
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    bind = [] if has_option(argv, None, "--master-bind-host") else ["--master-bind-host",
                                                                    "127.0.0.1"]
    return [*bind, "--master-bind-port", port, "--master-port", port]


def locust_argv_from(opts: Any) -> list[str]:
    """The user's Locust arguments, with the SCENARIO positional as ``-f``."""
    argv = list(opts.locust_args)
    if opts.scenario is not None:
        if has_option(argv, "-f", "--locustfile"):
            raise LoadmemError("a SCENARIO and -f/--locustfile both given", "give one of them")
        argv = ["-f", str(resolve_scenario(opts.scenario)), *argv]
    return argv


def _check_locust(info: ScenarioInfo) -> None:
    """What Locust accepts but a recorded, headless, bounded run cannot use."""
    for key, why in REFUSED.items():
        if info.option(key):
            raise LoadmemError(why)
    # (--master with --worker or --processes, --processes below -1: Locust refuses them.)
    if info.options.get("processes") == 0:
        raise LoadmemError("--processes 0: give 1 or more (-1: one per CPU)",
                           "or leave it out to run Locust in one process")
    users = info.option("num_users")
    if users is not None and users < 1 and info.shape is None:
        raise LoadmemError(f"-u/--users {users}: give 1 or more", "e.g. -u 10")
    if info.options.get("run_time") == 0:
        raise LoadmemError("-t/--run-time 0 would run the load forever",
                           "give a duration above 0, e.g. -t 1m (or --load 1m)")


def _targets(opts: Any, given: Target | None, info: ScenarioInfo) -> list[Target]:
    if given is not None:
        return [given]
    host = info.option("host")
    if host:
        return [parse_target(host, "-H/--host (or LOCUST_HOST, or the config file)")]
    found: dict[tuple[str, int, str], Target] = {}
    for u in info.users:
        if not u.host:
            raise LoadmemError(f"no target: User class {u.name} has no host",
                               "give --target URL (or -H URL), or set host on the class")
        t = parse_target(u.host, f"host of User class {u.name}")
        found.setdefault((t.host, t.port, t.url), t)
    if not found:
        raise LoadmemError("no target", "give --target URL, -H URL, or `--target demo`")
    return list(found.values())


def make_plan(opts: Any, progress: Callable[[str], None] | None = None,
              check_reach: bool = True) -> RunPlan:
    """Check everything and decide the run (``opts``: ``RunOptions``); raise ``LoadmemError``.

    The returned plan holds the Locust child, started and waiting: the caller must
    ``plan.locust.go(plan.overrides)`` or ``plan.locust.abort()``.
    """
    given = _check_own(opts)
    argv = locust_argv_from(opts)
    if given is not None and has_option(argv, "-H", "--host"):
        raise LoadmemError("--target and -H/--host both given",
                           "they are the same setting (--target is loadmem's name): give one")
    if opts.load is not None and has_option(argv, "-t", "--run-time"):
        raise LoadmemError("--load and -t/--run-time both given",
                           "they are the same setting (--load is loadmem's name): give one")
    argv = [*argv, "--headless", *_local_master_port(argv)]
    if given is not None and not given.is_demo:
        argv += ["-H", given.host_for_locust]
    if opts.load is not None:
        argv += ["-t", f"{max(1, math.ceil(opts.load))}s"]  # Locust's -t is whole seconds
    locust = LocustProcess(argv)
    locust.start()
    try:
        info = scenario_info(locust.wait_ready(progress=progress))
        plan = _decide(opts, given, info, locust)
        for t in plan.targets:
            check_recordable(t, opts.watch_pids, opts.watch_matches, opts.no_record)
        if check_reach:
            for t in plan.targets:
                check_target(t)
    except BaseException:
        locust.abort()
        raise
    return plan


def _decide(opts: Any, given: Target | None, info: ScenarioInfo,
            locust: LocustProcess) -> RunPlan:
    _check_locust(info)
    plan = RunPlan(scenario=info, locust=locust, target=given or Target("", "", 0),
                   worker=info.runner == "worker")
    if plan.worker:
        if given is not None and given.is_demo:
            raise LoadmemError("--worker cannot use --target demo",
                               "a worker loads the master's target: give its URL or nothing")
        return plan
    # The load phase's length: --load, else Locust's -t (command line, env, config), else
    # the shape, else loadmem's default.
    shape = info.shape is not None
    run_time = info.option("run_time")
    if opts.load is not None:
        plan.load, plan.load_from_loadmem = float(opts.load), True
    elif shape:
        plan.load = None
    elif run_time:
        plan.load = float(run_time)
    else:
        plan.load = float(max(1, math.ceil(opts.default_load)))
        plan.overrides["run_time"] = int(plan.load)
    if not shape:
        if info.option("num_users") is None:
            plan.overrides["num_users"] = DEFAULT_USERS
        if info.option("spawn_rate") is None:
            plan.overrides["spawn_rate"] = DEFAULT_SPAWN_RATE
    plan.users = info.option("num_users", None if shape else DEFAULT_USERS)
    plan.spawn_rate = info.option("spawn_rate", None if shape else DEFAULT_SPAWN_RATE)
    processes = info.option("processes")
    plan.processes = processes if processes else None
    plan.master = info.runner == "master"
    plan.expect_workers = int(info.option("expect_workers", 1))
    wait = info.option("expect_workers_max_wait")
    plan.workers_max_wait = float(wait) if wait else None
    plan.targets = _targets(opts, given, info)
    plan.target = plan.targets[0]
    return plan
