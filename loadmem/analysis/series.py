"""Time series built from a recording's tables, vectorised, in bounded memory.

The processes table is the large one (24 h at 1 Hz with 100 processes is 8.6 M rows), so it
is streamed in record batches of a few columns: each batch adds its rows into per-tick sums
with ``numpy.bincount`` and contributes a few small tables (the first and last row of each
process, the rows at a handful of checkpoint ticks). Nothing is looped over per row.

Definitions:

- **watched** processes are those with role ``target`` (or no role); a userland proxy in
  front of the server (role ``proxy``) is left out; the load generator
  (role ``loadgen``) and the recorder itself (its pid from the ``recorder`` table) are
  excluded from the sums and reported apart.
- A process is identified by ``(pid, start_time)``: a reused pid is another process.
- PSS and the other smaps_rollup figures are read at a slower cadence than RSS; the recorder
  writes the latest known read on every row (``pss_fresh`` false, ``pss_read_t`` when it was
  read). Summing those carried-forward values per tick is the per-process carry-forward the
  analysis needs; rows whose figures were never read are null and left out of the PSS sums
  (``pss_count`` says how many processes a tick's PSS sum covers). The sharing ratio is
  computed as sum Pss / sum smaps Rss, both from the same reads, so it is consistent.
- System used memory is ``MemTotal - MemAvailable`` (procps-ng >= 4.0.1 ``free``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from loadmem.recording.reader import Recording

#: meminfo columns the analysis uses (missing ones become NaN).
SYSTEM_COLUMNS = (
    "MemTotal",
    "MemFree",
    "MemAvailable",
    "Buffers",
    "Cached",
    "Shmem",
    "SReclaimable",
    "SUnreclaim",
    "AnonPages",
    "Mapped",
    "PageTables",
    "KernelStack",
    "SwapTotal",
    "SwapFree",
    "AnonHugePages",
    "Committed_AS",
)

#: Per-tick sums over the watched group: series name -> columns added together.
GROUP_SUMS: dict[str, tuple[str, ...]] = {
    "rss": ("rss",),
    "smaps_rss": ("smaps_rss",),
    "pss": ("pss",),
    "pss_anon": ("pss_anon",),
    "pss_shmem": ("pss_shmem",),
    "uss": ("private_clean", "private_dirty"),
    "private_dirty": ("private_dirty",),
    "shared": ("shared_clean", "shared_dirty"),
    "shared_dirty": ("shared_dirty",),
    "swap": ("swap",),
    "anon_huge_pages": ("anon_huge_pages",),
}
#: Series summed for the load generator, reported apart.
LOADGEN_SUMS = ("rss", "pss", "pss_anon")

#: Per-process columns kept in the small per-process tables.
PROCESS_VALUES = (
    "rss",
    "smaps_rss",
    "pss",
    "pss_anon",
    "private_clean",
    "private_dirty",
    "shared_clean",
    "shared_dirty",
    "swap",
)
_ID_COLUMNS = ("t", "tick", "pid", "start_time", "ppid", "name", "role", "depth")
_BATCH_ROWS = 1 << 18


def identity(pid: np.ndarray, start_time: np.ndarray) -> np.ndarray:
    """One int64 per process identity: start_time (clock ticks) above a 22-bit pid."""
    return (start_time.astype(np.int64) << 22) | (pid.astype(np.int64) & ((1 << 22) - 1))


def _np(col: pa.Array | pa.ChunkedArray, fill: float = 0.0) -> np.ndarray:
    if col.null_count == 0 and (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        return col.to_numpy().astype(np.float64, copy=False)
    if not pa.types.is_floating(col.type):
        col = pc.cast(col, pa.float64())
    return np.asarray(pc.fill_null(col, fill).to_numpy(zero_copy_only=False), dtype=np.float64)


@dataclass
class SystemSeries:
    """One sample per recorder tick: ``t`` (s), ``tick`` and meminfo columns (bytes)."""

    t: np.ndarray
    tick: np.ndarray
    columns: dict[str, np.ndarray]

    def get(self, name: str) -> np.ndarray:
        if name in self.columns:
            return self.columns[name]
        if name == "used":
            return self.get("MemTotal") - self.get("MemAvailable")
        if name == "swap_used":
            return self.get("SwapTotal") - self.get("SwapFree")
        if name == "file_cache":  # page cache proper: Cached includes tmpfs/shmem
            return self.get("Cached") - self.get("Shmem") + np.nan_to_num(self.get("Buffers"))
        return np.full(len(self.t), np.nan)


def read_system(rec: Recording) -> SystemSeries:
    table = rec.table("system")
    if table.num_rows == 0 or "t" not in table.column_names:
        return SystemSeries(np.array([]), np.array([], dtype=np.int64), {})
    t = table.column("t").to_numpy().astype(np.float64)
    if "tick" in table.column_names:
        tick = _np(table.column("tick"), -1).astype(np.int64)
    else:
        tick = np.arange(len(t), dtype=np.int64)
    cols = {
        c: _np(table.column(c), np.nan) for c in SYSTEM_COLUMNS if c in table.column_names
    }
    return SystemSeries(t=t, tick=tick, columns=cols)


@dataclass
class ProcessData:
    """What the analysis keeps of the processes table."""

    sums: dict[str, np.ndarray]  # watched group, per system tick (NaN: no watched rows)
    count: np.ndarray  # watched processes per tick
    pss_count: np.ndarray  # of which with a PSS figure
    loadgen: dict[str, np.ndarray]  # load generator sums per tick
    loadgen_count: np.ndarray
    first: pa.Table  # first row of each process identity (whole recording)
    last: pa.Table  # last row of each process identity
    win_first: pa.Table  # first row of each identity inside the window
    win_last: pa.Table  # last row inside the window
    snapshots: pa.Table  # rows at the checkpoint ticks
    recorder_pids: set[int] = field(default_factory=set)
    rows: int = 0
    notes: list[str] = field(default_factory=list)


class _Acc:
    """Per-tick sums over the recording's ticks (grown if a row has a later tick)."""

    def __init__(self, size: int = 0) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.size = size

    def add_at(self, name: str, ticks: np.ndarray, sums: np.ndarray) -> None:
        """Add ``sums`` at the distinct ``ticks``."""
        hi = int(ticks.max()) + 1 if len(ticks) else 0
        if hi > self.size:
            for k, a in self.arrays.items():
                self.arrays[k] = np.pad(a, (0, hi - self.size))
            self.size = hi
        arr = self.arrays.setdefault(name, np.zeros(self.size))
        arr[ticks] += sums

    def at(self, name: str, ticks: np.ndarray) -> np.ndarray:
        a = self.arrays.get(name)
        if a is None:
            return np.zeros(len(ticks))
        out = np.zeros(len(ticks))
        ok = (ticks >= 0) & (ticks < len(a))
        out[ok] = a[ticks[ok]]
        return out


