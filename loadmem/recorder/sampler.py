"""One tick of sampling: meminfo, cgroups, the cheap tier of every watched process, and the
budgeted smaps_rollup reads. Produces rows for the tables of ``loadmem.recording.schema``.

Failures never crash a tick and never drop a row: a field that could not be read is null
and the row's ``error`` names why (``smaps:access-denied``, ``status:gone``, ``zombie``...).
A warning event is emitted once per (process, reason), not per tick.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loadmem.errors import AccessDenied, ProcessError, ProcessGone, ZombieProcess
from loadmem.procfs.cgroup import (
    CgroupMounts,
    CgroupRef,
    parse_mountinfo_cgroups,
    parse_proc_cgroup,
)
from loadmem.procfs.meminfo import MeminfoLayout, parse_meminfo
from loadmem.procfs.reader import ProcFS
from loadmem.procfs.smaps_rollup import parse_smaps_rollup, smaps_columns
from loadmem.procfs.stat import ProcStat, parse_stat
from loadmem.procfs.status import ProcStatus, parse_status
from loadmem.recorder.cgroup_rows import CgroupRows
from loadmem.recorder.scheduler import (
    DIRTY_MIN_BYTES,
    RECHECK_FACTOR,
    RECHECK_SHARE,
    Candidate,
    PssState,
    TokenBucket,
    copies,
    due_lists,
    update_validity,
)
from loadmem.recorder.selection import Key, ProcessSelector, Watched
from loadmem.recording.schema import SMAPS_COLUMNS, meminfo_column

_NULL_SMAPS: dict[str, int | None] = dict.fromkeys(SMAPS_COLUMNS.values())
#: An idle process's ``status`` is not read while its ``stat`` reads the same, except every
#: this many ticks (a change of the RSS split that nets out in stat's RSS and takes no
#: fault, such as a file page reclaimed while a page is pinned in, shows up then).
STATUS_SKIP_MAX = 30
#: At most this many processes born since the first tick are read on their first tick when
#: the budget's balance is not positive (the reads are charged all the same).
BIRTH_READS_MAX = 4


@dataclass
class TickResult:
    system: dict[str, Any]
    processes: list[dict[str, Any]]
    cgroup: list[dict[str, Any]]
    events: list[dict[str, Any]]
    cheap_us: int = 0
    smaps_reads: int = 0
    smaps_us: int = 0
    smaps_max_us: int = 0
    errors: int = 0
    pss_oldest_s: float | None = None  # age of the oldest read held
    pss_stale_s: float = 0.0  # the longest a figure has gone unconfirmed (0: all current)
    pss_drift: int = 0  # sum of the figures' drift: how far the PSS sum may be off
    sum_rss: int = 0  # role "target"
    sum_pss: int = 0  # role "target", latest known figures
    target_processes: int = 0
    new_keys: list[tuple[int, int]] = field(default_factory=list)  # first row of these


@dataclass
class _ProcInfo:
    """The sampler's memory of one watched process between ticks."""

    watched: Watched
    cmdline: str | None = None
    comm: str | None = None
    cgroup: CgroupRef | None = None
    faults: int | None = None  # minflt + majflt at the last tick (None: not sampled yet)
    rss: int | None = None  # VmRSS at the last tick
    split: tuple[int, int, int] | None = None  # RssAnon, RssFile, RssShmem at the last tick
    pss: PssState = field(default_factory=PssState)
    # the last stat/status texts and what they parsed to: an idle process's files read the
    # same from tick to tick, and comparing two strings is cheaper than parsing one
    stat_text: str | None = None
    stat: ProcStat | None = None
    status_text: str | None = None
    status: ProcStatus | None = None
    status_skips: int = 0  # ticks its status was taken as unchanged because stat was
    # the last row without news (no fresh PSS, no error) and what it was built from: while
    # those are the same objects, the next row is a copy with the tick's time
    row: dict[str, Any] | None = None
    row_from: tuple[Any, ...] | None = None


@dataclass
class _Sample:
    """The cheap tier of one process in one tick."""

    info: _ProcInfo
    stat: ProcStat
    status: ProcStatus | None
    errors: list[str]
    faults: int = 0  # minflt + majflt now
    fault_delta: int = 0  # since the last tick
    cow_delta: int = 0  # of which beyond its RSS growth: most likely copy-on-write breaks


