"""loadmem's Locust plugin: event listeners that stream what loadmem records to the parent.

Imported by ``loadmem.load.locust_child`` after ``locust`` and before Locust's own entry
point (``locust.main.main``) runs; it adds listeners to ``locust.events``, Locust's
documented extension point, and changes nothing else: the user's locustfiles, options and
listeners run exactly as under ``locust --headless``.

Protocol: one JSON object per line, written to the file descriptor the parent passed in
``LOADMEM_STATS_FD`` (never stdout, where Locust prints its own tables). Only the master or
local runner writes; Locust workers (``--processes``, ``--worker``) write nothing.

- ``{"type": "ready", "pid", "users": [{"name", "host", "weight", "fixed_count"}],
  "available_users", "locustfiles", "shape": NAME|null, "shape_uses_common_options",
  "options": {...}, "runner": "local"|"master"|"worker"}``: Locust's ``init`` event fired
  (options parsed with Locust's own parser, locustfiles loaded, runner created). This is
  loadmem's preflight: the plugin then waits, before any other ``init`` listener runs, for
  one line from the parent on ``LOADMEM_CONTROL_FD``: ``{"go": {OPTION: VALUE}}`` (values
  for options set nowhere, such as loadmem's default users, or the demo server's URL as
  ``host``; applied to ``environment.parsed_options`` as if given on the command line) or
  ``{"abort": true}`` (bad input found, or Ctrl-C: the process exits at once, code 2). So
  every hook fires once, as under ``locust``, and the load starts when the parent says.
- ``{"type": "started", "mono", "ts"}``: ``test_start`` (the users start spawning);
- ``{"type": "spawned", "mono", "user_count"}``: ``spawning_complete``;
- ``{"type": "stats", "mono", "ts", "interval_s", "users", "rows": [...]}`` once per
  ``LOADMEM_STATS_INTERVAL`` seconds during the test: per endpoint and ``"Aggregated"``, the
  requests and failures completed in the interval and p50/p95/p99/avg/max ms over those
  requests only, from the difference of each ``StatsEntry.response_times`` histogram with
  the previous snapshot and Locust's own ``calculate_response_time_percentile``;
- ``{"type": "stopped", "mono", "elapsed_s", "users", "by"}``: ``test_stop`` (the users
  stopped); ``by`` says who stopped them: ``locust`` (its ``--run-time`` or the end of a
  shape, through ``locust.main``), ``signal`` (SIGTERM: Locust's shutdown), or ``scenario``
  (a listener or task of the locustfile called ``runner.quit()``/``stop()``);
- ``{"type": "totals", "mono", "ts", "rows": [...]}``: Locust's cumulative figures per
  endpoint and in total, when Locust is about to exit (its ``quit`` event);
- ``{"type": "exit", "exit_code", "process_exit_code", "failures", "errors": [...],
  "exceptions": [...]}``: Locust's exit code as Locust decided it, the code a listener set
  (``environment.process_exit_code``), and the first failure messages and task exceptions.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from types import FrameType
from typing import Any

import gevent
from gevent.event import Event
from locust import events
from locust.env import Environment
from locust.runners import MasterRunner, Runner, WorkerRunner
from locust.stats import StatsEntry, calculate_response_time_percentile, diff_response_time_dicts

AGGREGATED = "Aggregated"
FD_ENV = "LOADMEM_STATS_FD"
CONTROL_ENV = "LOADMEM_CONTROL_FD"
INTERVAL_ENV = "LOADMEM_STATS_INTERVAL"
#: The resolved Locust options the parent needs (``dest`` names of Locust's parser).
OPTIONS = (
    "host", "num_users", "spawn_rate", "run_time", "locustfile", "processes", "master",
    "worker", "expect_workers", "expect_workers_max_wait", "master_host", "master_port",
    "master_bind_host", "master_bind_port", "headless", "headful", "autostart", "autoquit",
    "tags", "exclude_tags", "exit_code_on_error", "stop_timeout", "reset_stats",
    "list_commands", "show_task_ratio", "show_task_ratio_json", "json", "json_file",
    "html_file", "csv_prefix", "user_classes", "loglevel", "logfile",
)
#: How many distinct failure messages and task exceptions the exit message carries.
FIRST_ERRORS = 3


class Channel:
    """Writes protocol lines to a file descriptor (a pipe the parent reads)."""

    def __init__(self, fd: int | None):
        self.fd = fd

    def emit(self, obj: dict[str, Any]) -> None:
        if self.fd is None:
            return
        data = (json.dumps(obj, separators=(",", ":"), default=str) + "\n").encode()
        try:
            while data:
                data = data[os.write(self.fd, data):]
        except OSError:  # the parent is gone: nothing to report to
            self.fd = None


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
    """Counts and latency figures of the requests ``entry`` completed since ``prev``.

    When the entry holds fewer requests than the snapshot, Locust reset its statistics
    (``--reset-stats`` after the ramp, or the web UI): the interval counts from zero.
    """
    now = _Snapshot(entry)
    if now.requests < prev.requests or now.failures < prev.failures:
        prev = _Snapshot()
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

    def __init__(self, env: Environment, channel: Channel, interval: float):
        self.env = env
        self.channel = channel
        self.interval = interval
        self.prev: dict[tuple[str, str], _Snapshot] = {}
        self.prev_total = _Snapshot()
        self.last_mono = time.monotonic()
        self.stop = Event()
        self.greenlet: gevent.Greenlet | None = None

    def snapshot(self, skip_empty: bool = False, users: int | None = None) -> None:
        """Emit the interval since the last snapshot. ``users``: the user count to report
        instead of the runner's current one (the tail after the stop, whose requests were
        sent by the users running until then, not by the 0 left after it)."""
        stats = self.env.stats
        if stats is None or self.env.runner is None:
            return
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
        self.channel.emit({
            "type": "stats", "mono": mono, "ts": ts, "interval_s": mono - self.last_mono,
            "users": self.env.runner.user_count if users is None else users, "rows": rows,
        })
        self.last_mono = mono

    def start(self) -> None:
        if self.greenlet is None:
            self.last_mono = time.monotonic()
            self.greenlet = gevent.spawn(self._loop)

    def _loop(self) -> None:
        next_at = time.monotonic() + self.interval
        while not self.stop.is_set():
            self.stop.wait(max(0.0, next_at - time.monotonic()))
            if self.stop.is_set():
                break
            next_at += self.interval
            self.snapshot()

    def finish(self) -> None:
        self.stop.set()
        if self.greenlet is not None:
            self.greenlet.join(timeout=2)

    def totals(self) -> None:
        stats = self.env.stats
        if stats is None:
            return
        rows = [totals_row(e) for e in stats.entries.values()]
        total = totals_row(stats.total)
        total["name"], total["method"] = AGGREGATED, ""
        rows.append(total)
        self.channel.emit({"type": "totals", "mono": time.monotonic(), "ts": time.time(),
                           "rows": rows})


_LOCUST_DIR = os.path.dirname(os.path.abspath(sys.modules["locust"].__file__ or "")) + os.sep


_LOADMEM_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_STDLIB_DIR = os.path.dirname(os.path.abspath(os.__file__)) + os.sep


def _ours(path: str) -> bool:
    """Code of Locust, loadmem, the standard library or an installed package (gevent)."""
    return (path.startswith((_LOCUST_DIR, _LOADMEM_DIR, _STDLIB_DIR))
            or f"{os.sep}site-packages{os.sep}" in path or path.startswith("<"))


#: Where Locust itself stops a headless test: (file in the locust package, function).
_LOCUST_STOPS = {
    ("main.py", "stop_and_optionally_quit"): "locust",  # --run-time, or a shape ended
    ("main.py", "shutdown"): "signal",  # SIGTERM
    ("main.py", "sig_term_handler"): "signal",
    ("runners.py", "shape_worker"): "locust",  # the shape's tick() returned None
    ("runners.py", "heartbeat_worker"): "locust",  # the last worker went missing
    ("runners.py", "client_listener"): "locust",  # the last worker quit
}


def stopped_by() -> str:
    """Who is stopping the test, from the call stack of ``test_stop``'s listeners.

    ``locust`` or ``signal`` when the stop comes from one of the places where Locust stops a
    headless test by itself (``_LOCUST_STOPS``) and no frame of the user's code is on the
    stack; ``scenario`` otherwise: a listener, task or greenlet of the locustfile called
    ``runner.quit()`` or ``runner.stop()``.
    """
    frame: FrameType | None = sys._getframe(1)
    found = None
    while frame is not None:
        code = frame.f_code
        path = os.path.abspath(code.co_filename)
        if path.startswith(_LOCUST_DIR):
            found = found or _LOCUST_STOPS.get((os.path.basename(path), code.co_name))
        elif not _ours(path):
            return "scenario"
        frame = frame.f_back
    return found or "scenario"


def _user_info(cls: type) -> dict[str, Any]:
    return {"name": cls.__name__, "host": getattr(cls, "host", None),
            "weight": getattr(cls, "weight", 1), "fixed_count": getattr(cls, "fixed_count", 0)}


def first_errors(runner: Runner) -> tuple[list[str], list[str]]:
    """The most frequent failure messages and task exceptions, as one line each."""
    failures = sorted(runner.stats.errors.values(), key=lambda e: -e.occurrences)
    fail_lines = [f"{e.method} {e.name}: {e.error} ({e.occurrences}x)"
                  for e in failures[:FIRST_ERRORS]]
    exc = sorted(runner.exceptions.values(), key=lambda e: -int(e["count"]))
    exc_lines = []
    for e in exc[:FIRST_ERRORS]:
        tb = [ln.strip() for ln in str(e.get("traceback") or "").strip().splitlines()
              if ln.strip()]
        # the traceback's last line names the exception type ("KeyError: 'x'"); the
        # innermost frame says where it was raised
        what = tb[-1] if tb and not tb[-1].startswith("File ") else str(e["msg"]).strip()
        frames = [ln for ln in tb if ln.startswith("File ")]
        where = ""
        if frames:
            m = re.match(r'File "([^"]+)", line (\d+)', frames[-1])
            where = f" at {m.group(1)}, line {m.group(2)}" if m else f" at {frames[-1]}"
        exc_lines.append(f"{what}{where} ({e['count']}x)")
    return fail_lines, exc_lines


def read_control(fd: int) -> dict[str, Any]:
    """One JSON line from the parent, read cooperatively (other greenlets, e.g. a master
    accepting its workers, keep running). End of file means the parent is gone: abort."""
    from gevent.os import nb_read

    buf = b""
    while not buf.endswith(b"\n"):
        try:
            chunk = nb_read(fd, 4096)
        except OSError:
            chunk = b""
        if not chunk:
            return {"abort": True}
        buf += chunk
    try:
        msg = json.loads(buf)
    except ValueError:
        return {"abort": True}
    return msg if isinstance(msg, dict) else {"abort": True}


class Plugin:
    """The listeners; one per Locust process (``install`` is called once per import)."""

    def __init__(self, channel: Channel, interval: float, control_fd: int | None = None):
        self.channel = channel
        self.interval = interval
        self.control_fd = control_fd
        self.pid = os.getpid()  # Locust's --processes workers are forks: another pid
        self.reported = False  # the ready line was sent (Locust got through its start-up)
        self.finished = False  # the tail and totals were sent
        self.env: Environment | None = None
        self.streamer: StatsStreamer | None = None
        self.started_mono: float | None = None
        self.users_at_stop: int | None = None
        self.active = False  # a master or local runner: the one that reports

    def on_init(self, environment: Environment, runner: Runner | None = None,
                **_kw: Any) -> None:
        if runner is None or os.getpid() != self.pid:
            return  # a forked --processes worker: it reports to its master, through Locust
        self._preflight(environment, runner)
        if isinstance(runner, WorkerRunner):
            return  # a worker: its master decides the load and keeps the statistics
        self.active = True
        self.env = environment
        self.streamer = StatsStreamer(environment, self.channel, self.interval)
        stats = environment.stats
        if stats is not None:
            # Locust's --json/--json-file output (RequestStats.serialize_stats) resets every
            # entry as it reads it, after the test and before the quit event: take the
            # final figures first. (Only this process's stats object; nothing else changes.)
            strip = stats.serialize_stats

            def serialize_after_final(*args: Any, **kwargs: Any) -> Any:
                self.final()
                return strip(*args, **kwargs)

            stats.serialize_stats = serialize_after_final  # type: ignore[method-assign]

    def _preflight(self, environment: Environment, runner: Runner) -> None:
        """Report what Locust resolved, then wait for the parent's go (or abort)."""
        shape = environment.shape_class
        options = environment.parsed_options
        self.reported = True
        self.channel.emit({
            "type": "ready", "pid": os.getpid(),
            "users": [_user_info(u) for u in environment.user_classes],
            "available_users": sorted(environment.available_user_classes or {}),
            "locustfiles": list(environment.parsed_locustfiles or []),
            "shape": type(shape).__name__ if shape is not None else None,
            "shape_uses_common_options": bool(getattr(shape, "use_common_options", False)),
            "options": {k: getattr(options, k, None) for k in OPTIONS},
            "runner": ("master" if isinstance(runner, MasterRunner) else
                       "worker" if isinstance(runner, WorkerRunner) else "local"),
        })
        if self.control_fd is None:
            return
        msg = read_control(self.control_fd)
        if msg.get("abort") or not isinstance(msg.get("go"), dict):
            os._exit(2)  # nothing ran: no listener, no load (the parent said why)
        for key, value in msg["go"].items():
            setattr(options, key, value)
            if key == "host":
                environment.host = value
        # Locust starts its --run-time timer right after this event, against the event
        # loop's cached clock, as old as the loop's last iteration (before the baseline
        # phase, here): the load would end early by that much (plain Locust 2.47 ends a
        # -t run early by its start-up time: 0.6 s idle, 4 s on a busy machine). Refresh it.
        gevent.get_hub().loop.update_now()

    def on_test_start(self, environment: Environment, **_kw: Any) -> None:
        if not self.active or self.streamer is None:
            return
        self.started_mono = time.monotonic()
        self.channel.emit({"type": "started", "mono": self.started_mono, "ts": time.time()})
        self.streamer.start()

    def on_spawning_complete(self, user_count: int, **_kw: Any) -> None:
        if self.active:
            self.channel.emit({"type": "spawned", "mono": time.monotonic(),
                               "user_count": user_count})

    def on_test_stopping(self, environment: Environment, **_kw: Any) -> None:
        if self.active and environment.runner is not None:
            self.users_at_stop = environment.runner.user_count

    def on_test_stop(self, environment: Environment, **_kw: Any) -> None:
        if not self.active or self.started_mono is None:
            return
        now = time.monotonic()
        self.channel.emit({"type": "stopped", "mono": now, "elapsed_s": now - self.started_mono,
                           "users": self.users_at_stop, "by": stopped_by()})

    def final(self) -> None:
        """The tail interval and Locust's totals, once, when the test is over."""
        if self.finished or self.streamer is None:
            return
        self.finished = True
        # Stop the per-second loop first: a tick racing the tail would report the interval's
        # requests with the 0 users left after the stop.
        self.streamer.finish()
        if self.started_mono is not None:
            self.streamer.snapshot(skip_empty=True, users=self.users_at_stop)
        self.streamer.totals()

    def on_quit(self, exit_code: int, **_kw: Any) -> None:
        if not self.active or self.env is None or self.streamer is None:
            return
        self.final()
        runner = self.env.runner
        fails, excs = first_errors(runner) if runner is not None else ([], [])
        self.channel.emit({
            "type": "exit", "exit_code": exit_code,
            "process_exit_code": self.env.process_exit_code,
            "failures": runner.stats.total.num_failures if runner is not None else 0,
            "errors": fails, "exceptions": excs,
        })


def install() -> Plugin:
    """Add the listeners to ``locust.events`` (called once, before Locust's ``main``)."""
    fd_text = os.environ.pop(FD_ENV, "")
    fd = int(fd_text) if fd_text.isdigit() else None
    control = os.environ.pop(CONTROL_ENV, "")
    interval = float(os.environ.pop(INTERVAL_ENV, "") or 1.0)
    plugin = Plugin(Channel(fd), interval, int(control) if control.isdigit() else None)
    events.init.add_listener(plugin.on_init)
    events.test_start.add_listener(plugin.on_test_start)
    events.spawning_complete.add_listener(plugin.on_spawning_complete)
    events.test_stopping.add_listener(plugin.on_test_stopping)
    events.test_stop.add_listener(plugin.on_test_stop)
    events.quit.add_listener(plugin.on_quit)
    return plugin
