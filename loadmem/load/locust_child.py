"""The Locust side of ``loadmem run``: a child process that drives Locust's library API.

Run as ``python -m loadmem.load.locust_child SCENARIO --host URL ...``. It is a separate
process on purpose: Locust monkey-patches the standard library with gevent, so a sampler
thread inside it is a green thread that stalls while a user task burns CPU, and importing
``requests``/``urllib3`` before ``locust`` breaks ``import locust``. The loadmem parent
therefore never imports Locust; it reads this child's stdout instead.

Protocol: one JSON object per line on stdout (logs go to stderr):

- ``{"type": "ready", "users": [...], "shape": NAME|null, "pid": PID}`` after the scenario
  loaded and the runner exists;
- ``{"type": "stats", "mono": M, "ts": EPOCH, "interval_s": S, "users": N, "rows": [...]}``
  once per ``--stats-interval``: per endpoint and ``"Aggregated"``, the requests and failures
  completed in the interval and p50/p95/p99/avg/max ms over those requests only, computed by
  diffing each ``StatsEntry.response_times`` histogram against the previous snapshot and
  applying Locust's own ``calculate_response_time_percentile`` to the difference;
- ``{"type": "totals", "mono": M, "rows": [...]}`` once at the end: Locust's cumulative
  figures per endpoint and in total;
- ``{"type": "error", "message": TEXT, "file": PATH, "line": N}`` when something fails
  (a scenario that does not load, no User class, a runner error).

``--check`` only loads the scenario and prints ``ready`` (or ``error``): that is the
preflight the parent runs, so that a broken scenario is reported before anything records.

The load ends after ``--run-time`` seconds, when a ``LoadTestShape`` returns ``None`` from
``tick()``, or on SIGTERM/SIGINT. In library mode a shape that ends calls ``runner.stop()``
rather than ``quit()`` (Locust only quits by itself when it parsed ``--headless``), so this
module listens to ``test_stop`` to end the process.
"""

# Locust first: it monkey-patches the standard library (gevent); anything that imports
# ssl/socket-heavy libraries (requests, urllib3) before it breaks the patching.
import locust  # noqa: F401, I001  (import order matters; see above)

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
import traceback
from typing import Any

import gevent
from gevent.event import Event
from locust.env import Environment
from locust.stats import StatsEntry, calculate_response_time_percentile, diff_response_time_dicts
from locust.util.load_locustfile import load_locustfile

AGGREGATED = "Aggregated"


def emit(obj: dict[str, Any]) -> None:
    """Write one protocol line; the parent reads stdout line by line."""
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


class _Snapshot:
    """What one StatsEntry held at the previous tick: enough to diff the next one."""

    __slots__ = ("failures", "none", "requests", "response_times", "total_ms")

    def __init__(self, entry: StatsEntry | None = None):
        self.requests = entry.num_requests if entry else 0
        self.none = entry.num_none_requests if entry else 0
        self.failures = entry.num_failures if entry else 0
        self.total_ms = entry.total_response_time if entry else 0
        self.response_times: dict[int, int] = dict(entry.response_times) if entry else {}


def interval_row(entry: StatsEntry, prev: _Snapshot) -> tuple[dict[str, Any], _Snapshot]:
    """Counts and latency figures of the requests ``entry`` completed since ``prev``."""
    now = _Snapshot(entry)
    requests = now.requests - prev.requests
    timed = requests - (now.none - prev.none)
    hist = diff_response_time_dicts(now.response_times, prev.response_times)
    row: dict[str, Any] = {
        "name": entry.name,
        "method": entry.method or "",
        "requests": requests,
        "failures": now.failures - prev.failures,
        "p50_ms": None,
        "p95_ms": None,
        "p99_ms": None,
        "avg_ms": None,
        "max_ms": None,
    }
    if timed > 0 and hist:
        for key, q in (("p50_ms", 0.50), ("p95_ms", 0.95), ("p99_ms", 0.99)):
            row[key] = float(calculate_response_time_percentile(hist, timed, q))
        row["avg_ms"] = (now.total_ms - prev.total_ms) / timed
        # Locust keeps only a bucketed histogram (1 ms up to 100 ms, then 10 ms, ...), so the
        # interval's maximum is the largest bucket that received a request.
        row["max_ms"] = float(max(hist))
    return row, now


