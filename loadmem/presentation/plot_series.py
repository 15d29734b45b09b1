"""The time series the figure draws, taken straight from the recording's tables.

This module only reshapes recorded numbers for drawing (per-tick sums over the watched
processes, rates from request counts); it draws no conclusion. Verdicts, findings and their
numbers come from ``loadmem.analysis`` and are never recomputed here.

The processes table is streamed in record batches of only the columns drawn, and each batch
is added into per-tick sums with ``numpy.bincount``: no loop over rows, and memory bounded by
the batch size plus one float per tick and series. The same definitions as the analyzer
(``loadmem/analysis/series.py``): watched = every process but the load generator (role
``loadgen``) and the recorder itself; identity = pid + start time; smaps figures are the
latest read carried forward on each row, and a tick where no process has one is a gap.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from loadmem.recording.reader import Recording

#: Stacking order of the RSS panel, bottom to top.
GROUPS = ("master", "workers", "other")

_PROCESS_COLUMNS = [
    "t", "tick", "pid", "start_time", "role", "rss",
    "pss", "shared_clean", "shared_dirty", "private_clean", "private_dirty",
]  # fmt: skip
_BATCH_ROWS = 1 << 20


@dataclass
class SystemSeries:
    """System-wide memory from /proc/meminfo, bytes. ``cache`` = Cached + Buffers + SReclaimable."""

    t: np.ndarray
    used: np.ndarray  # MemTotal - MemAvailable, as `free` (procps >= 4) shows "used"
    free: np.ndarray  # MemFree
    cache: np.ndarray  # `free`'s buff/cache
    total: float | None  # MemTotal (last sample)


@dataclass
class ProcessSeries:
    """Per-tick sums over the watched (role "target") processes, bytes."""

    t: np.ndarray
    rss_by_group: dict[str, np.ndarray]  # VmRSS summed per group (master, workers, other)
    rss: np.ndarray  # VmRSS, every tick
    pss: np.ndarray  # smaps_rollup Pss (latest read, carried forward)
    uss: np.ndarray  # Private_Clean + Private_Dirty
    shared: np.ndarray  # Shared_Clean + Shared_Dirty
    count: np.ndarray  # watched processes present at that tick


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


def _num(table: pa.Table, name: str) -> np.ndarray:
    """A column as float64 with NaN for nulls (absent columns are all NaN)."""
    if name not in table.column_names:
        return np.full(table.num_rows, np.nan)
    col = table.column(name)
    if col.null_count == len(col):
        return np.full(table.num_rows, np.nan)
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)


def _strings(table: pa.Table, name: str) -> pa.ChunkedArray | None:
    if name not in table.column_names:
        return None
    col = table.column(name)
    if pa.types.is_dictionary(col.type):
        col = col.cast(pa.string())
    return col


def _in_window(t: np.ndarray, window: tuple[float, float] | None) -> np.ndarray | None:
    if window is None:
        return None
    return (t >= window[0]) & (t <= window[1])


def system_series(rec: Recording, window: tuple[float, float] | None = None) -> SystemSeries | None:
    cols = ["t", "MemTotal", "MemAvailable", "MemFree", "Cached", "Buffers", "SReclaimable"]
    table = rec.table("system", cols)
    if table.num_rows == 0:
        return None
    t = _num(table, "t")
    keep = _in_window(t, window)
    c = {name: _num(table, name) for name in cols}
    if keep is not None:
        t = t[keep]
        c = {k: v[keep] for k, v in c.items()}
    if len(t) == 0:
        return None
    total = c["MemTotal"]
    last_total = total[~np.isnan(total)]
    # A missing SReclaimable/Buffers (very old kernels) counts as zero rather than hiding cache.
    cache = c["Cached"] + np.nan_to_num(c["Buffers"]) + np.nan_to_num(c["SReclaimable"])
    return SystemSeries(
        t=t,
        used=total - c["MemAvailable"],
        free=c["MemFree"],
        cache=cache,
        total=float(last_total[-1]) if len(last_total) else None,
    )


def _identity(pid: np.ndarray, start_time: np.ndarray) -> np.ndarray:
    """One int64 per process identity (pid + start time: a reused pid is another process)."""
    st = np.nan_to_num(start_time).astype(np.int64)
    return (st << 22) | (np.nan_to_num(pid).astype(np.int64) & ((1 << 22) - 1))


def group_of(
    rows: Iterable[Mapping[str, Any]],
) -> dict[tuple[int, int], str]:
    """``(pid, start_time) -> group`` from the analyzer's per-process rows, when it gave them."""
    out: dict[tuple[int, int], str] = {}
    for r in rows:
        pid, st, group = r.get("pid"), r.get("start_time"), r.get("group")
        if pid is None or group is None:
            continue
        out[(int(pid), int(st) if st is not None else -1)] = str(group)
    return out