def _ints(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """An integer column as int64 (nulls as 0), zero-copy when it has no nulls."""
    if col.null_count:
        col = pc.fill_null(col, 0)
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.int64)


def _tick_sums(acc: _Acc, tb: pa.Table, tick: np.ndarray, series: dict[str, tuple[str, ...]],
               count_valid: str | None = None) -> None:
    """Add per-tick sums of ``series`` over the rows of ``tb`` into ``acc``.

    Rows come in time order, so equal ticks are contiguous: ``np.add.reduceat`` over the runs
    sums integers exactly without a scatter (rows out of order are sorted first).
    """
    if len(tick) == 0:
        return
    if np.any(tick[1:] < tick[:-1]):
        order = np.argsort(tick, kind="stable")
        tick, tb = tick[order], tb.take(pa.array(order))
    starts = np.flatnonzero(np.r_[True, tick[1:] != tick[:-1]])
    uticks = tick[starts]
    acc.add_at("count", uticks, np.diff(np.r_[starts, len(tick)]))
    for name, cols in series.items():
        present = [c for c in cols if c in tb.column_names]
        if not present:
            continue
        v = _ints(tb.column(present[0]))
        for c in present[1:]:
            v = v + _ints(tb.column(c))
        acc.add_at(name, uticks, np.add.reduceat(v, starts))
    if count_valid and count_valid in tb.column_names:
        col = tb.column(count_valid)
        if col.null_count == 0:
            acc.add_at(f"{count_valid}_count", uticks, np.diff(np.r_[starts, len(tick)]))
        else:
            valid = np.asarray(col.is_valid().to_numpy(zero_copy_only=False), dtype=np.int64)
            acc.add_at(f"{count_valid}_count", uticks, np.add.reduceat(valid, starts))


def _pick(table: pa.Table, which: str) -> pa.Table:
    """First (``min``) or last (``max``) row per identity of a table sorted by ``t``."""
    if table.num_rows == 0:
        return table
    idx = pa.array(np.arange(table.num_rows))
    g = pa.table({"key": table.column("key"), "row": idx}).group_by("key")
    rows = g.aggregate([("row", which)]).column(f"row_{which}")
    return table.take(rows).sort_by("t")


