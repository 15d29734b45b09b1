"""Measure one window: how every series moved, like with like. The detectors read this.

For a window (``Window``) and the recording's series (``loadmem.analysis.series``):

- system series: level at each end, delta, rate, noise (``trend.change``);
- the watched processes, **like with like**: cheap figures (RSS, RssAnon, ...) summed over the
  processes present at both ends, smaps figures (PSS, USS, shared, ...) over those that also
  had smaps figures at both ends (``group``); the sums over everyone present at each end
  (``everyone``: levels only, e.g. sum RSS at the end); the processes that appeared or exited
  inside the window apart (``appeared``, ``exited``);
- the load generator's sums (``loadgen``), never counted as the service;
- the noise of each series from the baseline phase (at least ``MIN_BASELINE_SAMPLES``), else
  from the window itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loadmem.analysis.model import Window
from loadmem.analysis.series import (
    SMAPS_SUMS,
    Lifecycle,
    RecordingSeries,
    Sums,
    index_range,
    process_value,
)
from loadmem.analysis.trend import Change, change, noise_sigma

#: Noise floor: at least this many baseline samples, else the window's own samples.
MIN_BASELINE_SAMPLES = 5

#: System series measured over a window (names understood by ``SystemSeries.get``).
SYSTEM_SERIES = (
    "used", "MemAvailable", "MemFree", "file_cache", "Cached", "Buffers", "Shmem",
    "SUnreclaim", "SReclaimable", "AnonPages", "PageTables", "KernelStack", "swap_used",
    "AnonHugePages", "Committed_AS", "MemTotal",
)  # fmt: skip

#: How a window is named in sentences.
WHERE = {
    "observe": "after load",
    "load": "during load",
    "baseline": "before load",
    "load+observe": "from before load to the end",
    "whole": "over the whole recording",
    "custom": "in the chosen window",
}


def where(w: Window) -> str:
    return WHERE.get(w.name, f"in the {w.name} phase")


@dataclass
class ProcChange:
    """One process over the window: its first and last row inside it, and its first row
    inside it with smaps figures (None if it had none)."""

    key: int
    pid: int
    name: str
    group: str  # master | worker | process
    role: str
    first: dict[str, Any]
    last: dict[str, Any]
    first_smaps: dict[str, Any] | None
    appeared: bool = False  # its first sample is inside the window
    exited: bool = False  # its last sample is inside the window
    same_smaps: bool = False  # present at both ends with smaps figures at both

    @property
    def late(self) -> bool:
        """Present at both ends, but its smaps figures were first read inside the window."""
        return (not self.appeared and not self.exited and not self.same_smaps
                and self.first_smaps is not None)

    def value(self, name: str, point: str) -> float | None:
        row = {"first": self.first, "last": self.last, "first_smaps": self.first_smaps}[point]
        return None if row is None else process_value(row, name)

    def delta(self, name: str) -> float | None:
        """Change of a figure over the process's time in the window; smaps figures from its
        first read in the window."""
        start = self.first_smaps if name in SMAPS_SUMS else self.first
        if start is None:
            return None
        a, b = process_value(start, name), process_value(self.last, name)
        return None if a is None or b is None else b - a

    def share(self, point: str = "first_smaps", anon: bool = True) -> float:
        """Its share of shared pages (Pss_Anon, or PSS, less USS) at a point: what it takes
        from the other sharers when it is forked, and hands back to them when it exits."""
        pss = self.value("pss_anon" if anon else "pss", point)
        uss = self.value("uss", point)
        return max((pss or 0.0) - (uss or 0.0), 0.0) if pss is not None else 0.0

    @property
    def span(self) -> float:
        return max(float(self.last["t"]) - float(self.first["t"]), 0.0)

    @property
    def unshared(self) -> float:
        """Its own PSS growth not explained by new anonymous memory, from its first smaps
        read in the window: pages it stopped sharing (and its sharers' gain from it)."""
        d = self.delta("pss_anon")
        if d is None:
            d = self.delta("pss")
        if d is None:
            return 0.0
        alloc = self.delta("rss_anon")
        return d - max(alloc or 0.0, 0.0)

    @property
    def label(self) -> str:
        return f"{self.name or '?'} {self.pid}"


@dataclass
class Context:
    """Everything the detectors look at for one window, computed once."""

    window: Window
    system: dict[str, Change]  # used, MemAvailable, MemFree, file_cache, Shmem, ...
    group: dict[str, Change]  # watched processes present at both ends (like with like)
    everyone: dict[str, Change]  # every watched process present at each end (levels)
    loadgen: dict[str, Change]
    life: Lifecycle | None
    procs: list[ProcChange]  # watched processes seen in the window (load generator apart)
    watched_count: int  # watched processes at the end
    mem_total: float | None
    available_end: float | None
    sharing: dict[str, float | None] = field(default_factory=dict)  # baseline/after_load/end
    remaining: float | None = None  # sum(Rss - Pss) of the watched processes at the end
    cow_rate: float | None = None  # current unsharing rate (last half of the window)
    cow_time_to_exhaust: float | None = None
    recorder: dict[str, float | None] = field(default_factory=dict)
    has_baseline: bool = False
    has_load: bool = False
    parts: list[Context] = field(default_factory=list)  # the window's phases, each measured

    def d(self, name: str, source: str = "system") -> float | None:
        c = self._changes(source).get(name)
        return None if c is None else c.delta

    def sig(self, name: str, floor: float, k: float, source: str = "system") -> bool:
        c = self._changes(source).get(name)
        return c is not None and c.significant(floor, k)

    def _changes(self, source: str) -> dict[str, Change]:
        return {"system": self.system, "group": self.group, "everyone": self.everyone,
                "loadgen": self.loadgen}[source]

    @property
    def same_count(self) -> int:
        return len(self.life.same) if self.life is not None else self.watched_count

    @property
    def same_smaps_count(self) -> int:
        return len(self.life.same_smaps) if self.life is not None else 0

    @property
    def appeared(self) -> list[ProcChange]:
        """Processes whose first sample is inside the window and that are still there."""
        return [p for p in self.procs if p.appeared and not p.exited]

    @property
    def exited(self) -> list[ProcChange]:
        """Processes present when the window opened that ended inside it."""
        return [p for p in self.procs if p.exited and not p.appeared]

    @property
    def late(self) -> list[ProcChange]:
        """Processes present throughout whose smaps figures were first read inside it."""
        return [p for p in self.procs if p.late]

    def lifecycle_total(self, name: str, which: str) -> float:
        """Sum of a figure over the processes that appeared (``which="appeared"``, at their
        last row) or exited (``"exited"``, at their first row in the window, their first
        smaps read for smaps figures)."""
        if which == "appeared":
            vals = [p.value(name, "last") for p in self.appeared]
        else:
            point = "first_smaps" if name in SMAPS_SUMS else "first"
            vals = [p.value(name, point) for p in self.exited]
        return float(sum(v for v in vals if v is not None))

    def total_delta(self, name: str) -> float | None:
        """Change of a figure summed over every watched process: the change of the ones
        present at both ends (and, for smaps figures, read at both ends), the change of the
        ones first read inside the window since that read, plus what appeared, minus what
        exited. For PSS this is the watched processes' real memory change."""
        d = self.d(name, "group")
        if d is None:
            return None
        late = sum(p.delta(name) or 0.0 for p in self.late)
        return (d + late + self.lifecycle_total(name, "appeared")
                - self.lifecycle_total(name, "exited"))


def _series_changes(t: np.ndarray, series: dict[str, np.ndarray], win: slice,
                    noise_from: dict[str, np.ndarray] | None, base: slice | None,
                    offset: int = 0, k: int | None = None,
                    current: np.ndarray | None = None) -> dict[str, Change]:
    """Changes of ``series`` (holding the system samples from ``offset`` on) over ``win``;
    ``current`` (per system sample) for the levels of the sums of smaps figures, carried
    forward between reads (``trend.levels``)."""
    out: dict[str, Change] = {}
    for name, y in series.items():
        if not np.isfinite(y[max(win.start - offset, 0):win.stop - offset]).any():
            continue
        noise = None
        src = (noise_from or {}).get(name)
        if base is not None and src is not None:
            yb = src[base]
            if np.isfinite(yb).sum() >= MIN_BASELINE_SAMPLES:
                noise = noise_sigma(yb)
        out[name] = change(t, y, win, noise, offset, k,
                           current if name in SMAPS_SUMS else None)
    return out


def _zero_absent(s: Sums) -> dict[str, np.ndarray]:
    """Sums where a tick with no process counts as zero (the load generator before it
    started and after it ended)."""
    return {k: np.where(s.count > 0, np.nan_to_num(v), 0.0) for k, v in s.values.items()}


def measure(series: RecordingSeries, w: Window, baseline: Window | None,
            k: int | None = None) -> Context:
    """The changes of every series over ``w`` (the detectors' input; fills what needs only
    the series; ``analyze`` adds the recording-level figures). ``k``: edge samples of the
    levels (a phase of a window is measured with the window's own)."""
    system = series.system
    t = system.t
    win = index_range(system, w.t_start, w.t_end)
    base = index_range(system, baseline.t_start, baseline.t_end) if baseline else None
    if base is not None and base.stop - base.start < 1:
        base = None
    sys_series = {n: system.get(n) for n in SYSTEM_SERIES}
    procs_ = series.processes
    everyone_series = dict(procs_.watched.values)
    ctx_system = _series_changes(t, sys_series, win, sys_series, base, k=k)
    cur = procs_.current
    everyone = _series_changes(t, everyone_series, win, everyone_series, base, k=k,
                               current=cur)
    loadgen_series = _zero_absent(procs_.loadgen)
    loadgen = _series_changes(t, loadgen_series, win, loadgen_series, base, k=k, current=cur)
    life = procs_.windows.get(w.name)
    group: dict[str, Change] = {}
    if life is not None:
        group = _series_changes(t, life.sums.values, win, everyone_series, base,
                                offset=life.sums.start, k=k, current=cur)
    procs = _proc_changes(life, procs_.groups) if life is not None else []
    i_end = win.stop - 1
    count = procs_.watched.count
    return Context(
        window=w, system=ctx_system, group=group, everyone=everyone, loadgen=loadgen,
        life=life, procs=procs,
        watched_count=int(count[i_end]) if len(count) else 0,
        mem_total=_at(system.get("MemTotal"), i_end),
        available_end=_at(system.get("MemAvailable"), i_end),
        has_baseline=base is not None,
    )


def _at(a: np.ndarray | None, i: int | None) -> float | None:
    if a is None or i is None or i < 0 or i >= len(a):
        return None
    v = float(a[i])
    return v if np.isfinite(v) else None


def _proc_changes(life: Lifecycle, groups: dict[int, str]) -> list[ProcChange]:
    from loadmem.analysis.series import ROLE_LOADGEN

    appeared = {e["key"] for e in life.appeared}
    exited = {e["key"] for e in life.exited}
    same_smaps = set(life.same_smaps.tolist())
    out = []
    for k, a in life.first.items():
        if a.get("role") == ROLE_LOADGEN:
            continue
        out.append(ProcChange(
            key=k, pid=int(a["pid"]), name=a.get("name") or "?",
            group=groups.get(k, "process"), role=a.get("role") or "target",
            first=a, last=life.last.get(k, a), first_smaps=life.first_smaps.get(k),
            appeared=k in appeared, exited=k in exited, same_smaps=k in same_smaps,
        ))
    return out
