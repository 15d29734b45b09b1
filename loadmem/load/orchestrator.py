"""``loadmem run``: baseline -> load -> observe, recorded as one recording.

Processes (each in its own session, so a terminal Ctrl-C reaches only this parent):

- the recorder, ``loadmem record`` (``recorder_link.RecorderProcess``), which owns the
  recording's clock (``meta.json`` ``start_monotonic``) and samples memory throughout;
- the Locust child, ``python -m loadmem.load.locust_child`` (only during the load phase),
  which streams per-second request statistics; its tree is added to the recorder's
  selection with role ``loadgen`` so analysis can leave it out;
- for ``--target demo``, the bundled pre-fork demo server.

This parent never imports Locust. It writes two tables into the recording through its own
``TableWriter`` (``writer_id="run"``): ``events`` (``phase_start``/``phase_end`` per phase,
``load_stats`` with Locust's final totals, ``warning``) and ``requests`` (one row per
endpoint and one ``Aggregated`` row per second of load). ``t`` there is
``time.monotonic() - meta["start_monotonic"]``: the monotonic clock is system-wide, so it
agrees with the recorder's ``t``. A request row's ``t`` is the end of its interval.

Ctrl-C (SIGINT), decided here and documented in ``docs/run.md``:

- during baseline: the run stops (no load has been sent; the recording is kept);
- during load: the load stops and the run goes on to observe, shortened to at most
  ``interrupt_observe`` seconds (60 s by default), because the minutes after a load are the
  point of the tool, yet whoever pressed Ctrl-C wants to be done soon;
- during observe: observe ends early; everything is kept, summary and verdict follow;
- a second Ctrl-C (or SIGTERM) stops at once: the Locust child is killed, the recorder is
  stopped, segments are merged, ``meta.json`` says ``status: interrupted``; the recording is
  readable up to that moment.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any

from loadmem.demo.config import DemoConfig
from loadmem.errors import LoadmemError
from loadmem.load.preflight import ScenarioInfo, check_scenario, check_target, resolve_scenario
from loadmem.load.recorder_link import NoRecorder, RecorderProcess
from loadmem.load.status import StatusLine
from loadmem.load.target import Target, check_recordable, parse_target
from loadmem.recorder.selected import selected_lines
from loadmem.recording.schema import EVENTS, REQUESTS
from loadmem.recording.writer import TableWriter, finalize, prepare_output, update_meta

PHASES = ("baseline", "load", "observe")
READY_TIMEOUT_S = 90.0  # Locust import + scenario load, on a busy 2-core CI machine
LOAD_GRACE_S = 20.0  # how long past --load the child may take before it is stopped


@dataclass
class RunOptions:
    """Everything ``loadmem run`` was asked to do (times in seconds)."""

    scenario: str
    target: str
    out: Path
    users: int = 10
    spawn_rate: float = 10.0
    baseline: float = 30.0
    load: float | None = 60.0  # None: the scenario's LoadTestShape decides
    load_is_default: bool = False  # True: a LoadTestShape in the scenario overrides ``load``
    observe: float = 600.0
    label: str | None = None
    watch_pids: list[int] = field(default_factory=list)
    watch_matches: list[str] = field(default_factory=list)
    no_record: bool = False
    processes: int = 0  # > 0: Locust master + that many local workers
    master: bool = False  # Locust master; workers from other machines connect
    expect_workers: int = 1
    master_port: int = 5557
    master_bind_host: str = "*"
    demo: DemoConfig = field(default_factory=DemoConfig)
    interval: float | None = None  # recorder defaults when None
    pss_budget: float | None = None
    pss_max_age: float | None = None
    interrupt_observe: float = 60.0
    argv: list[str] = field(default_factory=list)
    status_stream: IO[str] | None = None  # live status line; None: stderr if it is a TTY


@dataclass
class PhaseRecord:
    phase: str
    t_start: float
    t_end: float | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "t_start": self.t_start, "t_end": self.t_end,
                "reason": self.reason}


@dataclass
class RunResult:
    path: Path
    status: str  # "complete" | "interrupted" ("failed" only in meta.json: an error was raised)
    phases: list[PhaseRecord]
    totals: list[dict[str, Any]]  # Locust's cumulative figures per endpoint + Aggregated
    scenario: ScenarioInfo
    target: Target
    recorded: bool
    warnings: list[str]


class Aborted(Exception):
    """A second Ctrl-C or SIGTERM: stop now, keep what was recorded."""


class _Signals:
    """Counts Ctrl-C; SIGTERM counts as two. Handlers only set flags (checked by the loop)."""

    def __init__(self) -> None:
        self.count = 0
        self._old: dict[int, Any] = {}

    def _on(self, signum: int, _frame: FrameType | None) -> None:
        self.count += 2 if signum == signal.SIGTERM else 1

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._on)

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old.clear()


def _utc(epoch: float | None = None) -> datetime:
    return datetime.fromtimestamp(time.time() if epoch is None else epoch, UTC)


class LocustProcess:
    """The Locust child: start it, read its JSON lines into the ``requests`` table."""

    def __init__(self, cmd: list[str], out: Path, start_mono: float):
        self.cmd = cmd
        self.out = out
        self.start_mono = start_mono
        self.ready = threading.Event()
        self.ready_msg: dict[str, Any] = {}
        self.error: str | None = None
        self.totals: list[dict[str, Any]] = []
        self.last_total: dict[str, Any] = {}
        self.requests = 0
        self.failures = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self._log = open(self.out / "loadgen.log", "ab")  # noqa: SIM115  (closed in close())
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._log, start_new_session=True)
        self._reader = threading.Thread(target=self._read, name="locust-stats", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        # This thread owns the requests writer (TableWriter is not thread safe).
        writer = TableWriter(self.out, "requests", REQUESTS, writer_id="run", flush_s=5.0)
        try:
            for raw in self.proc.stdout:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                kind = msg.get("type") if isinstance(msg, dict) else None
                if kind == "ready":
                    self.ready_msg = msg
                    self.ready.set()
                elif kind == "stats":
                    self._stats(msg, writer)
                    writer.maybe_flush()
                elif kind == "totals":
                    self.totals = list(msg.get("rows") or [])
                elif kind == "error":
                    self.error = str(msg.get("message"))
        finally:
            writer.close()
            self.ready.set()  # wake a waiter if the child died before ready

    def _stats(self, msg: dict[str, Any], writer: TableWriter) -> None:
        t = float(msg["mono"]) - self.start_mono
        ts = _utc(float(msg["ts"]))
        for row in msg.get("rows") or []:
            writer.append({
                "ts": ts, "t": t, "name": row["name"], "method": row.get("method", ""),
                "interval_s": msg.get("interval_s"), "requests": row["requests"],
                "failures": row["failures"], "p50_ms": row.get("p50_ms"),
                "p95_ms": row.get("p95_ms"), "p99_ms": row.get("p99_ms"),
                "avg_ms": row.get("avg_ms"), "max_ms": row.get("max_ms"),
                "users": msg.get("users"),
            })
            if row["name"] == "Aggregated":
                self.requests += int(row["requests"])
                self.failures += int(row["failures"])
                self.last_total = {**row, "interval_s": msg.get("interval_s"),
                                   "users": msg.get("users")}

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self) -> None:
        if self.running():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the child and its process group (its --processes workers too)."""
        if self.proc is not None and self.proc.poll() is None:  # not reaped: pgid is ours
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: nothing else

    def close(self) -> None:
        if self.proc is not None:
            if self.running():
                self.kill()
            self.proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None