def totals_row(entry: StatsEntry) -> dict[str, Any]:
    timed = entry.num_requests - entry.num_none_requests
    has = timed > 0 and bool(entry.response_times)
    return {
        "name": entry.name,
        "method": entry.method or "",
        "requests": entry.num_requests,
        "failures": entry.num_failures,
        "p50_ms": float(entry.get_response_time_percentile(0.5)) if has else None,
        "p95_ms": float(entry.get_response_time_percentile(0.95)) if has else None,
        "p99_ms": float(entry.get_response_time_percentile(0.99)) if has else None,
        "avg_ms": entry.avg_response_time if has else None,
        "max_ms": float(entry.max_response_time) if has else None,
        "rps": entry.total_rps,
    }


class StatsStreamer:
    """Diffs the runner's stats every interval and emits one ``stats`` line."""

    def __init__(self, env: Environment, interval: float):
        self.env = env
        self.interval = interval
        self.prev: dict[tuple[str, str], _Snapshot] = {}
        self.prev_total = _Snapshot()
        self.last_mono = time.monotonic()

    def snapshot(self, skip_empty: bool = False, users: int | None = None) -> None:
        """Emit the interval since the last snapshot. ``users``: the user count to report
        instead of the runner's current one (the tail after ``quit()``, whose requests were
        sent by the users running until then, not by the 0 left after it)."""
        stats = self.env.stats
        assert stats is not None and self.env.runner is not None
        mono, ts = time.monotonic(), time.time()
        rows = []
        for key, entry in list(stats.entries.items()):
            row, self.prev[key] = interval_row(entry, self.prev.get(key, _Snapshot()))
            if row["requests"] or row["failures"]:
                rows.append(row)
        total, self.prev_total = interval_row(stats.total, self.prev_total)
        total["name"], total["method"] = AGGREGATED, ""
        rows.append(total)
        if skip_empty and not total["requests"] and not total["failures"]:
            return
        emit(
            {
                "type": "stats",
                "mono": mono,
                "ts": ts,
                "interval_s": mono - self.last_mono,
                "users": self.env.runner.user_count if users is None else users,
                "rows": rows,
            }
        )
        self.last_mono = mono

    def loop(self, stop: Event) -> None:
        parent = os.getppid()
        next_at = time.monotonic() + self.interval
        while not stop.is_set():
            stop.wait(max(0.0, next_at - time.monotonic()))
            if stop.is_set():
                break
            next_at += self.interval
            self.snapshot()
            if os.getppid() != parent:  # the loadmem parent died: do not load on, orphaned
                stop.set()

    def totals(self) -> None:
        stats = self.env.stats
        assert stats is not None
        rows = [totals_row(e) for e in stats.entries.values()]
        total = totals_row(stats.total)
        total["name"], total["method"] = AGGREGATED, ""
        rows.append(total)
        emit({"type": "totals", "mono": time.monotonic(), "ts": time.time(), "rows": rows})


def load_scenario(path: str) -> tuple[list[type], Any]:
    """Load the locustfile; raise ValueError with a user-facing message when unusable."""
    user_classes, shapes = load_locustfile(os.path.abspath(path))
    if not user_classes:
        raise ValueError(f"no User class in {path}")
    return list(user_classes.values()), (shapes[0] if shapes else None)


def _error_from_exception(path: str, e: BaseException) -> dict[str, Any]:
    if isinstance(e, SyntaxError):
        where = e.filename or path
        return {
            "type": "error",
            "kind": "syntax",
            "message": f"syntax error in {where}, line {e.lineno}: {e.msg}",
            "file": where,
            "line": e.lineno,
        }
    if isinstance(e, ValueError) and str(e).startswith("no User class"):
        return {"type": "error", "kind": "no-user", "message": str(e), "file": path}
    tb = traceback.extract_tb(e.__traceback__)
    frame = next((f for f in reversed(tb) if os.path.abspath(f.filename) ==
                  os.path.abspath(path)), None)
    where = f", line {frame.lineno}" if frame else ""
    return {
        "type": "error",
        "kind": "import",
        "message": f"{path}{where}: {type(e).__name__}: {e}",
        "file": path,
        "line": frame.lineno if frame else None,
    }


