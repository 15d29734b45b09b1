"""The recording loop: fixed-rate ticks on the monotonic clock, segments, a clean stop.

``Recorder(options).run()``:

1. validates the selection (a missing ``--pid`` or a port nobody listens on is an error
   before anything is written), prepares the output directory, writes ``meta.json`` with
   status ``recording`` and ``start_monotonic``;
2. ticks every ``interval`` seconds on the monotonic clock (a late tick is recorded as
   ``lag_s``; ticks that could not happen at all are skipped, not bunched up);
3. flushes every table as a Parquet segment every ``flush`` seconds, so a SIGKILL loses at
   most the last flush interval;
4. stops when the duration ends, on SIGINT/SIGTERM, on ``{"stop": true}`` (or end of input)
   on the control channel; then writes the last segment, merges the segments
   (unless ``finalize`` is off) and updates ``meta.json`` to ``complete``. A stop that
   could not finish cleanly (an error, a second signal during the merge) leaves
   ``interrupted``; the segments stay readable either way.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import importlib.abc
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa

from loadmem.errors import LoadmemError
from loadmem.procfs.reader import KeptOpenProcFS, ProcFS
from loadmem.procfs.smaps_rollup import parse_smaps_rollup
from loadmem.recorder.compactor import BackgroundCompactor
from loadmem.recorder.mappings import REASONS, MappingSnapshots
from loadmem.recorder.meta import build_meta
from loadmem.recorder.sampler import Sampler, TickResult
from loadmem.recorder.scheduler import TokenBucket
from loadmem.recorder.selected import selected_lines
from loadmem.recorder.selection import ProcessSelector, Selection
from loadmem.recording import schema
from loadmem.recording.writer import (
    COMPACT_EVERY,
    META_FILE,
    TableWriter,
    finalize,
    prepare_output,
    update_meta,
    write_meta,
)

#: The token bucket holds at most this many seconds of budget refill.
BUDGET_CAP_S = 5.0
#: Below this, the cheap tier alone (which the budget does not throttle) would dominate.
MIN_INTERVAL_S = 0.05


@dataclass
class RecordOptions:
    out: Path
    selection: Selection = field(default_factory=Selection)
    interval: float = 1.0
    duration: float | None = None  # None: until stopped
    flush: float = 5.0
    pss_budget: float = 0.02  # fraction of one core
    pss_max_age: float = 15.0
    label: str | None = None
    redact: bool = True
    force: bool = False
    finalize: bool = True
    control_stdin: bool = False
    status_stdout: bool = False
    progress: bool = False  # a one-line progress display on stderr (a TTY)
    argv: list[str] = field(default_factory=list)
    procfs: ProcFS | None = None  # tests swap the /proc layer
    handle_signals: bool = True
    read_cgroups: bool = True
    lean: bool = False  # a process that only records: keep pandas out (keep_pandas_out)
    #: called with one line per selector saying what it found (before the first tick)
    announce: Callable[[str], None] | None = None
    mappings: bool = True  # per-mapping snapshots (smaps) at the start, the stop, on request
    mappings_every: float | None = None  # and every this many seconds
    compact_every: int = COMPACT_EVERY  # segments per compaction (0: only the final merge)


@dataclass
class RecordResult:
    path: Path
    ticks: int
    processes: int  # distinct (pid, start_time) watched over the recording
    stop_reason: str
    status: str
    failures: dict[str, int]
    finalized: bool


class StopLatch:
    """A one-way stop flag that the loop sleeps on between ticks.

    ``threading.Event.wait`` runs the Python code of ``Condition.wait`` (a new lock, a
    waiters list) on every wake-up. Measured on the 2-core VM of ``BENCHMARKS.md``, that was
    about 0.4 ms of CPU per 1-s tick, as much as the whole cheap tier, because everything
    runs cache-cold right after a sleep. A held ``Lock`` that ``set()`` releases costs one
    C call per sleep. A signal handler that calls ``set()`` ends a sleep at once: the
    interrupted acquire is retried after the handler runs, and succeeds.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._set = False

    def set(self) -> None:
        self._set = True
        with contextlib.suppress(RuntimeError):  # released already (by another set())
            self._lock.release()

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds; True (at once) when the latch is set."""
        if self._lock.acquire(True, max(0.0, timeout)):
            with contextlib.suppress(RuntimeError):  # stay open for the next wait
                self._lock.release()
            return True
        return self._set


def _ancestors(pid: int) -> set[int]:
    out: set[int] = set()
    while pid > 1:
        try:
            with open(f"/proc/{pid}/stat") as f:
                text = f.read()
            pid = int(text[text.rindex(")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            break
        out.add(pid)
    return out


def keep_pandas_out() -> None:
    """Stop pyarrow from importing pandas into the recorder process.

    The first time pyarrow converts a Python list it imports pandas (if installed) only to
    ask whether the list is a pandas object: about 0.2 s of CPU and tens of MB of RSS in a
    process whose own memory is part of what it measures. pyarrow asks once per process and
    remembers the answer, so letting that one import fail keeps pandas out; an explicit
    pandas call (``to_pandas``) still imports it later. For a process that only records
    (``loadmem record``); a process that also works with pandas objects should not call it.
    """
    if "pandas" in sys.modules:
        return
    import pyarrow as pa

    class NoPandas(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "pandas" or name.startswith("pandas."):
                raise ImportError("pandas is kept out of the recorder")
            return None

    finder = NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        pa.array([0])
    finally:
        sys.meta_path.remove(finder)


def _flush_all(writers: dict[str, TableWriter], out: Path) -> None:
    """Write every table's pending rows as a segment; a write error is the user's to fix.

    All segments are written first (under hidden names), then renamed into place, the
    ``system`` segment last: a SIGKILL between two renames (microseconds, where it used to
    be the writes, milliseconds) leaves the other tables at most one segment ahead, and
    every tick of the ``system`` table has its rows in every table."""
    order = [w for name, w in writers.items() if name != "system"]
    if "system" in writers:
        order.append(writers["system"])
    try:
        for w in order:
            w.stage()
        for w in order:
            w.publish()
    except OSError as e:
        raise LoadmemError(
            f"cannot write the recording in {out}: {e.strerror or e}",
            "free some disk space or choose another --out; the segments written so far "
            "stay readable",
        ) from None


def _clear_recording(out: Path) -> None:
    """``--force``: remove the previous recording's files (only those), so two recordings'
    rows never mix in one directory."""
    (out / META_FILE).unlink(missing_ok=True)
    for name in schema.TABLES:
        (out / f"{name}.parquet").unlink(missing_ok=True)
        if (out / name).is_dir():
            shutil.rmtree(out / name)


def _redactor():
    from loadmem.redact import redact_argv

    return redact_argv


class Recorder:
    """Runs one recording. Not reusable: create one per recording."""

    def __init__(self, options: RecordOptions):
        self.o = options
        if options.interval < MIN_INTERVAL_S:
            raise LoadmemError(
                f"--interval must be at least {MIN_INTERVAL_S * 1000:.0f}ms",
                "e.g. --interval 1s; every tick reads every watched process",
            )
        if options.flush <= 0:
            raise LoadmemError("--flush must be more than 0", "e.g. --flush 5s")
        if not 0 < options.pss_budget <= 1:
            raise LoadmemError(
                "--pss-budget must be more than 0% and at most 100% of one core, "
                f"not {options.pss_budget:.0%}",
                "e.g. --pss-budget 2%",
            )
        if options.duration is not None and options.duration <= 0:
            raise LoadmemError("--duration must be more than 0", "e.g. --duration 10m")
        if options.mappings_every is not None and options.mappings_every <= 0:
            raise LoadmemError("--mappings-every must be more than 0", "e.g. --mappings-every 10m")
        self.procfs = options.procfs or KeptOpenProcFS()
        self.stop_event = StopLatch()
        self.stop_reason = "stopped"
        self.controller_lost = False  # the control channel closed without a stop command
        # control messages from the reader thread (deque: append/popleft are thread-safe,
        # and an empty check costs no lock, every tick)
        self._control: collections.deque[dict[str, Any]] = collections.deque()
        self._status_out: TextIO = sys.stdout
        # replaced, never mutated, so another thread may read it while the loop runs
        self._seen_keys: frozenset[tuple[int, int]] = frozenset()
        self.ticks = 0
        self._snapshots: MappingSnapshots | None = None
        self._compactor: BackgroundCompactor | None = None

    # --- public --------------------------------------------------------------------
    @property
    def processes_seen(self) -> frozenset[tuple[int, int]]:
        """Every (pid, start_time) that has had a row so far (readable from another thread)."""
        return self._seen_keys

    @property
    def snapshots_done(self) -> int:
        """Per-mapping snapshots finished so far (readable from another thread)."""
        return self._snapshots.rounds_done if self._snapshots is not None else 0

    def snapshot(self, reason: str = "request") -> None:
        """Ask for a per-mapping snapshot (thread-safe; taken from the next tick on)."""
        self._control.append({"snapshot": reason})

    def stop(self, reason: str = "stop") -> None:
        if not self.stop_event.is_set():
            self.stop_reason = reason
        self.stop_event.set()

    def run(self) -> RecordResult:
        try:
            return self._run()
        finally:
            if self.o.procfs is None:  # ours: its kept-open files
                self.procfs.close()

    def _run(self) -> RecordResult:
        o = self.o
        redact = _redactor() if o.redact else None
        me = os.getpid()
        selector = ProcessSelector(
            o.selection, self.procfs, exclude_pids={me}, no_match_pids=_ancestors(me)
        )
        selector.check_initial()
        out = prepare_output(o.out, force=o.force)
        if o.force:
            _clear_recording(out)
        if o.lean:
            keep_pandas_out()
        start_monotonic = time.monotonic()
        start_epoch = time.time()
        argv = redact(list(o.argv)) if redact else list(o.argv)
        meta = build_meta(
            start_epoch=start_epoch, start_monotonic=start_monotonic, interval=o.interval,
            flush=o.flush, pss_budget=o.pss_budget, pss_max_age=o.pss_max_age,
            duration=o.duration, selection=o.selection.to_dict(), argv=argv, label=o.label,
            redacted=o.redact,
        )
        meta["selected"] = selector.selected
        if o.announce is not None:
            for line in selected_lines(meta):
                o.announce(line)
        bucket = TokenBucket(o.pss_budget, BUDGET_CAP_S)
        if o.compact_every:
            self._compactor = BackgroundCompactor(on_fork=selector.exclude.add,
                                                  on_reap=selector.exclude.discard)
        sampler = Sampler(selector, bucket, self.procfs, max_age=o.pss_max_age,
                          interval=o.interval, redact=redact, read_cgroups=o.read_cgroups)
        writers: dict[str, TableWriter] = {
            name: self._writer(out, name, sch)
            for name, sch in (("processes", schema.PROCESSES), ("cgroup", schema.CGROUP),
                              ("recorder", schema.RECORDER), ("events", schema.EVENTS),
                              ("mappings", schema.MAPPINGS), ("snapshots", schema.SNAPSHOTS))
        }
        snaps = None
        if o.mappings:
            snaps = self._snapshots = MappingSnapshots(
                self.procfs, every=o.mappings_every, event=sampler.event,
                cmdline=lambda key: (info.cmdline if (info := sampler.procs.get(key))
                                     else None))
            snaps.request("start")
            sampler.between_reads = lambda: snaps.step(
                sampler.selector.watched, lambda: bucket.allows, bucket.charge)
        # handlers before meta.json: a controller may send SIGTERM as soon as it sees it
        restore = self._install_signals() if o.handle_signals else None
        write_meta(out, meta)
        if o.control_stdin:
            threading.Thread(target=self._read_control, name="loadmem-control",
                             daemon=True).start()
        sampler.event("recording_start", "loadmem record started", {
            "selection": o.selection.to_dict(), "interval_s": o.interval,
            "pss_budget": o.pss_budget, "pss_max_age_s": o.pss_max_age, "label": o.label,
        }, t=0.0, ts=dt.datetime.fromtimestamp(start_epoch, dt.UTC))
        if o.selection.empty and not o.control_stdin:
            sampler.event("warning", "no process selected: recording the system only",
                          {"reason": "no-selection"}, t=0.0,
                          ts=dt.datetime.fromtimestamp(start_epoch, dt.UTC))
        status = "interrupted"
        finalized = False
        try:
            self._loop(start_monotonic, sampler, bucket, writers, out)
            if snaps is not None:  # the rest of a pending snapshot, or one at the stop
                self._drain_control(sampler)  # a snapshot asked for just before the stop
                t_stop = time.monotonic() - start_monotonic
                snaps.begin_tick(max(self.ticks - 1, 0), t_stop, dt.datetime.now(dt.UTC))
                # a controller's observe_end is the end snapshot: no second one
                snaps.finish(sampler.selector.watched, charge=bucket.charge,
                             stop_round=not snaps.requested("observe_end"))
                self._take_snapshots(snaps, writers)
            sampler.event("recording_stop", f"stopped: {self.stop_reason}",
                          {"reason": self.stop_reason, "ticks": self.ticks},
                          t=time.monotonic() - start_monotonic, ts=dt.datetime.now(dt.UTC))
            writers["events"].extend(sampler.take_events())
            _flush_all(writers, out)
            if self._compactor is not None:  # sampling is over: the merge may wait for it
                self._compactor.wait()
            if o.finalize:
                finalize(out)
                finalized = True
            status = "incomplete" if self.controller_lost else "complete"
        except BaseException as e:
            self.stop_reason = (
                "interrupted twice" if isinstance(e, KeyboardInterrupt)
                else f"error: {type(e).__name__}: {e}"
            )
            for w in writers.values():  # keep what was sampled: the last rows, as a segment
                with contextlib.suppress(Exception):
                    w.flush()
            raise
        finally:
            if self._compactor is not None and self._compactor.busy:  # an interrupted stop
                self._compactor.kill()
            if restore is not None:
                restore()
            if o.progress:
                sys.stderr.write("\r\033[K")
                sys.stderr.flush()
            with contextlib.suppress(OSError):  # a full disk must not hide the first error
                self._final_meta(out, status, self.ticks, sampler, bucket, writers, finalized)
        return RecordResult(out, self.ticks, len(self._seen_keys), self.stop_reason, status,
                            dict(sampler.failures), finalized)

    # --- the loop ------------------------------------------------------------------
    def _loop(self, start: float, sampler: Sampler, bucket: TokenBucket,
              writers: dict[str, TableWriter], out: Path) -> None:
        o = self.o
        tick = 0
        slot = 0  # index of the scheduled tick time
        own_pss_t = -math.inf
        page = os.sysconf("SC_PAGE_SIZE")
        # Segments are written on a wall-clock schedule: after the first tick at or past
        # each multiple of --flush since the start, so a kill loses at most --flush of
        # samples (a flush "--flush after the previous one ended" drifts by a tick each time)
        next_flush = o.flush
        prev_slot, prev_t, work_s, work_cpu = -1, 0.0, 0.0, 0.0
        # The last tick is a closing one (Sampler.tick): taken at once when a stop is asked
        # for (in the slot it was waiting for), or in the last slot of --duration.
        def past_end(slot_time: float) -> bool:  # a slot beyond --duration
            return o.duration is not None and slot_time - start > o.duration + 1e-6

        closing = False
        while not closing:
            scheduled = start + slot * o.interval
            if past_end(scheduled):
                self.stop_reason = "duration"  # a slot past the end (a late wake-up)
                break
            closing = self.stop_event.is_set()
            now = time.monotonic()
            if now < scheduled and not closing:
                closing = self.stop_event.wait(scheduled - now)
                now = time.monotonic()
            latest = math.floor((now - start) / o.interval + 1e-9)
            if latest > slot:  # woken a whole interval late (a stopped or starved process):
                slot = latest  # this is the tick of the latest slot, those before are missed
                scheduled = start + slot * o.interval
                if past_end(scheduled):
                    self.stop_reason = "duration"
                    break
            if past_end(scheduled + o.interval):  # the last slot of --duration
                closing = True
                if not self.stop_event.is_set():
                    self.stop_reason = "duration"
            lag = max(now - scheduled, 0.0)  # a closing tick may come before its slot
            t = now - start
            ts = dt.datetime.now(dt.UTC)
            missed = slot - prev_slot - 1
            if missed > 0:
                self._gap(sampler, missed, prev_t, t, work_s, work_cpu, ts)
            prev_slot, prev_t = slot, t
            self._drain_control(sampler)
            cpu0 = time.process_time()
            snaps = self._snapshots
            if snaps is not None:
                snaps.begin_tick(tick, t, ts)
            c0 = time.perf_counter()
            res = sampler.tick(tick, t, ts, closing=closing)
            if snaps is not None:
                self._take_snapshots(snaps, writers)
            tick_us = int((time.perf_counter() - c0) * 1e6)
            if "system" not in writers:  # its columns are this kernel's meminfo fields
                writers["system"] = self._writer(
                    out, "system", schema.system_schema(sampler.meminfo_keys or []))
            writers["system"].append(res.system)
            writers["processes"].extend(res.processes)
            writers["cgroup"].extend(res.cgroup)
            writers["events"].extend(res.events)
            if res.new_keys:
                self._seen_keys = self._seen_keys | frozenset(res.new_keys)
            own_pss = None  # the recorder's own PSS: on the ticks it is read, null between
            if t - own_pss_t >= o.pss_max_age:
                own_pss, own_pss_t = self._own_pss(), t
            bucket.charge()
            times = os.times()
            writers["recorder"].append({
                "ts": ts, "t": t, "tick": tick, "pid": os.getpid(),
                "cpu_user": times.user, "cpu_system": times.system,
                "rss": self._own_rss(page), "pss": own_pss,
                "tick_us": tick_us, "cheap_us": res.cheap_us,
                "smaps_reads": res.smaps_reads, "smaps_us": res.smaps_us,
                "smaps_max_us": res.smaps_max_us, "processes": len(res.processes),
                "pss_oldest_s": res.pss_oldest_s, "pss_stale_s": res.pss_stale_s,
                "pss_drift": res.pss_drift, "budget_s": bucket.balance,
                "errors": res.errors, "lag_s": lag, "missed_ticks": missed,
                "cpu_children": self._compactor.cpu_s if self._compactor else 0.0,
            })
            if o.status_stdout:
                self._status_line(t, tick, res)
            if o.progress:
                self._progress(t, res, times.user + times.system)
            if scheduled - start >= next_flush - 1e-6:
                _flush_all(writers, out)
                self._compact(writers, sampler, bucket)
                next_flush = (math.floor((scheduled - start) / o.flush + 1e-6) + 1) * o.flush
            work_s, work_cpu = time.monotonic() - now, time.process_time() - cpu0
            tick += 1
            self.ticks = tick
            # the next slot in the future: ticks that could not happen are skipped
            slot = max(slot + 1, math.floor((time.monotonic() - start) / o.interval) + 1)

    def _gap(self, sampler: Sampler, missed: int, from_t: float, to_t: float, work_s: float,
             work_cpu: float, ts: dt.datetime) -> None:
        """Ticks that could not happen: an event saying how many, when, and whose fault.

        ``recorder``: the previous tick's own work (sampling, writing segments) took more
        CPU than an interval; ``host``: the recorder was not run in time (a busy or
        suspended host, a stopped process), whether it was sleeping or working then."""
        cause = "recorder" if work_cpu > self.o.interval else "host"
        sampler.event("gap", f"no sample for {to_t - from_t:.3f}s: {missed} tick(s) missed "
                      f"({'the recorder was busy' if cause == 'recorder' else 'not run in time'})",
                      {"missed": missed, "from_t": round(from_t, 6), "to_t": round(to_t, 6),
                       "cause": cause, "work_s": round(work_s, 6),
                       "work_cpu_s": round(work_cpu, 6)}, t=to_t, ts=ts)

    def _compact(self, writers: dict[str, TableWriter], sampler: Sampler,
                 bucket: TokenBucket) -> None:
        """After a flush: collect a finished compaction child, start one for the tables that
        have enough segments. The child's CPU is charged to the budget as a spread debt."""
        c = self._compactor
        if c is None:
            return
        done = c.poll()
        if done is not None:
            bucket.charge_spread(done.cpu_s)
            if not done.ok:
                sampler.event("warning", f"compaction failed: {done.error}; the segments stay "
                              "and are merged at the end",
                              {"reason": "compaction-failed", "tables": done.tables,
                               "error": done.error})
        if c.busy or not any(w.compaction_due for w in writers.values()):
            return
        jobs = [job for w in writers.values() if w.compaction_due
                for job in [w.take_compaction()] if job is not None]
        c.start(jobs)

    # --- helpers -------------------------------------------------------------------
    @staticmethod
    def _take_snapshots(snaps: MappingSnapshots, writers: dict[str, TableWriter]) -> None:
        mapping_rows, snapshot_rows = snaps.take()
        if mapping_rows:
            writers["mappings"].extend(mapping_rows)
        if snapshot_rows:
            writers["snapshots"].extend(snapshot_rows)

    def _writer(self, out: Path, name: str, sch: pa.Schema) -> TableWriter:
        # light segments: uncompressed, no statistics (cheaper to write, and smaller for a
        # few rows); the merge at the end compresses. Compaction runs in a child process
        # (BackgroundCompactor), never inside a flush.
        return TableWriter(out, name, sch, writer_id="rec", flush_s=self.o.flush,
                           light_segments=True, compact_every=self.o.compact_every,
                           auto_compact=False)

    def _own_rss(self, page: int) -> int | None:
        try:
            return int(self.procfs.read_pid(os.getpid(), "statm").split()[1]) * page
        except Exception:
            return None

    def _own_pss(self) -> int | None:
        try:
            return parse_smaps_rollup(self.procfs.read_pid(os.getpid(), "smaps_rollup")).get("Pss")
        except Exception:
            return None

    def _status_line(self, t: float, tick: int, res: TickResult) -> None:
        s = res.system
        line = {
            "t": round(t, 3), "tick": tick, "mem_total": s.get("MemTotal"),
            "mem_available": s.get("MemAvailable"), "mem_free": s.get("MemFree"),
            "sum_rss": res.sum_rss, "sum_pss": res.sum_pss, "processes": res.target_processes,
        }
        try:
            self._status_out.write(json.dumps(line) + "\n")
            self._status_out.flush()
        except (BrokenPipeError, ValueError):
            self.stop("status pipe closed")

    def _progress(self, t: float, res: TickResult, cpu: float) -> None:
        from loadmem.units import format_bytes, format_duration

        s = res.system
        sys.stderr.write(
            f"\r\033[Krecording {format_duration(t)}  processes {len(res.processes)}  "
            f"RSS {format_bytes(res.sum_rss)}  PSS {format_bytes(res.sum_pss)}  "
            f"available {format_bytes(s.get('MemAvailable'))}  "
            f"recorder CPU {100 * cpu / max(t, 1e-3):.1f}%"
        )
        sys.stderr.flush()

    def _install_signals(self):
        if threading.current_thread() is not threading.main_thread():
            return None
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum, frame):
            if self.stop_event.is_set():  # a second signal: give up on a clean stop
                raise KeyboardInterrupt
            self.stop(f"signal {signal.Signals(signum).name}")

        for s in previous:
            signal.signal(s, handler)

        def restore():
            for s, h in previous.items():
                signal.signal(s, h)

        return restore

    def _read_control(self) -> None:
        """Control channel: JSON lines on stdin. End of input means the controller is gone."""
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                self._control.append({"_invalid": line[:200]})
                continue
            if not isinstance(msg, dict):
                self._control.append({"_invalid": line[:200]})
                continue
            if msg.get("stop"):
                self.stop("stop command")
                return
            self._control.append(msg)
        # End of input without a stop command: the controller (``loadmem run``) died, maybe
        # by SIGKILL. Finish the recording, and say it is incomplete.
        self.controller_lost = True
        self.stop("control channel closed: the controlling process is gone")

    def _drain_control(self, sampler: Sampler) -> None:
        while self._control:
            msg = self._control.popleft()
            watch = msg.get("watch")
            snapshot = msg.get("snapshot")
            if isinstance(snapshot, str) and snapshot in REASONS:
                if self._snapshots is not None:
                    self._snapshots.request(snapshot)
            elif isinstance(watch, dict) and isinstance(watch.get("pid"), int):
                role = str(watch.get("role") or "target")
                sampler.selector.add_root(watch["pid"], role)
                sampler.event("note", f"watching pid {watch['pid']} as {role}",
                              {"pid": watch["pid"], "role": role})
            else:
                sampler.event("warning", "ignored an invalid control message",
                              {"reason": "control:invalid", "message": json.dumps(msg)[:200]})

    def _final_meta(self, out: Path, status: str, ticks: int, sampler: Sampler,
                    bucket: TokenBucket, writers: dict[str, TableWriter], finalized: bool) -> None:
        times = os.times()
        update_meta(
            out, status=status, stop_reason=self.stop_reason, end_epoch=time.time(),
            end_monotonic=time.monotonic(), ticks=ticks, processes_seen=len(self._seen_keys),
            failures=dict(sampler.failures), finalized=finalized,
            selected=sampler.selector.selected,
            recorder_cpu_s=times.user + times.system,
            rows={name: w.rows_written for name, w in writers.items()},
            bytes_written={name: w.bytes_written for name, w in writers.items()},
        )
