"""Per-mapping snapshots: ``/proc/PID/smaps`` of every target process, a few times per
recording, within the recorder's CPU budget.

A *snapshot* (a round) reads the smaps of every process with role ``target`` watched when it
starts, one process at a time, and writes one ``mappings`` row per resident (or swapped)
mapping and one ``snapshots`` row per process (the read's time and duration, the parse's
cost, the executable). Rounds are taken:

- at the start of a recording (``start``) and when it stops (``stop``);
- when the controller asks (``loadmem run`` at the end of each phase: ``baseline_end``,
  ``load_end``, ``observe_end``), through the control channel;
- every ``--mappings-every`` (``every``), for long recordings.

A smaps read walks the process's page tables like ``smaps_rollup`` (about as long, holding
its mmap lock), so rounds share the PSS budget: the sampler reads never-read and overdue
``smaps_rollup`` figures first, then the pending round's processes while the budget's
balance is positive, then the processes that are merely dirty. A round of many large
processes is therefore spread over ticks. At the stop, what is left of a pending round is
read at once: it is the recorder's last work, and the snapshot at the end is the one the
attribution compares against.

Each mapping is classified (``loadmem.procfs.mapkind``). For a ``.bss`` the program headers
of the file before it are read (the first 4 KiB of the file, through ``/proc/PID/root``,
once per file per recording). A process with more than ``max_rows`` resident mappings keeps
its largest ones as rows and sums the rest per (kind, file) into aggregated rows.
"""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import operator
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loadmem.errors import AccessDenied, ProcessError, ZombieProcess
from loadmem.procfs.elf import HEAD_BYTES, LoadSegment, bss_end, parse_load_segments, phdr_extent
from loadmem.procfs.mapkind import classify
from loadmem.procfs.reader import ProcFS
from loadmem.procfs.smaps import FIELDS, Mapping, SmapsLayout, parse_smaps, smaps_layout
from loadmem.recording.schema import MAPPING_FIGURES

#: Rows one process may get per snapshot before its smallest mappings are aggregated. A
#: gunicorn + Flask worker has about 180 resident mappings (measured: docs/recorder.md).
MAX_ROWS = 1000
#: Reasons a round is taken (the ``reason`` column).
REASONS = ("start", "baseline_end", "load_end", "observe_end", "every", "stop", "request")

_FIGURES = tuple((FIELDS[name], col) for name, col in MAPPING_FIGURES.items())
_figures = operator.itemgetter(*[Mapping._fields.index(attr) for attr, _ in _FIGURES])
_ROW_COLUMNS = ("address", "perms", "offset", "dev", "inode", "path", "kind", "file",
                "mappings", *[col for _, col in _FIGURES])
Key = tuple[int, int]


@dataclass
class _Round:
    number: int
    reason: str
    todo: collections.deque[Key] = field(default_factory=collections.deque)
    t_start: float | None = None
    read: int = 0
    failed: int = 0
    processes: int = 0


@dataclass
class Snapshotted:
    """What one process's read gave (for tests and the benchmark)."""

    key: Key
    mappings: int
    rows: int
    read_us: int
    parse_us: int
    error: str | None = None