class Orchestrator:
    """One ``loadmem run``; ``execute()`` returns a ``RunResult`` or raises ``LoadmemError``."""

    def __init__(self, opts: RunOptions, echo: Callable[[str], None] | None = None):
        self.opts = opts
        self.echo = echo or (lambda s: print(s, file=sys.stderr, flush=True))
        self.signals = _Signals()
        self.phases: list[PhaseRecord] = []
        self.warnings: list[str] = []
        self.start_mono = 0.0
        self.events: TableWriter | None = None
        self.locust: LocustProcess | None = None
        stream = opts.status_stream
        if stream is None and sys.stderr.isatty():
            stream = sys.stderr
        self.status = StatusLine(stream)

    # -- preflight -------------------------------------------------------------------------
    def preflight(self) -> tuple[ScenarioInfo, Target]:
        o = self.opts
        target = parse_target(o.target)
        check_recordable(target, o.watch_pids, o.watch_matches, o.no_record)
        scenario = check_scenario(resolve_scenario(o.scenario))
        check_target(target)
        if scenario.shape is not None and o.load_is_default:
            o.load = None  # the shape decides when the load ends
        if o.load is None and scenario.shape is None:
            raise LoadmemError("no --load duration and the scenario has no LoadTestShape",
                               "give --load, e.g. --load 1m")
        if o.processes < 0:
            raise LoadmemError(f"invalid --processes {o.processes}", "use 1 or more")
        return scenario, target

    # -- events ----------------------------------------------------------------------------
    def now_t(self) -> float:
        return time.monotonic() - self.start_mono

    def event(self, kind: str, phase: str | None = None, message: str | None = None,
              data: dict[str, Any] | None = None, t: float | None = None) -> None:
        assert self.events is not None
        self.events.append({
            "ts": _utc(), "t": self.now_t() if t is None else t, "kind": kind, "phase": phase,
            "message": message, "data": json.dumps(data, default=str) if data else None,
        })
        self.events.flush()  # few rows; a kill must not lose a phase boundary

    def begin(self, phase: str, **data: Any) -> PhaseRecord:
        rec = PhaseRecord(phase, self.now_t())
        self.phases.append(rec)
        self.event("phase_start", phase, f"{phase} started", data or None, t=rec.t_start)
        return rec

    def end(self, rec: PhaseRecord, reason: str, **data: Any) -> None:
        if rec.t_end is not None:
            return
        rec.t_end, rec.reason = self.now_t(), reason
        self.event("phase_end", rec.phase, f"{rec.phase} ended: {reason}",
                   {"reason": reason, **data}, t=rec.t_end)

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        self.status.clear()
        self.echo(f"warning: {text}")
        if self.events is not None:
            self.event("warning", message=text)

    # -- waiting ---------------------------------------------------------------------------
    def wait(self, rec: PhaseRecord, seconds: float | None, recorder: Any,
             until: Callable[[], bool] | None = None, signals_seen: int = 0,
             nominal: float | None = None) -> str:
        """Wait for ``seconds`` (or ``until()``), rendering status; return why it ended.

        Returns ``"duration"``, ``"done"`` (``until`` became true) or ``"interrupted"`` (a new
        Ctrl-C); raises ``Aborted`` on a second Ctrl-C or SIGTERM.
        """
        deadline = None if seconds is None else time.monotonic() + seconds
        recorder_warned = False
        while True:
            if self.signals.count >= 2:
                raise Aborted()
            if self.signals.count > signals_seen:
                return "interrupted"
            if until is not None and until():
                return "done"
            if deadline is not None and time.monotonic() >= deadline:
                return "duration"
            if not recorder_warned and not recorder.alive:
                recorder_warned = True
                self.warn(f"the recorder stopped unexpectedly; see {recorder.log_path}")
            # "left" shows the phase's nominal length (--load), not the grace added to it
            if nominal is not None:
                remaining = max(0.0, nominal - (self.now_t() - rec.t_start))
            elif deadline is not None:
                remaining = max(0.0, deadline - time.monotonic())
            else:
                remaining = None
            self.status.render(rec.phase, self.now_t() - rec.t_start, remaining,
                               recorder.status.latest, self.locust)
            time.sleep(0.1)

    # -- the run ---------------------------------------------------------------------------
    def execute(self) -> RunResult:
        o = self.opts
        scenario, target = self.preflight()  # raises before anything is recorded
        demo = None
        status = "complete"
        recorder: RecorderProcess | NoRecorder | None = None
        self.signals.install()
        try:
            if target.is_demo:
                demo = self._start_demo()
                target = parse_target(demo.url)
                target = Target(url=target.url, host=target.host, port=target.port, is_demo=True)
            prepare_output(o.out)
            if o.no_record:
                recorder = NoRecorder(o.out, o.label)
            else:
                recorder = RecorderProcess(
                    o.out, ports=[target.port] if target.is_local else [],
                    pids=o.watch_pids, matches=o.watch_matches, interval=o.interval,
                    pss_budget=o.pss_budget, pss_max_age=o.pss_max_age, label=o.label)
            meta = recorder.start()
            self.start_mono = float(meta["start_monotonic"])
            self.events = TableWriter(o.out, "events", EVENTS, writer_id="run")
            self.echo(f"recording to {o.out}" if not o.no_record else
                      f"run-only recording (no memory sampling) in {o.out}")
            for line in selected_lines(meta):  # what --target's port resolved to
                self.echo(f"watching: {line}")
            try:
                self._phases(scenario, target, recorder)
            except Aborted:
                status = "interrupted"
                self.status.clear()
                self.echo("stopping now; the recording keeps what it has")
                if self.locust is not None:
                    self.locust.kill()
                for rec in self.phases:
                    self.end(rec, "aborted")
        except BaseException:
            status = "failed"  # e.g. Locust did not start: the error propagates, meta says so
            raise
        finally:
            self.status.clear()
            if self.locust is not None:
                self.locust.close()
            if recorder is not None:
                recorder.stop(timeout=6.0 if status == "interrupted" else 20.0)
            if demo is not None:
                demo.stop()
            self.signals.restore()
            if self.events is not None:
                self.events.close()
                finalize(o.out)
                self._write_meta(scenario, target, status)
        return RunResult(path=o.out, status=status, phases=self.phases,
                         totals=self.locust.totals if self.locust else [], scenario=scenario,
                         target=target, recorded=not o.no_record, warnings=self.warnings)

    def _start_demo(self) -> Any:
        from loadmem.demo.launch import launch

        d = self.opts.demo
        self.echo(f"starting the demo server ({d.variant}, {d.workers} workers, "
                  f"{d.table_mb:g} MiB table)...")
        return launch(d)

    def _phases(self, scenario: ScenarioInfo, target: Target, recorder: Any) -> None:
        o = self.opts
        rec = self.begin("baseline")
        why = self.wait(rec, o.baseline, recorder)
        self.end(rec, why)
        recorder.snapshot("baseline_end")  # where memory is before the load (smaps)
        if why == "interrupted":
            self.echo("interrupted during baseline: no load was sent; stopping")
            return
        seen = self.signals.count

        self.locust = LocustProcess(self._locust_cmd(scenario, target), o.out, self.start_mono)
        self.locust.start()
        # --master waits for its workers (up to 10 min) before it reports ready.
        deadline = time.monotonic() + READY_TIMEOUT_S + (600.0 if o.master else 0.0)
        while not self.locust.ready.wait(0.2):
            if self.signals.count > seen:  # Ctrl-C before any load: stop now
                self.locust.kill()
                raise Aborted()
            if time.monotonic() > deadline:
                break
        if not self.locust.ready_msg:
            err = self.locust.error or "no ready line (see loadgen.log)"
            self.locust.kill()
            raise LoadmemError(f"Locust did not start: {err}",
                               f"see {o.out / 'loadgen.log'}; the recording is kept")
        recorder.watch(self.locust.pid, "loadgen")
        shape = scenario.shape
        rec = self.begin("load", users=o.users, spawn_rate=o.spawn_rate, shape=shape,
                         duration_s=o.load, loadgen_pid=self.locust.pid)
        budget = None if o.load is None else o.load + LOAD_GRACE_S
        why = self.wait(rec, budget, recorder, until=lambda: not self.locust.running(),
                        signals_seen=seen, nominal=o.load)
        if why != "done":  # interrupted, or the child overran its own run time
            self.locust.terminate()
            if why == "duration":
                self.warn("Locust did not stop by itself at the end of --load; stopped it")
            self.wait(rec, 15.0, recorder, until=lambda: not self.locust.running(),
                      signals_seen=self.signals.count)
        self.locust.close()
        reason = {"done": "shape" if shape and o.load is None else "duration"}.get(why, why)
        code = self.locust.proc.returncode if self.locust.proc is not None else None
        if why == "done" and code not in (0, None):
            reason = "loadgen-failed"
            self.warn(f"the Locust child exited with code {code}; see {o.out / 'loadgen.log'}")
        if self.locust.error:
            self.warn(f"Locust reported: {self.locust.error}")
        self.end(rec, reason, requests=self.locust.requests, failures=self.locust.failures)
        recorder.snapshot("load_end")
        if self.locust.totals:
            self.event("load_stats", "load", "Locust totals", {"rows": self.locust.totals})
        observe = o.observe
        if why == "interrupted":
            observe = min(observe, o.interrupt_observe)
            self.status.clear()
            self.echo(f"load stopped (Ctrl-C); observing {observe:g}s more; "
                      "Ctrl-C again to stop now")
        seen = self.signals.count
        rec = self.begin("observe", duration_s=observe)
        why = self.wait(rec, observe, recorder, signals_seen=seen)
        self.end(rec, why)
        recorder.snapshot("observe_end")  # read by the recorder as it stops

    def _locust_cmd(self, scenario: ScenarioInfo, target: Target) -> list[str]:
        o = self.opts
        cmd = [sys.executable, "-m", "loadmem.load.locust_child", str(scenario.path),
               "--host", target.url, "--users", str(o.users), "--spawn-rate", str(o.spawn_rate),
               "--run-time", str(o.load if o.load is not None else 0)]
        if o.processes or o.master:
            cmd += ["--mode", "master", "--master-port", str(0 if o.processes else o.master_port),
                    "--master-bind-host", "127.0.0.1" if o.processes else o.master_bind_host]
            if o.processes:
                cmd += ["--processes", str(o.processes)]
            else:
                cmd += ["--expect-workers", str(o.expect_workers), "--worker-timeout", "600"]
        return cmd

    def _write_meta(self, scenario: ScenarioInfo, target: Target, status: str) -> None:
        from loadmem.redact import redact_argv

        o = self.opts
        meta_path = o.out / "meta.json"
        old = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        update_meta(
            o.out,
            recorder_argv=old.get("argv"),
            argv=redact_argv(list(o.argv)),
            kind="run",
            status=status,
            finalized=True,
            scenario=str(scenario.path),
            scenario_shape=scenario.shape,
            target="demo" if target.is_demo else target.url,
            target_url=target.url,
            demo=asdict(o.demo) if target.is_demo else None,
            phases=[p.to_dict() for p in self.phases],
            users=o.users,
            spawn_rate=o.spawn_rate,
            processes=o.processes or None,
            label=o.label,
            recorded=not o.no_record,
            end_monotonic=time.monotonic(),
            warnings=self.warnings or None,
        )