def _batches(rec: Recording, name: str, columns: list[str]) -> Iterator[pa.Table]:
    """Stream a table's files in record batches of only ``columns`` (bounded memory).

    Rows of segments that a merged file already holds (a merge cut short) are skipped, as
    the reader does. Unreadable files are skipped: ``open_recording`` notes them.
    """
    merged_max: float | None = None
    for f in rec.files(name):
        try:
            pf = pq.ParquetFile(f)
            present = [c for c in columns if c in pf.schema_arrow.names]
            for batch in pf.iter_batches(batch_size=_BATCH_ROWS, columns=present):
                tb = pa.Table.from_batches([batch])
                if merged_max is not None and "t" in tb.column_names:
                    tb = tb.filter(pc.greater(tb.column("t"), merged_max))
                if tb.num_rows:
                    yield tb
            if f.name == f"{name}.parquet":
                mt = pq.read_table(f, columns=["t"]).column("t")
                merged_max = float(pc.max(mt).as_py()) if len(mt) else None
        except (OSError, pa.ArrowException):
            continue


def _excluded(tb: pa.Table, recorder_pids: np.ndarray) -> np.ndarray:
    """Rows that are not the service: the load generator and the recorder itself."""
    out = np.zeros(tb.num_rows, dtype=bool)
    role = _strings(tb, "role")
    if role is not None:
        lg = pc.fill_null(pc.equal(role, "loadgen"), False)
        out |= np.asarray(lg.to_numpy(zero_copy_only=False), dtype=bool)
    if len(recorder_pids):
        out |= np.isin(np.nan_to_num(_num(tb, "pid")).astype(np.int64), recorder_pids)
    return out