class MappingSnapshots:
    """The rounds of one recording; the recorder calls ``request``, ``step`` and ``finish``
    and takes the rows with ``take``."""

    def __init__(self, procfs: ProcFS, every: float | None = None, max_rows: int = MAX_ROWS,
                 event: Callable[..., None] | None = None,
                 cmdline: Callable[[Key], str | None] | None = None):
        """``cmdline``: a process's command line as the recorder keeps it (redacted)."""
        self.procfs = procfs
        self._cmdline = cmdline or (lambda key: None)
        self.every = every
        self.max_rows = max_rows
        self._event = event or (lambda *a, **k: None)
        self._queue: collections.deque[_Round] = collections.deque()
        self._current: _Round | None = None
        self._number = 0
        self._reasons: set[str] = set()
        self._last_start: float | None = None
        self._layout: SmapsLayout | None = None
        self._elf: dict[tuple[str, int], list[LoadSegment] | None] = {}
        self.mapping_rows: list[dict[str, Any]] = []
        self.snapshot_rows: list[dict[str, Any]] = []
        self._tick = (0, 0.0, dt.datetime.now(dt.UTC))
        self.rounds_done = 0

    # --- scheduling ----------------------------------------------------------------
    def request(self, reason: str) -> None:
        """Queue a round (taken as soon as the one in progress, if any, is done)."""
        if any(r.reason == reason and r.t_start is None for r in self._queue):
            return  # the same request twice before it started: once is enough
        self._queue.append(_Round(self._number, reason))
        self._reasons.add(reason)
        self._number += 1

    def requested(self, reason: str) -> bool:
        """True when a round with this reason was asked for (taken or pending)."""
        return reason in self._reasons

    @property
    def pending(self) -> bool:
        return self._current is not None or bool(self._queue)

    @property
    def last_start(self) -> float | None:
        return self._last_start

    def begin_tick(self, tick: int, t: float, ts: dt.datetime) -> None:
        """The tick the next reads belong to; queues an ``every`` round when one is due."""
        self._tick = (tick, t, ts)
        if (self.every and self._last_start is not None and not self.pending
                and t - self._last_start >= self.every):
            self.request("every")

    def step(self, watched: dict[int, Any], allows: Callable[[], bool],
             charge: Callable[[], Any] | None = None) -> int:
        """Read the pending round's processes while ``allows()``; return the reads made."""
        n = 0
        while allows() and self._next(watched):
            n += 1
            if charge is not None:
                charge()
        return n

    def finish(self, watched: dict[int, Any], stop_round: bool = True,
               charge: Callable[[], Any] | None = None) -> int:
        """At the stop: the rest of every pending round, at once, or (none pending, and
        ``stop_round``) a ``stop`` round."""
        if stop_round and not self.pending:
            self.request("stop")
        n = 0
        while self._next(watched):
            n += 1
            if charge is not None:
                charge()
        return n

    def _next(self, watched: dict[int, Any]) -> bool:
        """Read one process of the current round (starting the next round if needed);
        False when nothing is pending."""
        while True:
            if self._current is None:
                if not self._queue:
                    return False
                self._start_round(self._queue.popleft(), watched)
            r = self._current
            assert r is not None
            while r.todo:
                pid, start_time = r.todo.popleft()
                if not self._alive((pid, start_time), watched):
                    continue  # exited since the round started
                w = watched[pid]
                got = self.snapshot_process(pid, start_time, r.number, r.reason,
                                            ppid=getattr(w, "ppid", None),
                                            depth=getattr(w, "depth", None))
                if got is None:
                    continue
                if got.error:
                    r.failed += 1
                else:
                    r.read += 1
                if not any(self._alive(k, watched) for k in r.todo):
                    r.todo.clear()
                    self._end_round(r)
                return True
            self._end_round(r)

    @staticmethod
    def _alive(key: Key, watched: dict[int, Any]) -> bool:
        w = watched.get(key[0])
        return w is not None and w.start_time == key[1]

    def _start_round(self, r: _Round, watched: dict[int, Any]) -> None:
        _, t, _ = self._tick
        r.t_start = t
        keys = sorted((w.pid, w.start_time) for w in watched.values()
                      if getattr(w, "role", "target") == "target")
        r.todo.extend(keys)
        r.processes = len(keys)
        self._current = r
        self._last_start = t
        self._event("snapshot_start", f"mapping snapshot {r.number} ({r.reason}): "
                    f"{len(keys)} processes", {"snapshot": r.number, "reason": r.reason,
                                               "processes": len(keys)},
                    t=t, ts=self._tick[2])

    def _end_round(self, r: _Round) -> None:
        _, t, ts = self._tick
        self._current = None
        self.rounds_done += 1
        self._event("snapshot_end", f"mapping snapshot {r.number} ({r.reason}) done: "
                    f"{r.read} read, {r.failed} failed", {
                        "snapshot": r.number, "reason": r.reason, "read": r.read,
                        "failed": r.failed, "seconds": round(t - (r.t_start or t), 3)},
                    t=t, ts=ts)

    # --- one process -----------------------------------------------------------------
    def snapshot_process(self, pid: int, start_time: int, number: int, reason: str,
                         ppid: int | None = None, depth: int | None = None
                         ) -> Snapshotted | None:
        """Read, classify and row one process; None when it is gone."""
        tick, t, ts = self._tick
        base = {"ts": ts, "t": t, "tick": tick, "snapshot": number, "reason": reason,
                "pid": pid, "start_time": start_time}
        facts = {"ppid": ppid, "depth": depth, "cmdline": self._cmdline((pid, start_time))}
        r0 = time.perf_counter()
        try:
            text = self.procfs.read_pid(pid, "smaps")
        except AccessDenied:
            return self._failed({**base, **facts}, pid, start_time, "smaps:access-denied")
        except ZombieProcess:
            return self._failed({**base, **facts}, pid, start_time, "zombie")
        except ProcessError:
            return None  # gone: its process_exit event says so
        r1 = time.perf_counter()
        if self._layout is None:
            self._layout = smaps_layout(text)
        maps = parse_smaps(text, self._layout)
        if not maps:
            return self._failed({**base, **facts}, pid, start_time, "smaps:empty")
        kinds = classify(maps, self._bss_ends(pid, maps))
        rows = self._rows(base, maps, kinds)
        exe = self._exe(pid)
        r2 = time.perf_counter()
        read_us, parse_us = int((r1 - r0) * 1e6), int((r2 - r1) * 1e6)
        self.mapping_rows.extend(rows)
        self.snapshot_rows.append({
            **base, **facts, "exe": exe, "read_us": read_us, "parse_us": parse_us,
            "mappings": len(maps), "rows": len(rows),
            "rss": sum(m.rss for m in maps), "pss": sum(m.pss for m in maps), "error": None,
        })
        return Snapshotted((pid, start_time), len(maps), len(rows), read_us, parse_us)

    def _failed(self, base: dict[str, Any], pid: int, start_time: int, error: str
                ) -> Snapshotted:
        self.snapshot_rows.append({**base, "error": error})
        return Snapshotted((pid, start_time), 0, 0, 0, 0, error)

    def _rows(self, base: dict[str, Any], maps: list[Mapping],
              kinds: list[tuple[str, str | None]]) -> list[dict[str, Any]]:
        kept = [(m, k) for m, k in zip(maps, kinds, strict=True) if m.rss or m.swap]
        small: list[tuple[Mapping, tuple[str, str | None]]] = []
        if len(kept) > self.max_rows:
            kept.sort(key=lambda x: x[0].rss + x[0].swap, reverse=True)
            kept, small = kept[: self.max_rows - 1], kept[self.max_rows - 1 :]
        rows = []
        for m, (kind, file) in kept:
            row = base.copy()
            row.update(zip(_ROW_COLUMNS, (m.start, m.perms, m.offset, m.dev, m.inode, m.path,
                                          kind, file, 1, *_figures(m)), strict=True))
            rows.append(row)
        groups: dict[tuple[str, str | None], list[Any]] = {}
        for m, (kind, file) in small:
            figures = _figures(m)
            g = groups.get((kind, file))
            if g is None:
                groups[(kind, file)] = [1, *figures]
                continue
            g[0] += 1
            for i, v in enumerate(figures, 1):
                g[i] = None if v is None or g[i] is None else g[i] + v
        for (kind, file), (count, *figures) in groups.items():
            row = base.copy()
            row.update(kind=kind, file=file, mappings=count)
            row.update(zip(_ROW_COLUMNS[9:], figures, strict=True))
            rows.append(row)
        return rows

    # --- facts beside smaps --------------------------------------------------------
    def _exe(self, pid: int) -> str | None:
        try:
            return os.readlink(self.procfs.path(pid, "exe"))
        except OSError:
            return None

    def _bss_ends(self, pid: int, maps: list[Mapping]) -> dict[int, int]:
        """For each writable private file mapping followed by an adjacent anonymous one,
        where its file's program headers say the ``.bss`` ends."""
        out: dict[int, int] = {}
        for m, nxt in itertools.pairwise(maps):
            if (nxt.start != m.end or nxt.inode != 0 or nxt.path != ""
                    or m.perms[1:2] != "w" or not m.private or not m.file_backed
                    or m.path.endswith(" (deleted)")):
                continue
            segs = self._segments(pid, m)
            if segs:
                end = bss_end(segs, m.start, m.offset)
                if end is not None:
                    out[m.start] = end
        return out

    def _segments(self, pid: int, m: Mapping) -> list[LoadSegment] | None:
        key = (m.dev, m.inode)
        if key in self._elf:
            return self._elf[key]
        segs = None
        try:
            fd = os.open(self.procfs.path(pid, "root") + m.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                head = os.read(fd, HEAD_BYTES)
                need = phdr_extent(head)
                if need is not None and HEAD_BYTES < need <= 1 << 20:
                    head += os.pread(fd, need - len(head), len(head))
            finally:
                os.close(fd)
            segs = parse_load_segments(head)
        except OSError:
            segs = None
        self._elf[key] = segs
        return segs

    def take(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        m, s = self.mapping_rows, self.snapshot_rows
        self.mapping_rows, self.snapshot_rows = [], []
        return m, s