def _small(tb: pa.Table, rows: np.ndarray, key: np.ndarray, t: np.ndarray) -> pa.Table:
    """The given rows of a batch with their identity key and time, dictionary columns as
    plain strings."""
    out = tb.take(pa.array(rows, type=pa.int64()))
    for name in ("name", "role"):
        if name in out.column_names:
            i = out.column_names.index(name)
            out = out.set_column(i, name, pc.cast(out.column(name), pa.string()))
    return out.append_column("key", pa.array(key[rows])).append_column("t", pa.array(t[rows]))


def _conform(tables: list[pa.Table], columns: list[str]) -> pa.Table:
    """Concatenate small tables that may lack some columns (older files, absent fields)."""

    def typ(c: str) -> pa.DataType:
        return pa.string() if c in ("name", "role") else pa.float64() if c == "t" else pa.int64()

    fixed = []
    for t in tables:
        for c in columns:
            if c not in t.column_names:
                t = t.append_column(c, pa.nulls(t.num_rows, typ(c)))
        fixed.append(t.select(columns))
    if not fixed:
        return pa.table({c: pa.array([], typ(c)) for c in columns})
    return pa.concat_tables(fixed, promote_options="permissive")


class _Collector:
    """The small per-process tables, gathered batch by batch."""

    def __init__(self, window_ticks: tuple[int, int], checkpoint_ticks: list[int]):
        self.lo, self.hi = window_ticks
        self.cps = sorted(set(checkpoint_ticks))
        self.parts: dict[str, list[pa.Table]] = {
            "first": [], "last": [], "win_first": [], "win_last": [], "snap": []
        }

    def add(self, tb: pa.Table, tick: np.ndarray, key: np.ndarray, t: np.ndarray) -> None:
        n = tb.num_rows
        rowno = np.arange(n)
        inwin = (tick >= self.lo) & (tick <= self.hi)
        agg = (
            pa.table({"key": pa.array(key), "row": pa.array(rowno),
                      "wrow": pa.array(rowno, mask=~inwin)})
            .group_by("key")
            .aggregate([("row", "min"), ("row", "max"), ("wrow", "min"), ("wrow", "max")])
        )
        for col, dest in (("row_min", "first"), ("row_max", "last"),
                          ("wrow_min", "win_first"), ("wrow_max", "win_last")):
            r = agg.column(col).drop_null().to_numpy()
            if len(r):
                self.parts[dest].append(_small(tb, r, key, t))
        if self.cps and np.all(tick[1:] >= tick[:-1]):
            sel = [np.arange(*np.searchsorted(tick, [c, c + 1])) for c in self.cps]
            idx = np.concatenate(sel) if sel else np.array([], np.int64)
        else:
            idx = np.flatnonzero(np.isin(tick, self.cps))
        if len(idx):
            self.parts["snap"].append(_small(tb, idx, key, t))

    def table(self, name: str, columns: list[str]) -> pa.Table:
        t = _conform(self.parts[name], columns)
        if name == "snap" or t.num_rows == 0:
            return t
        return _pick(t.sort_by("t"), "min" if name.endswith("first") else "max")