def _spawn_workers(args: argparse.Namespace, port: int) -> list[subprocess.Popen[bytes]]:
    """Start ``--processes`` local worker children of this process (Locust's own protocol)."""
    cmd = [sys.executable, "-m", "loadmem.load.locust_child", args.scenario, "--host", args.host,
           "--mode", "worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
    return [subprocess.Popen(cmd, stdout=subprocess.DEVNULL) for _ in range(args.processes)]


def run(args: argparse.Namespace) -> int:
    try:
        user_classes, shape = load_scenario(args.scenario)
    except BaseException as e:  # a locustfile may raise anything, even SystemExit
        emit(_error_from_exception(args.scenario, e))
        return 2
    ready = {
        "type": "ready",
        "pid": os.getpid(),
        "users": [u.__name__ for u in user_classes],
        "shape": type(shape).__name__ if shape is not None else None,
    }
    if args.check:
        emit(ready)
        return 0

    env = Environment(user_classes=user_classes, shape_class=shape, host=args.host,
                      locustfile=args.scenario)
    workers: list[subprocess.Popen[bytes]] = []
    if args.mode == "worker":
        runner = env.create_worker_runner(args.master_host, args.master_port)
        emit(ready)
        runner.greenlet.join()
        return 0
    if args.mode == "master":
        runner = env.create_master_runner(args.master_bind_host, args.master_port)
        if args.processes:  # port 0: Locust's RPC server picks a free one
            workers = _spawn_workers(args, runner.server.port)
        expect = args.processes or args.expect_workers
        deadline = time.monotonic() + args.worker_timeout
        while len(runner.clients.ready) < expect:
            if time.monotonic() > deadline:
                emit({"type": "error", "message": f"only {len(runner.clients.ready)} of {expect} "
                      f"Locust workers connected within {args.worker_timeout:.0f}s"})
                runner.quit()
                return 2
            gevent.sleep(0.1)
    else:
        runner = env.create_local_runner()

    done = Event()  # the load is over: run time elapsed, shape ended, or a signal
    env.events.test_stop.add_listener(lambda **_kw: done.set())
    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, done.set)

    streamer = StatsStreamer(env, args.stats_interval)
    emit(ready)
    stats_stop = Event()
    stats_greenlet = gevent.spawn(streamer.loop, stats_stop)
    stats_greenlet.link(lambda _g: done.set())  # parent gone -> stop too
    if shape is not None:
        runner.start_shape()
    else:
        runner.start(args.users, spawn_rate=args.spawn_rate)
    done.wait(timeout=args.run_time if args.run_time > 0 else None)
    # Stop the per-second loop before the users: a tick racing with quit() would report the
    # interval's requests with the 0 users left after it.
    users_at_stop = runner.user_count
    stats_stop.set()
    stats_greenlet.join(timeout=2)
    runner.quit()
    # the tail: requests completed since the last tick, by the users running until the stop
    streamer.snapshot(skip_empty=True, users=users_at_stop)
    streamer.totals()
    for w in workers:
        try:
            w.wait(timeout=10)
        except subprocess.TimeoutExpired:
            w.kill()
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadmem.load.locust_child", description=__doc__)
    p.add_argument("scenario")
    p.add_argument("--host", default="http://127.0.0.1")
    p.add_argument("--users", type=int, default=10)
    p.add_argument("--spawn-rate", type=float, default=10.0)
    p.add_argument("--run-time", type=float, default=0.0, help="seconds; 0 = until told/shape")
    p.add_argument("--stats-interval", type=float, default=1.0)
    p.add_argument("--check", action="store_true", help="only load the scenario (preflight)")
    p.add_argument("--mode", choices=("local", "master", "worker"), default="local")
    p.add_argument("--processes", type=int, default=0, help="master mode: local workers")
    p.add_argument("--expect-workers", type=int, default=1)
    p.add_argument("--worker-timeout", type=float, default=60.0)
    p.add_argument("--master-host", default="127.0.0.1")
    p.add_argument("--master-bind-host", default="*")
    p.add_argument("--master-port", type=int, default=5557)
    p.add_argument("--log-level", default="WARNING")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except Exception as e:  # report, never die silently: the parent shows this message
        emit({"type": "error", "message": f"locust child failed: {type(e).__name__}: {e}"})
        traceback.print_exc()
        return 2


if __name__ == "__main__":
    sys.exit(main())
