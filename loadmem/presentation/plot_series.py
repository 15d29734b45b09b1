"""What the figure draws, taken from the series layer (``loadmem.analysis.series``).

This module only cuts and reshapes series for drawing; it defines no figure of its own.
System used memory, the page cache and Shmem, the per-tick sums over the watched processes,
their groups and the PSS coverage are the series layer's (the same definitions the analysis,
``loadmem ls`` and the run summary use), built in the same pass over the processes table as
the analysis when the plot is drawn with an analysis (``loadmem plot``, ``loadmem report``).

PSS (and USS, shared pages: the same smaps_rollup reads) is drawn only at the ticks where
every watched process present had smaps figures: a sum over a growing subset would climb
while nothing happened (the recorder reads smaps_rollup within a CPU budget, so a process
that appears has no figure for a few ticks).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loadmem.analysis.series import RecordingSeries, build
from loadmem.recording.reader import Recording

#: Stacking order of the RSS panel, bottom to top, and the series layer's group behind each.
GROUPS = ("master", "workers", "other")
_SERIES_GROUP = {"master": "master", "workers": "worker", "other": "process"}


@dataclass
class SystemSeries:
    """System-wide memory from /proc/meminfo, bytes."""

    t: np.ndarray
    used: np.ndarray  # MemTotal - MemAvailable (definitions.used)
    free: np.ndarray  # MemFree
    cache: np.ndarray  # the page cache: Cached - Shmem + Buffers (definitions.file_cache)
    shmem: np.ndarray  # Shmem: tmpfs and shared memory, not reclaimable
    total: float | None  # MemTotal (last sample)


@dataclass
class ProcessSeries:
    """Per-tick sums over the watched processes, bytes."""

    t: np.ndarray
    rss_by_group: dict[str, np.ndarray]  # VmRSS summed per group (master, workers, other)
    rss: np.ndarray  # VmRSS, every tick
    pss: np.ndarray  # smaps_rollup Pss, NaN where not every process present had figures
    uss: np.ndarray  # Private_Clean + Private_Dirty, likewise
    shared: np.ndarray  # Shared_Clean + Shared_Dirty, likewise
    count: np.ndarray  # watched processes present at that tick
    smaps_count: np.ndarray  # of which with smaps figures
    full_from: float | None = None  # first tick where every process had smaps figures


@dataclass
class LoadSeries:
    """The ``Aggregated`` rows of the requests table: one per reporting interval."""

    t: np.ndarray  # end of each interval
    interval: np.ndarray  # its length (s)
    rps: np.ndarray
    failures_per_s: np.ndarray
    p95_ms: np.ndarray
    users: np.ndarray


@dataclass
class PlotData:
    system: SystemSeries | None
    processes: ProcessSeries | None
    load: LoadSeries | None
    phases: list[tuple[str, float, float]] = field(default_factory=list)
    t_start: float = 0.0
    t_end: float = 0.0


def _in_window(t: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    if window is None:
        return np.ones(len(t), bool)
    return (t >= window[0]) & (t <= window[1])


def system_series(series: RecordingSeries,
                  window: tuple[float, float] | None = None) -> SystemSeries | None:
    s = series.system
    if len(s) == 0:
        return None
    keep = _in_window(s.t, window)
    if not keep.any():
        return None
    total = s.get("MemTotal")
    last_total = total[np.isfinite(total)]
    return SystemSeries(
        t=s.t[keep],
        used=s.get("used")[keep],
        free=s.get("MemFree")[keep],
        cache=s.get("file_cache")[keep],
        shmem=s.get("Shmem")[keep],
        total=float(last_total[-1]) if len(last_total) else None,
    )


def process_series(series: RecordingSeries,
                   window: tuple[float, float] | None = None) -> ProcessSeries | None:
    w = series.processes.watched
    t = series.system.t
    present = w.count > 0
    keep = present & _in_window(t, window)
    if not keep.any():
        return None
    full = keep & (w.smaps_count >= w.count)
    by_group = {}
    for name in GROUPS:
        arr = series.processes.rss_by_group.get(_SERIES_GROUP[name])
        if arr is not None and arr[keep].any():
            by_group[name] = arr[keep]

    def smaps(name: str) -> np.ndarray:
        v = w.get(name)
        if v is None:
            return np.full(int(keep.sum()), np.nan)
        return np.where(full, v, np.nan)[keep]

    rss = w.get("rss")
    return ProcessSeries(
        t=t[keep],
        rss_by_group=by_group,
        rss=np.nan_to_num(rss[keep]) if rss is not None else np.zeros(int(keep.sum())),
        pss=smaps("pss"),
        uss=smaps("uss"),
        shared=smaps("shared"),
        count=w.count[keep].astype(np.int64),
        smaps_count=w.smaps_count[keep].astype(np.int64),
        full_from=float(t[full][0]) if full.any() else None,
    )


def _num(table: pa.Table, name: str) -> np.ndarray:
    """A column as float64 with NaN for nulls (absent columns are all NaN)."""
    if name not in table.column_names:
        return np.full(table.num_rows, np.nan)
    col = table.column(name)
    if col.null_count == len(col):
        return np.full(table.num_rows, np.nan)
    return np.asarray(pc.fill_null(pc.cast(col, pa.float64()), np.nan).to_numpy(
        zero_copy_only=False), dtype=np.float64)


def load_series(rec: Recording, window: tuple[float, float] | None = None) -> LoadSeries | None:
    cols = ["t", "name", "interval_s", "requests", "failures", "p95_ms", "users"]
    table = rec.table("requests", cols)
    if table.num_rows == 0:
        return None
    if "name" in table.column_names:  # the total row of each interval, not per endpoint
        names = pc.cast(table.column("name"), pa.string())
        table = table.filter(pc.fill_null(pc.equal(names, "Aggregated"), False))
    t = _num(table, "t")
    keep = _in_window(t, window)
    table = table.filter(pa.array(keep))
    t = t[keep]
    if table.num_rows == 0:
        return None
    interval = _num(table, "interval_s")
    interval = np.where((interval > 0) & ~np.isnan(interval), interval, 1.0)
    return LoadSeries(
        t=t,
        interval=interval,
        rps=_num(table, "requests") / interval,
        failures_per_s=np.nan_to_num(_num(table, "failures")) / interval,
        p95_ms=_num(table, "p95_ms"),
        users=_num(table, "users"),
    )


def plot_data(
    rec: Recording,
    window: tuple[float, float] | None = None,
    series: RecordingSeries | None = None,
) -> PlotData:
    """Everything the figure draws, restricted to ``window`` (``t`` seconds) when given.
    ``series``: the analysis' own (one pass over the processes table for both)."""
    series = series if series is not None else build(rec)
    system = system_series(series, window)
    processes = process_series(series, window)
    load = load_series(rec, window)
    starts = [s.t[0] for s in (system, processes, load) if s is not None and len(s.t)]
    ends = [s.t[-1] for s in (system, processes, load) if s is not None and len(s.t)]
    t0 = window[0] if window else (min(starts) if starts else 0.0)
    t1 = window[1] if window else (max(ends) if ends else 0.0)
    if window and len(series.system):  # a window past the end stops at the last sample
        t1 = min(t1, max(float(series.system.t[-1]), max(ends, default=t0)))
    phases = []
    for name, a, b in rec.phases():
        b = t1 if b is None else b
        if b >= t0 and a <= t1:
            phases.append((name, max(a, t0), min(b, t1)))
    return PlotData(system, processes, load, phases, float(t0), float(t1))