def read_processes(
    rec: Recording,
    system: SystemSeries,
    window_ticks: tuple[int, int],
    checkpoint_ticks: list[int],
) -> ProcessData:
    """Stream the processes table into per-tick sums and small per-process tables."""
    rec_table = rec.table("recorder", ["pid"])
    recorder_pids = {int(p) for p in pc.unique(rec_table.column("pid")).to_pylist() if p}
    if isinstance(rec.meta.get("recorder_pid"), int):
        recorder_pids.add(rec.meta["recorder_pid"])
    # ``t`` is not read: a row's time is its tick's time in the system table (same tick).
    id_cols = [c for c in _ID_COLUMNS if c != "t"]
    wanted = list(dict.fromkeys([*id_cols, *(c for cs in GROUP_SUMS.values() for c in cs)]))
    size = int(system.tick.max()) + 1
    t_of_tick = np.full(size, np.nan)
    t_of_tick[system.tick[system.tick >= 0]] = system.t[system.tick >= 0]
    group, loadgen = _Acc(size), _Acc(size)
    small = _Collector(window_ticks, checkpoint_ticks)
    notes: list[str] = []
    merged_max_tick: int | None = None
    rows = excluded_recorder = 0
    rec_pids = np.array(sorted(recorder_pids), dtype=np.int64)
    for f in rec.files("processes"):
        try:
            pf = pq.ParquetFile(f)
            names = set(pf.schema_arrow.names)
            if "tick" not in names or "pid" not in names:
                notes.append(f"{f.relative_to(rec.path)} lacks tick/pid columns: skipped")
                continue
            for batch in pf.iter_batches(batch_size=_BATCH_ROWS,
                                         columns=[c for c in wanted if c in names]):
                tb = pa.Table.from_batches([batch])
                tick = _ints(tb.column("tick"))
                keep = tick >= 0
                if merged_max_tick is not None:  # segments overlapping the merged file
                    keep &= tick > merged_max_tick
                pid = _ints(tb.column("pid"))
                is_rec = np.isin(pid, rec_pids) if len(rec_pids) else np.zeros(len(pid), bool)
                excluded_recorder += int(is_rec.sum())
                keep &= ~is_rec
                if "role" in tb.column_names:  # a proxy in front of the server is not it
                    keep &= ~np.asarray(pc.fill_null(pc.equal(pc.cast(
                        tb.column("role"), pa.string()), "proxy"), False)
                        .to_numpy(zero_copy_only=False), dtype=bool)
                if not keep.all():
                    tb, tick, pid = tb.filter(pa.array(keep)), tick[keep], pid[keep]
                if tb.num_rows == 0:
                    continue
                rows += tb.num_rows
                st = (_ints(tb.column("start_time")) if "start_time" in tb.column_names
                      else np.zeros(len(pid), np.int64))
                key = identity(pid, st)
                t = t_of_tick[np.minimum(tick, size - 1)]
                t[tick >= size] = np.nan
                is_lg = np.zeros(len(pid), bool)
                if "role" in tb.column_names:
                    role = pc.cast(tb.column("role"), pa.string())
                    is_lg = np.asarray(pc.fill_null(pc.equal(role, "loadgen"), False)
                                       .to_numpy(zero_copy_only=False), dtype=bool)
                if is_lg.any():
                    m = pa.array(~is_lg)
                    _tick_sums(group, tb.filter(m), tick[~is_lg], GROUP_SUMS, "pss")
                    lg = {k: GROUP_SUMS[k] for k in LOADGEN_SUMS}
                    _tick_sums(loadgen, tb.filter(pa.array(is_lg)), tick[is_lg], lg)
                else:
                    _tick_sums(group, tb, tick, GROUP_SUMS, "pss")
                small.add(tb, tick, key, t)
            if f.name == "processes.parquet":
                mt = pq.read_table(f, columns=["tick"]).column("tick")
                merged_max_tick = int(pc.max(mt).as_py()) if len(mt) else None
        except (OSError, pa.ArrowException) as e:
            notes.append(f"skipped unreadable file {f.relative_to(rec.path)}: {e}")
    cols = list(dict.fromkeys(["key", *_ID_COLUMNS, *PROCESS_VALUES]))
    ticks = system.tick.astype(np.int64)
    count = group.at("count", ticks)
    sums = {}
    for name in GROUP_SUMS:
        if name in group.arrays:
            s = group.at(name, ticks)
            s[count == 0] = np.nan
            sums[name] = s
    if excluded_recorder:
        notes.append(
            f"the recorder's own process (pid {', '.join(map(str, sorted(recorder_pids)))}) "
            "was among the selected processes: excluded from the watched figures"
        )
    return ProcessData(
        sums=sums,
        count=count,
        pss_count=group.at("pss_count", ticks),
        loadgen={n: loadgen.at(n, ticks) for n in LOADGEN_SUMS if n in loadgen.arrays},
        loadgen_count=loadgen.at("count", ticks),
        first=small.table("first", cols),
        last=small.table("last", cols),
        win_first=small.table("win_first", cols),
        win_last=small.table("win_last", cols),
        snapshots=small.table("snap", cols),
        recorder_pids=recorder_pids,
        rows=rows,
        notes=notes,
    )


def tick_at(system: SystemSeries, t: float) -> int:
    """Recorder tick of the last system sample at or before ``t`` (the first one if none)."""
    i = int(np.searchsorted(system.t, t, side="right")) - 1
    i = min(max(i, 0), len(system.t) - 1)
    return int(system.tick[i])


def index_range(system: SystemSeries, t0: float, t1: float) -> slice:
    """Slice of system samples from the last one at or before ``t0`` (the state when the
    window opens) to the last one at or before ``t1``."""
    a = max(int(np.searchsorted(system.t, t0, side="right")) - 1, 0)
    b = int(np.searchsorted(system.t, t1, side="right"))
    return slice(a, b)