@dataclass
class _Reads:
    """What this tick's smaps_rollup reads gave."""

    fresh: set[Key] = field(default_factory=set)
    drift: dict[Key, float] = field(default_factory=dict)  # of the figures not read now
    stale: dict[Key, float] = field(default_factory=dict)  # seconds unconfirmed, when not 0
    errors: dict[Key, str] = field(default_factory=dict)
    total_us: int = 0
    max_us: int = 0


def _split(status: ProcStatus | None) -> tuple[int, int, int] | None:
    """RssAnon, RssFile, RssShmem (bytes), when status gave all three."""
    if status is None or None in (status.rss_anon, status.rss_file, status.rss_shmem):
        return None
    return status.rss_anon, status.rss_file, status.rss_shmem  # type: ignore[return-value]


class Sampler:
    """Samples one tick; keeps per-process state (PSS carried forward, fault counters)."""

    def __init__(
        self,
        selector: ProcessSelector,
        bucket: TokenBucket,
        procfs: ProcFS | None = None,
        max_age: float = 15.0,
        interval: float = 0.0,
        redact: Callable[[list[str]], list[str]] | None = None,
        clk_tck: int | None = None,
        read_cgroups: bool = True,
    ):
        self.selector = selector
        self.bucket = bucket
        self.procfs = procfs or selector.procfs
        self.max_age = max_age
        self.interval = interval
        self.redact = redact
        self.clk_tck = clk_tck or os.sysconf("SC_CLK_TCK")
        self.read_cgroups = read_cgroups
        self.meminfo_keys: list[str] | None = None
        self._meminfo_layout: MeminfoLayout | None = None
        self._meminfo_columns: list[str] = []
        self.procs: dict[Key, _ProcInfo] = {}
        self.tolerance = DIRTY_MIN_BYTES
        self.recheck = RECHECK_FACTOR * max_age
        #: the re-checks of current figures have their own, smaller bucket
        self.recheck_bucket = TokenBucket(bucket.budget * RECHECK_SHARE, cap_s=30.0)
        self._sampled = False  # a tick has been sampled: later arrivals change the groups
        self.rowed: set[Key] = set()  # every (pid, start_time) that has had a row
        self.failures: dict[str, int] = {}  # reason -> count over the whole recording
        self._warned: set[tuple[Any, str]] = set()
        self._events: list[dict[str, Any]] = []
        self._mounts: CgroupMounts | None = None
        self._cgroup_refs: list[CgroupRef] | None = None  # those of self.procs, sorted
        self._cgroup_rows: CgroupRows | None = None
        self._t = 0.0
        self._ts: dt.datetime | None = None
        #: called once per tick between the urgent smaps_rollup reads (never read, overdue)
        #: and the dirty ones: the recorder reads a pending mapping snapshot there
        self.between_reads: Callable[[], Any] | None = None

    # --- events --------------------------------------------------------------------
    def event(self, kind: str, message: str = "", data: dict[str, Any] | None = None,
              t: float | None = None, ts: dt.datetime | None = None) -> None:
        self._events.append({
            "ts": ts or self._ts or dt.datetime.now(dt.UTC),
            "t": self._t if t is None else t,
            "kind": kind,
            "phase": None,
            "message": message,
            "data": json.dumps(data, sort_keys=True) if data is not None else None,
        })

    def take_events(self) -> list[dict[str, Any]]:
        ev, self._events = self._events, []
        return ev

    def warn_once(self, ident: Any, reason: str, message: str, data: dict[str, Any]) -> None:
        if (ident, reason) in self._warned:
            return
        self._warned.add((ident, reason))
        self.event("warning", message, {"reason": reason, **data})

    def _fail(self, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1

    # --- the tick ------------------------------------------------------------------
    def tick(self, tick_no: int, t: float, ts: dt.datetime, closing: bool = False) -> TickResult:
        """Sample everything once: system, discovery, cheap tier, budgeted smaps, cgroups.

        ``closing``: the recording's last tick. Every figure that moved since its read (and
        any never read) is read whatever the budget's balance: the last figures are the end
        level every verdict compares with, and a figure the budget held back would leave out
        whatever was copied just before the stop. Re-checks of quiet figures are skipped."""
        self._t, self._ts = t, ts
        c0 = time.perf_counter()
        common = {"ts": ts, "t": t, "tick": tick_no}
        system = self._system_row(common)
        added, gone = self.selector.update()
        for message, data in self.selector.take_notes():
            self.event("warning" if "reason" in data else "note", message, data)
        for w in gone:
            self._exit(w)
        for w in added:
            self._start(w)
        samples, errors = self._cheap_tier()
        cheap_us = int((time.perf_counter() - c0) * 1e6)
        reads = self._smaps_reads(samples, t, closing)
        res = TickResult(system=system, processes=[], cgroup=[], events=[], cheap_us=cheap_us,
                         smaps_reads=len(reads.fresh), smaps_us=reads.total_us,
                         smaps_max_us=reads.max_us, errors=errors)
        self._rows(samples, reads, common, res)
        if self.read_cgroups:
            res.cgroup = self._cgroups(common)
        res.events = self.take_events()
        self._sampled = True
        return res

    def _system_row(self, common: dict[str, Any]) -> dict[str, Any]:
        """Every /proc/meminfo field, in bytes, under its column name."""
        text = self.procfs.read("meminfo")
        layout = self._meminfo_layout
        values = layout.values(text) if layout is not None else None
        if values is None:  # the first tick (or a file that does not match the layout)
            layout = self._meminfo_layout = MeminfoLayout.of(text)
            self._meminfo_columns = [meminfo_column(k) for k in layout.keys]
            if self.meminfo_keys is None:
                self.meminfo_keys = list(layout.keys)
            values = layout.values(text)
        system = dict(common)
        if values is None:  # lines the layout cannot take apart: the slow, general parse
            system.update((meminfo_column(k), v) for k, v in parse_meminfo(text).items())
        else:
            system.update(zip(self._meminfo_columns, values, strict=True))
        return system

    def _cheap_tier(self) -> tuple[list[_Sample], int]:
        """``stat`` and ``status`` of every watched process: constant cost, every tick.

        A process whose ``stat`` is gone (or whose pid now belongs to another process)
        has exited: it gets a ``process_exit`` event and no row. Fault deltas feed the
        sharing group's counter, which makes the group's other members dirty.
        """
        samples: list[_Sample] = []
        errors = 0
        group_delta: dict[Key, int] = {}
        left: list[Watched] = []  # exec'd: their old address space left the group
        for pid, w in list(self.selector.watched.items()):
            info = self.procs.get((w.pid, w.start_time)) or self._start(w)
            same_stat = False
            try:
                text = self.procfs.read_pid(pid, "stat")
                if text == info.stat_text:  # an idle process: the same text, already parsed
                    st, same_stat = info.stat, True
                else:
                    st = parse_stat(text, self.clk_tck)
                    info.stat_text, info.stat = text, st
            except (ProcessGone, ValueError, IndexError):
                st = None
            except ProcessError as e:
                errors += 1
                self._fail("stat:" + e.reason)
                continue
            if st is None or st.starttime != w.start_time:  # exited, or its pid was reused
                self.selector.forget(pid)
                self._exit(w)
                continue
            w.ppid = st.ppid
            errs: list[str] = []
            if st.comm != info.comm:  # exec() changed the program: re-read the command line
                info.comm = w.name = st.comm
                info.cmdline = self._cmdline(pid)
                if info.faults is not None:  # a new address space: its old figure says nothing
                    info.pss.drift_others += (info.pss.values or {}).get("pss") or self.tolerance
                    left.append(w)
            status: ProcStatus | None = None
            if st.state == "Z":
                errs.append("zombie")
            elif same_stat and info.status is not None and info.status_skips < STATUS_SKIP_MAX:
                # nothing in stat moved (faults, CPU, RSS, size): status's RSS split, swap and
                # size follow those, so it reads the same; one pread fewer per idle process
                status = info.status
                info.status_skips += 1
            else:
                info.status_skips = 0
                try:
                    text = self.procfs.read_pid(pid, "status")
                    if text == info.status_text:
                        status = info.status
                    else:
                        status = parse_status(text)
                        info.status_text, info.status = text, status
                except ProcessError as e:
                    errs.append("status:" + e.reason)
            faults = st.minflt + st.majflt
            delta = faults - info.faults if info.faults is not None else 0
            if delta > 0:
                group_delta[w.group] = group_delta.get(w.group, 0) + delta
            info.faults = faults
            rss = status.rss if status is not None else None
            split = _split(status)
            if split is not None and info.split is not None:
                cow = copies(delta, split[0] - info.split[0] + split[2] - info.split[2],
                             split[1] - info.split[1])
            else:
                cow = copies(delta, rss - info.rss if rss is not None and info.rss is not None
                             else 0)
            info.rss, info.split = rss, split
            samples.append(_Sample(info, st, status, errs, faults, max(delta, 0), cow))
        if group_delta:  # the others' faults move each member's PSS a little
            faulting: dict[Key, set[Key]] = {}
            group_cow: dict[Key, int] = {}
            for x in samples:
                if x.fault_delta > 0:
                    w = x.info.watched
                    faulting.setdefault(w.group, set()).add((w.pid, w.start_time))
                    group_cow[w.group] = group_cow.get(w.group, 0) + x.cow_delta
            members: dict[Key, int] = {}
            for x in samples:
                g = x.info.watched.group
                members[g] = members.get(g, 0) + 1
            for x in samples:
                w = x.info.watched
                if w.group in group_delta:
                    x.info.pss.members = members[w.group]
                others = group_delta.get(w.group, 0) - x.fault_delta
                if others > 0:
                    x.info.pss.others_faulted(
                        others, faulting.get(w.group, set()) - {(w.pid, w.start_time)},
                        cow=group_cow.get(w.group, 0) - x.cow_delta)
        for w in left:
            self._group_changed(w, joined=False)
        return samples, errors

    def _smaps_reads(self, samples: list[_Sample], t: float, closing: bool = False) -> _Reads:
        """The budgeted smaps_rollup reads, most urgent first, each one timed and charged
        (``closing``: every moved or unread figure, beyond the balance; no re-checks)."""
        self.bucket.refill()
        self.bucket.charge()
        reads = _Reads()
        rss_of = {(x.info.watched.pid, x.info.watched.start_time):
                  (x.faults, x.status.rss if x.status else None, _split(x.status))
                  for x in samples}
        cands = []
        for x in samples:
            if x.stat.state == "Z":
                continue
            key = (x.info.watched.pid, x.info.watched.start_time)
            drift = x.info.pss.drift(x.faults, x.status.rss if x.status else None)
            stale = update_validity(x.info.pss, drift, t, self.tolerance)
            reads.drift[key] = drift
            if stale:
                reads.stale[key] = stale
            cands.append(Candidate(key, x.info.pss, drift))
        urgent, dirty, rechecks = due_lists(cands, t, self.max_age, lead=self.interval,
                                            tolerance=self.tolerance, recheck=self.recheck)
        due = urgent + dirty + ([] if closing else rechecks)
        recheck_from = len(urgent) + len(dirty)
        self.recheck_bucket.refill()
        births = 0
        for n, c in enumerate(due):
            if n == len(urgent) and self.between_reads is not None:
                self.between_reads()  # a pending mapping snapshot: before the dirty ones
            if not self.bucket.allows and not closing:
                # a process born during the recording is read on its first tick whatever
                # the balance: its first figure is the baseline of all that follows, and a
                # worker may copy megabytes within a second of its birth (gc, imports)
                if not (self._sampled and c.state.read_t is None and births < BIRTH_READS_MAX):
                    self._budget_short(due[n:], t)
                    break
                births += 1
            if n >= recheck_from and not self.recheck_bucket.allows:
                break  # the re-checks' share is spent: the oldest goes first next time
            info = self.procs[c.key]
            cpu0 = time.process_time()
            r0 = time.perf_counter()
            try:
                text = self.procfs.read_pid(c.key[0], "smaps_rollup")
            except AccessDenied:  # permanent for this process: not retried
                info.pss.denied = True
                reads.errors[c.key] = "smaps:access-denied"
                continue
            except ZombieProcess:
                reads.errors[c.key] = "zombie"
                continue
            except ProcessError as e:
                reads.errors[c.key] = "smaps:" + e.reason
                continue
            finally:
                self.bucket.charge()
                if n >= recheck_from:
                    self.recheck_bucket.spend(time.process_time() - cpu0)
            us = int((time.perf_counter() - r0) * 1e6)
            fields = parse_smaps_rollup(text)
            if not fields:  # no address space (exited between reads)
                reads.errors[c.key] = "smaps:empty"
                continue
            reads.total_us += us
            reads.max_us = max(reads.max_us, us)
            info.pss.read(t, us, smaps_columns(fields), *rss_of[c.key])
            reads.fresh.add(c.key)
            reads.drift.pop(c.key, None)
            reads.stale.pop(c.key, None)
        if not dirty and not rechecks and self.between_reads is not None:
            self.between_reads()
        return reads

    def _rows(self, samples: list[_Sample], reads: _Reads, common: dict[str, Any],
              res: TickResult) -> None:
        """One ``processes`` row per sample; failures become nulls plus ``error``."""
        t = common["t"]
        for x in samples:
            info, st, status, errs = x.info, x.stat, x.status, x.errors
            w = info.watched
            key = (w.pid, w.start_time)
            if key in reads.errors:
                errs.append(reads.errors[key])
            elif info.pss.denied:
                errs.append("smaps:access-denied")
            for reason in errs:
                res.errors += 1
                self._fail(reason)
                self.warn_once(key, reason, f"pid {w.pid} ({w.name}): {reason}",
                               {"pid": w.pid, "start_time": w.start_time})
            s = info.pss
            zombie = st.state == "Z"  # no address space left: carried figures would lie
            values = s.values if (s.values is not None and not zombie) else _NULL_SMAPS
            fresh = key in reads.fresh
            drift = 0 if zombie else int(reads.drift.get(key, 0.0))
            stale = 0.0 if zombie else reads.stale.get(key, 0.0)
            est = values.get("pss")
            if drift and not fresh:  # something moved since the read: the likely PSS now
                e = s.estimate(x.faults, status.rss if status else None, _split(status))
                est = None if e is None else int(e)
            made_from = (st, status, values, info.cmdline, w.role, w.depth, s.read_t, s.read_us,
                         drift, stale, est)
            if info.row is not None and not errs and not fresh and made_from == info.row_from:
                row = info.row.copy()  # an idle process: only the time moved
                row.update(common)
            else:
                row = {
                    **common,
                    "pid": w.pid, "start_time": w.start_time, "ppid": st.ppid,
                    "name": st.comm, "cmdline": info.cmdline, "role": w.role,
                    "cgroup": info.cgroup.path if info.cgroup is not None else None,
                    "depth": w.depth, "state": st.state, "threads": st.num_threads,
                    "rss": status.rss if status else None,
                    "rss_anon": status.rss_anon if status else None,
                    "rss_file": status.rss_file if status else None,
                    "rss_shmem": status.rss_shmem if status else None,
                    "vm_size": status.vm_size if status else None,
                    "swap": status.swap if status else None,
                    "minflt": st.minflt, "majflt": st.majflt, "utime": st.utime,
                    "stime": st.stime,
                    **values,
                    "pss_fresh": fresh,
                    "pss_read_t": None if zombie else s.read_t,
                    "pss_read_us": None if zombie else s.read_us,
                    "pss_drift": None if s.read_t is None or zombie else drift,
                    "pss_stale_s": None if s.read_t is None or zombie else stale,
                    "pss_est": est,
                    "error": ";".join(errs) if errs else None,
                }
                news = errs or fresh
                if key not in self.rowed:
                    self.rowed.add(key)
                    res.new_keys.append(key)
                info.row, info.row_from = (None, None) if news else (row, made_from)
            res.processes.append(row)
            if s.read_t is not None and not zombie and not s.denied:
                age = t - s.read_t
                res.pss_oldest_s = age if res.pss_oldest_s is None else max(res.pss_oldest_s, age)
                res.pss_stale_s = max(res.pss_stale_s, stale)
                res.pss_drift += drift
            if w.role == "target":
                res.target_processes += 1
                res.sum_rss += row["rss"] or 0
                res.sum_pss += values.get("pss") or 0

    def _budget_short(self, skipped: list[Candidate], t: float) -> None:
        """Due reads the budget pushed back: warn once when a figure goes unconfirmed for
        longer than --pss-max-age (the budget wins; ``pss_stale_s`` says by how much)."""
        late = [c for c in skipped if c.state.read_t is None or (
            c.drift >= self.tolerance
            and t - (c.state.valid_t if c.state.valid_t is not None else c.state.read_t)
            > self.max_age)]
        if late:
            self.warn_once("recorder", "budget-exhausted",
                           f"the PSS budget is exhausted: {len(late)} processes have PSS "
                           f"figures unconfirmed for longer than {self.max_age:g}s or none yet "
                           "(raise --pss-budget, or --pss-max-age); the recorder table's "
                           "pss_stale_s says by how much",
                           {"processes": len(late), "budget_s": self.bucket.balance})

    # --- process lifecycle ---------------------------------------------------------
    def _start(self, w: Watched) -> _ProcInfo:
        key = (w.pid, w.start_time)
        info = self.procs.get(key)
        if info is not None:
            return info
        info = _ProcInfo(watched=w, comm=w.name, cmdline=self._cmdline(w.pid))
        if self.read_cgroups:
            info.cgroup = self._cgroup_of(w.pid)
        self.procs[key] = info
        self._cgroup_refs = None
        if self._sampled:
            self._group_changed(w, joined=True)
        self.event("process_start", f"pid {w.pid} ({w.name})", {
            "pid": w.pid, "start_time": w.start_time, "ppid": w.ppid, "role": w.role,
            "depth": w.depth, "name": w.name,
        })
        return info

    def _exit(self, w: Watched) -> None:
        key = (w.pid, w.start_time)
        if self.procs.pop(key, None) is None:
            return
        self._cgroup_refs = None
        self._group_changed(w, joined=False)
        self.event("process_exit", f"pid {w.pid} ({w.name})",
                   {"pid": w.pid, "start_time": w.start_time, "role": w.role})

    def _group_changed(self, w: Watched, joined: bool) -> None:
        """``w`` joined (fork) or left (exit, exec) its sharing group: every member's shared
        pages gained or lost a sharer; a parent that forked shares its private pages now."""
        for info in self.procs.values():
            m = info.watched
            if m.group != w.group or m is w:
                continue
            info.pss.group_changed(joined)
            if joined and m.pid == w.ppid:
                info.pss.forked()

    def _cmdline(self, pid: int) -> str | None:
        try:
            raw = self.procfs.read_pid_bytes(pid, "cmdline")
        except ProcessError:
            return None
        argv = [a.decode("utf-8", "replace") for a in raw.rstrip(b"\0").split(b"\0")] if raw else []
        if not argv:
            return None
        if self.redact is not None:
            argv = self.redact(argv)
        return " ".join(argv)

    # --- cgroups -------------------------------------------------------------------
    def _cgroup_of(self, pid: int) -> CgroupRef | None:
        if self._mounts is None:
            try:
                self._mounts = parse_mountinfo_cgroups(self.procfs.read("self/mountinfo"))
            except OSError:
                self._mounts = CgroupMounts()
        try:
            return parse_proc_cgroup(self.procfs.read_pid(pid, "cgroup"), self._mounts)
        except ProcessError:
            return None

    def _cgroups(self, common: dict[str, Any]) -> list[dict[str, Any]]:
        """The memory cgroups of the watched processes and those selected by
        ``--cgroup``/``--container``/``--unit`` (``loadmem.recorder.cgroup_rows``)."""
        refs = self._cgroup_refs
        if refs is None:  # the watched set changed since the last tick
            refs = self._cgroup_refs = sorted(
                {i.cgroup for i in self.procs.values() if i.cgroup is not None}
                | set(self.selector.selected_cgroups),
                key=lambda r: (r.version, r.path))
        if self._cgroup_rows is None:
            if self._mounts is None:
                try:
                    self._mounts = parse_mountinfo_cgroups(self.procfs.read("self/mountinfo"))
                except OSError:
                    self._mounts = CgroupMounts()
            self._cgroup_rows = CgroupRows(self.procfs, self._mounts, self.warn_once)
        return self._cgroup_rows.rows(refs, common)
