"""``loadmem run``: baseline -> load -> observe, recorded as one recording.

Processes (each in its own session, so a terminal Ctrl-C reaches only this parent):

- the recorder, ``loadmem record`` (``recorder_link.RecorderProcess``), which owns the
  recording's clock (``meta.json`` ``start_monotonic``) and samples memory throughout;
- the Locust child, ``python -m loadmem.load.locust_child`` (only during the load phase):
  Locust's own entry point with loadmem's plugin, which streams per-second request
  statistics over a dedicated pipe; its tree is added to the recorder's selection with
  role ``loadgen`` so analysis can leave it out;
- for ``--target demo``, the bundled pre-fork demo server.

Every child dies with this parent, even when it is SIGKILLed: the Locust child and the
demo server through ``PR_SET_PDEATHSIG`` (``lifeline``), the recorder through the end of its
control channel (it then marks the recording ``incomplete``). The facts a reader needs
(kind, scenario, target, phases reached) are written into ``meta.json`` as they become known,
not only at the end.

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
import signal
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
from loadmem.load.locust_link import LocustProcess
from loadmem.load.plan import RunPlan, make_plan
from loadmem.load.preflight import ScenarioInfo
from loadmem.load.recorder_link import NoRecorder, RecorderProcess
from loadmem.load.status import Heartbeat, StatusLine
from loadmem.load.target import Target, parse_target
from loadmem.recorder.selected import selected_lines
from loadmem.recording.schema import EVENTS
from loadmem.recording.writer import TableWriter, finalize, prepare_output, update_meta

PHASES = ("baseline", "load", "observe")
READY_TIMEOUT_S = 90.0  # Locust import + scenario load, on a busy 2-core CI machine
LOAD_GRACE_S = 20.0  # how long past --load the child may take before it is stopped


@dataclass
class RunOptions:
    """Everything ``loadmem run`` was asked to do (times in seconds; None: the default)."""

    scenario: str | None
    target: str | None
    out: Path
    locust_args: list[str] = field(default_factory=list)  # Locust's command line, as typed
    baseline: float = 30.0
    load: float | None = None  # --load (loadmem's -t); None: -t/config, the shape, a default
    default_load: float = 60.0  # when neither --load, -t/config nor a shape says
    observe: float = 600.0
    label: str | None = None
    watch_pids: list[int] = field(default_factory=list)
    watch_matches: list[str] = field(default_factory=list)
    no_record: bool = False
    attach_to: Path | None = None
    gate: str | None = None
    demo: DemoConfig = field(default_factory=DemoConfig)
    interval: float | None = None  # recorder defaults when None
    pss_budget: float | None = None
    pss_max_age: float | None = None
    mappings: bool = True  # per-mapping snapshots at the phase ends (docs/recorder.md)
    mappings_every: float | None = None
    interrupt_observe: float = 60.0
    heartbeat: float = 30.0  # seconds between CI heartbeat lines (no terminal); 0: none
    argv: list[str] = field(default_factory=list)
    status_stream: IO[str] | None = None  # live status line; None: stderr if it is a TTY
    heartbeat_stream: IO[str] | None = None  # None: stderr when it is not a TTY


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
class LoadOutcome:
    """How the load went, as Locust decided it (``exit_code``) and as loadmem checks it."""

    exit_code: int | None = None  # the Locust child's exit code (None: not run / killed)
    process_exit_code: int | None = None  # set by a listener (environment.process_exit_code)
    requests: int = 0
    failures: int = 0
    errors: list[str] = field(default_factory=list)  # first failure messages
    exceptions: list[str] = field(default_factory=list)  # first task exceptions
    ended_by: str | None = None  # duration | shape | scenario | interrupted | loadgen-failed
    elapsed_s: float | None = None

    @property
    def problem(self) -> str | None:
        """Why the load counts as failed (one line), or None (also when no load ran)."""
        if self.ended_by is None:
            return None
        failures: list[str | None] = [*(self.exceptions or self.errors), None]
        first = failures[0]
        if self.ended_by == "loadgen-failed" and self.exit_code is None:
            return "Locust did not run the load"
        if self.process_exit_code not in (None, 0):
            return f"the scenario set Locust's exit code to {self.process_exit_code}"
        if self.exit_code not in (None, 0):
            what = (f"{self.failures:,} failed requests" if self.failures else
                    "task errors" if self.exceptions else "errors")
            return f"Locust exited with code {self.exit_code} ({what})" + (
                f"; first: {first}" if first else "")
        if self.requests == 0 and self.ended_by != "interrupted":
            return "no request completed during the load phase" + (
                f"; first error: {first}" if first else
                " (does the target answer? see loadgen.log)")
        return None


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
    load: LoadOutcome = field(default_factory=LoadOutcome)
    targets: list[Target] = field(default_factory=list)


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


class Orchestrator:
    """One ``loadmem run``: ``plan()`` checks everything, ``execute()`` runs the phases and
    returns a ``RunResult`` (or raises ``LoadmemError``)."""

    def __init__(self, opts: RunOptions, echo: Callable[[str], None] | None = None):
        self.opts = opts
        self.echo = echo or (lambda s: print(s, file=sys.stderr, flush=True))
        self.signals = _Signals()
        self.phases: list[PhaseRecord] = []
        self.warnings: list[str] = []
        self.start_mono = 0.0
        self.events: TableWriter | None = None
        self.locust: LocustProcess | None = None  # set when the recording starts
        self.load = LoadOutcome()
        self._plan: RunPlan | None = None
        self._went = False  # the Locust child was told to go
        stream = opts.status_stream
        if stream is None and sys.stderr.isatty():
            stream = sys.stderr
        self.status = StatusLine(stream)
        beat = opts.heartbeat_stream
        if beat is None and not sys.stderr.isatty():
            beat = sys.stderr
        self.heartbeat = Heartbeat(beat if opts.heartbeat > 0 else None, opts.heartbeat)

    # -- preflight -------------------------------------------------------------------------
    def plan(self) -> RunPlan:
        """Everything checked before anything records (``plan.make_plan``); cached. The
        Locust child is then running, waiting in its init event: ``execute()`` (or
        ``plan.locust.abort()``) must follow."""
        if self._plan is None:
            self._plan = make_plan(self.opts, progress=lambda line: self.echo(line))
        return self._plan

    # -- events ----------------------------------------------------------------------------
    def now_t(self) -> float:
        return time.monotonic() - self.start_mono

    def event(self, kind: str, phase: str | None = None, message: str | None = None,
              data: dict[str, Any] | None = None, t: float | None = None) -> None:
        assert self.events is not None
        now_t, now_epoch = self.now_t(), time.time()
        t = now_t if t is None else t
        self.events.append({  # ts on the wall clock for the same instant as t
            "ts": _utc(now_epoch - (now_t - t)), "t": t, "kind": kind, "phase": phase,
            "message": message, "data": json.dumps(data, default=str) if data else None,
        })
        self.events.flush()  # few rows; a kill must not lose a phase boundary

    def begin(self, phase: str, t: float | None = None, **data: Any) -> PhaseRecord:
        rec = PhaseRecord(phase, self.now_t() if t is None else t)
        self.phases.append(rec)
        self.event("phase_start", phase, f"{phase} started", data or None, t=rec.t_start)
        self._meta_progress()
        return rec

    def end(self, rec: PhaseRecord, reason: str, t: float | None = None, **data: Any) -> None:
        if rec.t_end is not None:
            return
        rec.t_end, rec.reason = (self.now_t() if t is None else t), reason
        self.event("phase_end", rec.phase, f"{rec.phase} ended: {reason}",
                   {"reason": reason, **data}, t=rec.t_end)
        self._meta_progress()

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        self.status.clear()
        self.echo(f"warning: {text}")
        if self.events is not None:
            self.event("warning", message=text)

    # -- waiting ---------------------------------------------------------------------------
    def wait(self, rec: PhaseRecord, seconds: float | None, recorder: Any,
             until: Callable[[], bool] | None = None, signals_seen: int = 0,
             nominal: float | None = None, from_phase_start: bool = True) -> str:
        """Wait until ``seconds`` after the phase's start (or from now, ``from_phase_start``
        False), or ``until()``, rendering status; return why it ended.

        Returns ``"duration"``, ``"done"`` (``until`` became true) or ``"interrupted"`` (a new
        Ctrl-C); raises ``Aborted`` on a second Ctrl-C or SIGTERM.
        """
        origin = self.start_mono + rec.t_start if from_phase_start else time.monotonic()
        deadline = None if seconds is None else origin + seconds
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
            elapsed = self.now_t() - rec.t_start
            latest = recorder.status.latest
            self.status.render(rec.phase, elapsed, remaining, latest, self.locust)
            self.heartbeat.beat(rec.phase, elapsed, remaining, latest,
                                recorder.status.first, self.locust)
            time.sleep(0.1)

    # -- the run ---------------------------------------------------------------------------
    def execute(self) -> RunResult:
        o = self.opts
        plan = self.plan()  # raises before anything is recorded
        scenario, target = plan.scenario, plan.target
        demo = None
        status = "complete"
        recorder: RecorderProcess | NoRecorder | None = None
        self.signals.install()
        try:
            if target.is_demo:
                demo = self._start_demo()
                url = parse_target(demo.url)
                target = Target(url=url.url, host=url.host, port=url.port, is_demo=True)
                plan.target, plan.targets = target, [target]
                plan.overrides["host"] = target.url
            prepare_output(o.out)
            ports = sorted({t.port for t in plan.targets if t.is_local})
            if o.no_record:
                recorder = NoRecorder(o.out, o.label)
            else:
                recorder = RecorderProcess(
                    o.out, ports=ports, pids=o.watch_pids, matches=o.watch_matches,
                    interval=o.interval, pss_budget=o.pss_budget, pss_max_age=o.pss_max_age,
                    label=o.label, mappings=o.mappings, mappings_every=o.mappings_every)
            meta = recorder.start()
            self.start_mono = float(meta["start_monotonic"])
            self.locust = plan.locust
            self.locust.record_to(o.out, self.start_mono)
            recorder.watch(self.locust.pid, "loadgen")
            self.events = TableWriter(o.out, "events", EVENTS, writer_id="run")
            self._write_meta(plan, "running", final=False)  # known facts, before any phase
            self.echo(f"recording to {o.out}" if not o.no_record else
                      f"run-only recording (no memory sampling) in {o.out}")
            for line in selected_lines(meta):  # what --target's port resolved to
                self.echo(f"watching: {line}")
            try:
                self._phases(plan, recorder)
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
            if not self._went:
                plan.locust.abort()  # it never started the load: no listener runs
            plan.locust.close()
            if recorder is not None:
                recorder.stop(timeout=6.0 if status == "interrupted" else 20.0)
            if demo is not None:
                demo.stop()
            self.signals.restore()
            if self.events is not None:
                self.events.close()
                finalize(o.out)
                self._write_meta(plan, status, final=True)
        return RunResult(path=o.out, status=status, phases=self.phases,
                         totals=self.locust.totals if self.locust else [], scenario=scenario,
                         target=target, recorded=not o.no_record, warnings=self.warnings,
                         load=self.load, targets=plan.targets)

    def _start_demo(self) -> Any:
        from loadmem.demo.launch import launch

        d = self.opts.demo
        self.echo(f"starting the demo server ({d.variant}, {d.workers} workers, "
                  f"{d.table_mb:g} MiB table)...")
        return launch(d)

    def _phases(self, plan: RunPlan, recorder: Any) -> None:
        o = self.opts
        rec = self.begin("baseline")
        why = self.wait(rec, o.baseline, recorder)
        self.end(rec, why)
        recorder.snapshot("baseline_end")  # where memory is before the load (smaps)
        if why == "interrupted":
            self.echo("interrupted during baseline: no load was sent; stopping")
            return
        seen = self.signals.count

        locust = plan.locust
        if not locust.running():
            raise LoadmemError(f"Locust exited (code {locust.exit_code}) during the baseline: "
                               f"{locust.output_tail() or 'no output'}",
                               f"see {locust.log_path}; the recording is kept")
        locust.go(plan.overrides)
        self._went = True
        # --master waits for its workers before the load starts (Locust's own wait).
        timeout = READY_TIMEOUT_S
        if plan.master and not plan.processes:
            timeout += plan.workers_max_wait or 600.0
        started = locust.wait_started(timeout, lambda: self.signals.count > seen)
        if self.signals.count > seen:  # Ctrl-C before any load: stop now
            locust.kill()
            raise Aborted()
        if not started:
            locust.kill()
            locust.close()
            self.load.exit_code = locust.exit_code
            self.load.ended_by = "loadgen-failed"
            why = (f"exited with code {locust.exit_code}" if locust.exit_code is not None
                   else f"did not start the load within {timeout:.0f}s")
            tail = locust.log_tail()
            raise LoadmemError(f"Locust {why}" + (f": {tail}" if tail else ""),
                               f"see {locust.log_path}; the recording is kept")
        shape = plan.scenario.shape
        t_start = (locust.started_mono or time.monotonic()) - self.start_mono
        rec = self.begin("load", t=t_start, users=plan.users, spawn_rate=plan.spawn_rate,
                         shape=shape, duration_s=plan.load, loadgen_pid=locust.pid,
                         processes=plan.processes)
        nominal = plan.load
        # Locust stops itself at -t; loadmem stops it only for --load with a shape, or when it
        # overruns its run time by LOAD_GRACE_S.
        if shape is not None and plan.load_from_loadmem:
            budget: float | None = plan.load
        else:
            budget = None if plan.load is None else plan.load + LOAD_GRACE_S
        why = self.wait(rec, budget, recorder, until=locust.done, signals_seen=seen,
                        nominal=nominal)
        if why != "done":  # interrupted, --load reached with a shape, or an overrun
            locust.terminate()
            if why == "duration" and not (shape is not None and plan.load_from_loadmem):
                self.warn("Locust did not stop by itself at the end of --load; stopped it")
            if self.wait(rec, 15.0, recorder, until=locust.done,
                         signals_seen=self.signals.count, from_phase_start=False) != "done":
                locust.kill()
        locust.close()
        self._load_outcome(plan, why)
        # The load ended when Locust stopped its users (test_stop), not when the process
        # exited after printing its tables; the tail of stats comes with the exit.
        stopped = locust.stopped_msg.get("mono")
        t_end = float(stopped) - self.start_mono if stopped is not None else None
        self.end(rec, self.load.ended_by or why, t=t_end, requests=self.load.requests,
                 failures=self.load.failures, exit_code=locust.exit_code)
        recorder.snapshot("load_end")
        if locust.totals:
            self.event("load_stats", "load", "Locust totals", {"rows": locust.totals})
        observe = o.observe
        if why == "interrupted":
            observe = min(observe, o.interrupt_observe)
            self.status.clear()
            self.echo(f"load stopped (Ctrl-C); observing {observe:g}s more; "
                      "Ctrl-C again to stop now")
        seen = self.signals.count
        rec = self.begin("observe", duration_s=observe)
        why = self.wait(rec, observe, recorder, signals_seen=seen)
        t_stop = self.now_t()
        recorder.snapshot("observe_end")  # read by the recorder as it stops
        # the recorder's last tick, taken at its stop, reads every PSS figure that moved since
        # its read whatever its budget: observe's last sample. Ended before it, the window
        # lost it, and with it a copy made in the last seconds while the budget was spent.
        # (Its stop snapshot and merge, after that tick, are not part of observe.)
        recorder.stop(timeout=20.0)
        last = recorder.status.latest  # the last tick's status line (t rounded to 1 ms)
        self.end(rec, why, t=max(t_stop, float(last["t"]) + 0.001) if last else t_stop)

    def _load_outcome(self, plan: RunPlan, why: str) -> None:
        """Fill ``self.load`` from the child's messages; record how the load ended."""
        locust = self.locust
        assert locust is not None
        out = self.load
        out.exit_code = locust.exit_code
        msg = locust.exit_msg
        out.process_exit_code = msg.get("process_exit_code")
        out.errors = [str(e) for e in msg.get("errors") or []]
        out.exceptions = [str(e) for e in msg.get("exceptions") or []]
        total = next((r for r in locust.totals if r.get("name") == "Aggregated"), None)
        out.requests = int(total["requests"]) if total else locust.requests
        out.failures = int(total["failures"]) if total else locust.failures
        elapsed = locust.stopped_msg.get("elapsed_s")
        out.elapsed_s = float(elapsed) if elapsed is not None else None
        shape = plan.scenario.shape
        if why == "interrupted":
            out.ended_by = "interrupted"
        elif not msg and locust.exit_code not in (0, None):
            out.ended_by = "loadgen-failed"
        elif why == "duration":
            out.ended_by = "duration"
        elif locust.stopped_msg.get("by") == "scenario":
            out.ended_by = "scenario"
        elif shape is not None and plan.load is None:
            out.ended_by = "shape"
        else:
            out.ended_by = "duration"
        if out.ended_by == "scenario":
            text = f"load ended by the scenario after {out.elapsed_s:.1f} s"
            self.status.clear()
            self.echo(text)
            self.event("load_ended_by_scenario", "load", text,
                       {"elapsed_s": out.elapsed_s, "load_s": plan.load})
        if out.ended_by == "loadgen-failed":
            self.warn(f"Locust exited with code {locust.exit_code} without finishing: "
                      f"{locust.log_tail() or 'no output'} (see {locust.log_path})")
        problem = out.problem
        if problem:
            self.status.clear()
            self.echo(f"load failed: {problem}")
            self.event("load_failed", "load", problem,
                       {"exit_code": out.exit_code, "errors": out.errors,
                        "exceptions": out.exceptions})

    def _write_meta(self, plan: RunPlan, status: str, final: bool) -> None:
        """The run's facts in ``meta.json``: early (``running``), per phase, and at the end.

        Written early so that a run killed with SIGKILL still says what it was (kind,
        scenario, target, the phases it reached); the recorder, which outlives a killed
        parent, marks such a recording ``incomplete``.
        """
        from loadmem.redact import redact_argv

        o = self.opts
        meta_path = o.out / "meta.json"
        old = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        facts: dict[str, Any] = {
            "kind": "run",
            "argv": redact_argv(list(o.argv)),
            "scenario": str(plan.scenario.path),
            "locustfiles": [str(p) for p in plan.scenario.locustfiles],
            "scenario_shape": plan.scenario.shape,
            "user_classes": plan.scenario.user_classes,
            "target": "demo" if plan.target.is_demo else plan.target.url,
            "target_url": plan.target.url,
            "targets": [t.url for t in plan.targets],
            "demo": asdict(o.demo) if plan.target.is_demo else None,
            "phases": [p.to_dict() for p in self.phases],
            "users": plan.users,
            "spawn_rate": plan.spawn_rate,
            "processes": plan.processes,
            "label": o.label,
            "recorded": not o.no_record,
        }
        if "recorder_argv" not in old:
            facts["recorder_argv"] = old.get("argv")
        if final:
            load = self.load
            facts.update(
                status=status, finalized=True, end_monotonic=time.monotonic(),
                warnings=self.warnings or None,
                load={"exit_code": load.exit_code, "ended_by": load.ended_by,
                      "requests": load.requests, "failures": load.failures,
                      "problem": load.problem} if self.locust is not None else None,
            )
        else:
            facts["run_status"] = status
        update_meta(o.out, **facts)

    def _meta_progress(self) -> None:
        if self._plan is not None and self.events is not None:
            with contextlib.suppress(OSError, ValueError):
                update_meta(self.opts.out, phases=[p.to_dict() for p in self.phases])