def _group_table(
    rec: Recording, recorder_pids: np.ndarray, known: Mapping[tuple[int, int], str]
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted identity keys and their group index (into ``GROUPS``).

    The analyzer's grouping wins when it named the process; otherwise the same rule it uses:
    a selected root (depth 0) with children is the master, depth >= 1 a worker, else other.
    """
    keys, pids, depths, parents = [], [], [], []
    for tb in _batches(rec, "processes", ["pid", "start_time", "ppid", "depth", "role"]):
        tb = tb.filter(pa.array(~_excluded(tb, recorder_pids)))
        pid = np.nan_to_num(_num(tb, "pid")).astype(np.int64)
        depth = _num(tb, "depth")
        key = _identity(pid, _num(tb, "start_time"))
        _, first = np.unique(key, return_index=True)
        keys.append(key[first])
        pids.append(pid[first])
        depths.append(depth[first])
        ppid = np.nan_to_num(_num(tb, "ppid"), nan=-1).astype(np.int64)
        parents.append(np.unique(ppid[depth >= 1]))
    if not keys:
        return np.array([], dtype=np.int64), np.array([], dtype=np.int8)
    key, first = np.unique(np.concatenate(keys), return_index=True)
    pid = np.concatenate(pids)[first]
    depth = np.concatenate(depths)[first]
    group = np.full(len(key), 2, dtype=np.int8)
    group[(depth == 0) & np.isin(pid, np.concatenate(parents))] = 0
    group[depth >= 1] = 1
    names = {"master": 0, "worker": 1, "workers": 1}
    for i, (k, p) in enumerate(zip(key.tolist(), pid.tolist(), strict=True)):
        g = known.get((p, k >> 22)) or known.get((p, -1))
        if g is not None:
            group[i] = names.get(g, 2)
    return key, group


class _TickSums:
    """Per-tick sums that grow with the largest tick seen (``numpy.bincount`` per batch)."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.size = 0

    def add(self, name: str, tick: np.ndarray, weights: np.ndarray | None = None) -> None:
        need = int(tick.max()) + 1 if len(tick) else 0
        if need > self.size:
            self.arrays = {k: np.pad(a, (0, need - self.size)) for k, a in self.arrays.items()}
            self.size = need
        arr = self.arrays.setdefault(name, np.zeros(self.size))
        if len(tick):
            arr += np.bincount(tick, weights=weights, minlength=self.size)

    def get(self, name: str) -> np.ndarray:
        a = self.arrays.get(name, np.zeros(0))
        return np.pad(a, (0, self.size - len(a)))


def process_series(
    rec: Recording,
    window: tuple[float, float] | None = None,
    groups: Mapping[tuple[int, int], str] | None = None,
) -> ProcessSeries | None:
    """Per-tick sums over the watched processes, streamed from the processes table."""
    rec_pids = rec.table("recorder", ["pid"]).column("pid").drop_null()
    recorder_pids = np.unique(np.asarray(rec_pids.to_numpy(), dtype=np.int64))
    keys, key_group = _group_table(rec, recorder_pids, groups or {})
    if len(keys) == 0:
        return None
    sums = _TickSums()
    t_of_tick = np.zeros(0)
    for tb in _batches(rec, "processes", _PROCESS_COLUMNS):
        keep = ~_excluded(tb, recorder_pids)
        t = _num(tb, "t")
        tick = _num(tb, "tick")
        keep &= ~np.isnan(tick) & (tick >= 0)
        if window is not None:
            keep &= (t >= window[0]) & (t <= window[1])
        if not keep.any():
            continue
        tick = tick[keep].astype(np.int64)
        t = t[keep]
        key = _identity(_num(tb, "pid")[keep], _num(tb, "start_time")[keep])
        group = key_group[np.clip(np.searchsorted(keys, key), 0, len(keys) - 1)]
        sums.add("count", tick)
        if len(t_of_tick) < sums.size:
            t_of_tick = np.pad(t_of_tick, (0, sums.size - len(t_of_tick)), constant_values=np.nan)
        t_of_tick[tick] = t  # every row of a tick carries the tick's time
        rss = _num(tb, "rss")[keep]
        ok = ~np.isnan(rss)
        sums.add("rss", tick, np.where(ok, rss, 0.0))
        sums.add("rss_n", tick, ok)
        for i in range(len(GROUPS)):
            sums.add(f"rss_{i}", tick, np.where(ok & (group == i), rss, 0.0))
        shared = _num(tb, "shared_clean")[keep] + _num(tb, "shared_dirty")[keep]
        private = _num(tb, "private_clean")[keep] + _num(tb, "private_dirty")[keep]
        for name, v in (("pss", _num(tb, "pss")[keep]), ("uss", private), ("shared", shared)):
            ok = ~np.isnan(v)
            sums.add(name, tick, np.where(ok, v, 0.0))
            sums.add(f"{name}_n", tick, ok)
    count = sums.get("count")
    present = np.nonzero(count > 0)[0]
    if len(present) == 0:
        return None
    t_of_tick = np.pad(t_of_tick, (0, max(0, sums.size - len(t_of_tick))))

    def series(name: str) -> np.ndarray:
        # A tick where no process had the figure (never read yet) is a gap, not a zero.
        n = sums.get(f"{name}_n")[present]
        return np.where(n > 0, sums.get(name)[present], np.nan)

    order = np.argsort(t_of_tick[present], kind="stable")
    by_group = {
        name: sums.get(f"rss_{i}")[present][order]
        for i, name in enumerate(GROUPS)
        if sums.get(f"rss_{i}")[present].any()
    }
    return ProcessSeries(
        t=t_of_tick[present][order],
        rss_by_group=by_group,
        rss=series("rss")[order],
        pss=series("pss")[order],
        uss=series("uss")[order],
        shared=series("shared")[order],
        count=count[present][order].astype(np.int64),
    )


def load_series(rec: Recording, window: tuple[float, float] | None = None) -> LoadSeries | None:
    cols = ["t", "name", "interval_s", "requests", "failures", "p95_ms", "users"]
    table = rec.table("requests", cols)
    if table.num_rows == 0:
        return None
    name = _strings(table, "name")
    if name is not None:
        table = table.filter(pc.fill_null(pc.equal(name, "Aggregated"), False))
    t = _num(table, "t")
    keep = _in_window(t, window)
    if keep is not None:
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
    groups: Mapping[tuple[int, int], str] | None = None,
) -> PlotData:
    """Everything the figure draws, restricted to ``window`` (``t`` seconds) when given."""
    system = system_series(rec, window)
    processes = process_series(rec, window, groups)
    load = load_series(rec, window)
    starts = [s.t[0] for s in (system, processes, load) if s is not None and len(s.t)]
    ends = [s.t[-1] for s in (system, processes, load) if s is not None and len(s.t)]
    t0 = window[0] if window else (min(starts) if starts else 0.0)
    t1 = window[1] if window else (max(ends) if ends else 0.0)
    if window and rec.duration > 0:  # a window past the end stops at the last sample
        t1 = min(t1, max(rec.duration, max(ends, default=0.0)))
    phases = []
    for name, a, b in rec.phases():
        b = t1 if b is None else b
        if b >= t0 and a <= t1:
            phases.append((name, max(a, t0), min(b, t1)))
    return PlotData(system, processes, load, phases, float(t0), float(t1))
