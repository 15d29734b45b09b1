"""The time series the figure draws, taken straight from the recording's tables.

This module only reshapes recorded numbers for drawing (per-tick sums over the watched
processes, rates from request counts); it draws no conclusion. Verdicts, findings and their
numbers come from ``loadmem.analysis`` and are never recomputed here.

The processes table is streamed one Parquet row group at a time, only the columns drawn, and
each row group is added into per-tick sums with ``numpy.bincount``: no loop over rows, and
memory bounded by a row group plus one float per tick and series.

The same definitions as the analyzer (``loadmem/analysis/series.py``): watched = every
process but the load generator (role ``loadgen``) and the recorder itself; identity = pid +
start time; smaps figures are the latest read carried forward on each row, and a tick where
no process has one yet is a gap.
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
    "t", "tick", "pid", "start_time", "ppid", "depth", "role", "rss",
    "pss", "shared_clean", "shared_dirty", "private_clean", "private_dirty",
]  # fmt: skip


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


def _int(table: pa.Table, name: str, fill: int = 0) -> np.ndarray:
    """An integer column as int64 (nulls and absent columns become ``fill``), no float trip."""
    if name not in table.column_names:
        return np.full(table.num_rows, fill, dtype=np.int64)
    col = table.column(name)
    if col.null_count:
        col = pc.fill_null(col, fill)
    return np.asarray(col.to_numpy(), dtype=np.int64)


def _equals(table: pa.Table, name: str, value: str) -> np.ndarray:
    """``column == value`` as a bool array (null is False); dictionary columns compare codes."""
    if name not in table.column_names:
        return np.zeros(table.num_rows, dtype=bool)
    parts = []
    for chunk in table.column(name).chunks:
        if pa.types.is_dictionary(chunk.type):
            codes = [i for i, v in enumerate(chunk.dictionary.to_pylist()) if v == value]
            idx = pc.fill_null(chunk.indices, -1).to_numpy()
            parts.append(np.isin(idx, codes) if codes else np.zeros(len(chunk), dtype=bool))
        else:
            eq = pc.fill_null(pc.equal(chunk, value), False)
            parts.append(np.asarray(eq.to_numpy(zero_copy_only=False), dtype=bool))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)


def _identity(pid: np.ndarray, start_time: np.ndarray) -> np.ndarray:
    """One int64 per process identity (pid + start time: a reused pid is another process)."""
    return (start_time.astype(np.int64) << 22) | (pid.astype(np.int64) & ((1 << 22) - 1))


def group_of(
    rows: Iterable[Mapping[str, Any]],
) -> dict[tuple[int, int], str]:
    """``(pid, start_time) -> group`` from the analyzer's per-process rows, when it gave them."""
    out: dict[tuple[int, int], str] = {}
    for r in rows:
        pid, st, group = r.get("pid"), r.get("start_time"), r.get("group")
        if pid is None or group is None:
            continue
        out[(int(pid), int(st) if st is not None else 0)] = str(group)
    return out


def _batches(rec: Recording, name: str, columns: list[str]) -> Iterator[pa.Table]:
    """Stream a table's files one row group at a time, only ``columns`` (bounded memory).

    Rows of segments that a merged file already holds (a merge cut short) are skipped by the
    reader's one rule (``Recording.without_merged_rows``). Unreadable files are skipped:
    ``open_recording`` notes them.
    """
    for f in rec.files(name):
        try:
            pf = pq.ParquetFile(f)
            present = [c for c in columns if c in pf.schema_arrow.names]
            if "t" not in present and "t" in pf.schema_arrow.names:
                present.append("t")  # the de-duplication needs it
            # Whole row groups (the writer keeps them to about a million rows): decoding a
            # row group reads its columns in parallel, three times faster than iter_batches.
            for rg in range(pf.metadata.num_row_groups):
                tb = rec.without_merged_rows(name, pf.read_row_group(rg, columns=present), f)
                if tb.num_rows:
                    yield tb
        except (OSError, pa.ArrowException):
            continue


_GROUP_CODES = {"master": 0, "worker": 1, "workers": 1}


def _known_groups(known: Mapping[tuple[int, int], str]) -> tuple[np.ndarray, np.ndarray]:
    """The analyzer's grouping as sorted identity keys and group codes, for searchsorted."""
    if not known:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int8)
    keys = _identity(np.array([k[0] for k in known]), np.array([k[1] for k in known]))
    codes = np.array([_GROUP_CODES.get(g, 2) for g in known.values()], dtype=np.int8)
    order = np.argsort(keys)
    return keys[order], codes[order]


def _row_groups(tb: pa.Table, key: np.ndarray, known: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Group code (index into ``GROUPS``) of each row.

    The analyzer's grouping wins for every process it listed. A process it did not list
    gets the analyzer's rule: depth >= 1 is a worker, a selected root (depth 0) with a child
    in view is the master, anything else is "other".
    """
    depth = _int(tb, "depth", -1)
    group = np.full(len(key), 2, dtype=np.int8)
    group[depth >= 1] = 1
    roots = depth == 0
    if roots.any():
        parents = np.unique(_int(tb, "ppid", -1)[depth >= 1])
        group[roots & np.isin(_int(tb, "pid"), parents)] = 0
    keys, codes = known
    if len(keys):
        pos = np.clip(np.searchsorted(keys, key), 0, len(keys) - 1)
        hit = keys[pos] == key
        group[hit] = codes[pos[hit]]
    return group


class _TickSums:
    """Per-tick sums that grow with the largest tick seen (``numpy.bincount`` per batch)."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.size = 0

    def grow(self, tick: np.ndarray) -> None:
        need = int(tick.max()) + 1 if len(tick) else 0
        if need > self.size:
            self.arrays = {k: np.pad(a, (0, need - self.size)) for k, a in self.arrays.items()}
            self.size = need

    def add(self, name: str, tick: np.ndarray, weights: np.ndarray | None = None) -> None:
        arr = self.arrays.setdefault(name, np.zeros(self.size))
        arr += np.bincount(tick, weights=weights, minlength=self.size)

    def get(self, name: str) -> np.ndarray:
        return self.arrays.get(name, np.zeros(self.size))


def process_series(
    rec: Recording,
    window: tuple[float, float] | None = None,
    groups: Mapping[tuple[int, int], str] | None = None,
) -> ProcessSeries | None:
    """Per-tick sums over the watched processes, streamed from the processes table."""
    rec_pids = rec.table("recorder", ["pid"]).column("pid").drop_null()
    recorder_pids = np.unique(np.asarray(rec_pids.to_numpy(), dtype=np.int64))
    known = _known_groups(groups or {})
    # With the analyzer's grouping, the tree columns are not needed to group processes.
    columns = [c for c in _PROCESS_COLUMNS if not (len(known[0]) and c in ("ppid", "depth"))]
    sums = _TickSums()
    t_of_tick = np.zeros(0)
    for tb in _batches(rec, "processes", columns):
        tick = _int(tb, "tick", -1)
        pid = _int(tb, "pid")
        # Not the service: the load generator (Locust) and the recorder itself.
        keep = (tick >= 0) & ~_equals(tb, "role", "loadgen")
        if len(recorder_pids):
            keep &= ~np.isin(pid, recorder_pids)
        t = tb.column("t").to_numpy()
        if window is not None:
            keep &= (t >= window[0]) & (t <= window[1])
        if not keep.any():
            continue
        if not keep.all():
            tb = tb.filter(pa.array(keep))
            tick, pid, t = tick[keep], pid[keep], t[keep]
        sums.grow(tick)
        if len(t_of_tick) < sums.size:
            t_of_tick = np.pad(t_of_tick, (0, sums.size - len(t_of_tick)))
        t_of_tick[tick] = t  # every row of a tick carries the tick's time
        group = _row_groups(tb, _identity(pid, _int(tb, "start_time")), known)
        rss = _int(tb, "rss").astype(np.float64)
        sums.add("count", tick)
        for i in range(len(GROUPS)):
            sums.add(f"rss_{i}", tick, np.where(group == i, rss, 0.0))
        # smaps figures come from one read: a null PSS means "never read yet" for them all
        read = tb.column("pss").is_valid().to_numpy(zero_copy_only=False)
        sums.add("smaps_n", tick, read)
        sums.add("pss", tick, _int(tb, "pss").astype(np.float64))
        sums.add("uss", tick, (_int(tb, "private_clean") + _int(tb, "private_dirty")) * 1.0)
        sums.add("shared", tick, (_int(tb, "shared_clean") + _int(tb, "shared_dirty")) * 1.0)
    count = sums.get("count")
    present = np.nonzero(count > 0)[0]
    if len(present) == 0:
        return None
    order = present[np.argsort(t_of_tick[present], kind="stable")]
    # A tick where no process had smaps figures yet is a gap, not a zero.
    read = sums.get("smaps_n")[order] > 0

    def smaps(name: str) -> np.ndarray:
        return np.where(read, sums.get(name)[order], np.nan)

    by_group = {
        name: sums.get(f"rss_{i}")[order]
        for i, name in enumerate(GROUPS)
        if sums.get(f"rss_{i}")[order].any()
    }
    return ProcessSeries(
        t=t_of_tick[order],
        rss_by_group=by_group,
        rss=sum(by_group.values(), np.zeros(len(order))),
        pss=smaps("pss"),
        uss=smaps("uss"),
        shared=smaps("shared"),
        count=count[order].astype(np.int64),
    )


def load_series(rec: Recording, window: tuple[float, float] | None = None) -> LoadSeries | None:
    cols = ["t", "name", "interval_s", "requests", "failures", "p95_ms", "users"]
    table = rec.table("requests", cols)
    if table.num_rows == 0:
        return None
    if "name" in table.column_names:  # the total row of each interval, not per endpoint
        table = table.filter(pa.array(_equals(table, "name", "Aggregated")))
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
