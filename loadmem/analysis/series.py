"""Time series built from a recording's tables, vectorised, in bounded memory.

The processes table is the large one (24 h at 1 Hz with 100 processes is 8.6 M rows), so it
is streamed in record batches of a few columns: each batch adds its rows into per-tick sums
with ``numpy.bincount`` and contributes a few small tables (the first and last row of each
process, the rows at a handful of checkpoint ticks). Nothing is looped over per row.

Definitions:

- **watched** processes are those with role ``target`` (or no role); the load generator
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
_BATCH_ROWS = 1 << 20


def identity(pid: np.ndarray, start_time: np.ndarray) -> np.ndarray:
    """One int64 per process identity: start_time (clock ticks) above a 22-bit pid."""
    return (start_time.astype(np.int64) << 22) | (pid.astype(np.int64) & ((1 << 22) - 1))


def _np(col: pa.Array | pa.ChunkedArray, fill: float = 0.0) -> np.ndarray:
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
    """Per-tick sums that grow with the largest tick seen."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.size = 0

    def add(self, name: str, tick: np.ndarray, weights: np.ndarray | None) -> None:
        if len(tick) == 0:
            self.arrays.setdefault(name, np.zeros(self.size))
            return
        need = int(tick.max()) + 1
        if need > self.size:
            for k, a in self.arrays.items():
                self.arrays[k] = np.pad(a, (0, need - self.size))
            self.size = need
        arr = self.arrays.setdefault(name, np.zeros(self.size))
        arr += np.bincount(tick, weights=weights, minlength=self.size)

    def at(self, name: str, ticks: np.ndarray) -> np.ndarray:
        a = self.arrays.get(name)
        if a is None:
            return np.zeros(len(ticks))
        out = np.zeros(len(ticks))
        ok = (ticks >= 0) & (ticks < len(a))
        out[ok] = a[ticks[ok]]
        return out


def _pick(table: pa.Table, which: str) -> pa.Table:
    """First (``min``) or last (``max``) row per identity of a table sorted by ``t``."""
    if table.num_rows == 0:
        return table
    idx = pa.array(np.arange(table.num_rows))
    g = pa.table({"key": table.column("key"), "row": idx}).group_by("key")
    rows = g.aggregate([("row", which)]).column(f"row_{which}")
    return table.take(rows).sort_by("t")


def _small(tb: pa.Table, rows: np.ndarray, key: np.ndarray) -> pa.Table:
    """The given rows of a batch, with identity key and dictionary columns as plain strings."""
    out = tb.take(pa.array(rows, type=pa.int64()))
    for name in ("name", "role"):
        if name in out.column_names:
            i = out.column_names.index(name)
            out = out.set_column(i, name, pc.cast(out.column(name), pa.string()))
    return out.append_column("key", pa.array(key[rows]))


def _conform(tables: list[pa.Table], columns: list[str]) -> pa.Table:
    """Concatenate small tables that may lack some columns (older files, absent fields)."""
    fixed = []
    for t in tables:
        for c in columns:
            if c not in t.column_names:
                typ = pa.string() if c in ("name", "role") else pa.int64()
                t = t.append_column(c, pa.nulls(t.num_rows, typ))
        fixed.append(t.select(columns))
    if not fixed:
        return pa.table({c: pa.array([], pa.string() if c in ("name", "role") else pa.int64())
                         for c in columns})
    return pa.concat_tables(fixed, promote_options="permissive")


def read_processes(
    rec: Recording,
    system_ticks: np.ndarray,
    window_ticks: tuple[int, int],
    checkpoint_ticks: list[int],
) -> ProcessData:
    """Stream the processes table into per-tick sums and small per-process tables."""
    rec_table = rec.table("recorder", ["pid"])
    recorder_pids = {int(p) for p in pc.unique(rec_table.column("pid")).to_pylist() if p}
    wanted = [*_ID_COLUMNS, *{c for cols in GROUP_SUMS.values() for c in cols}]
    group, loadgen = _Acc(), _Acc()
    firsts: list[pa.Table] = []
    lasts: list[pa.Table] = []
    wfirsts: list[pa.Table] = []
    wlasts: list[pa.Table] = []
    snaps: list[pa.Table] = []
    notes: list[str] = []
    cps = np.array(sorted(set(checkpoint_ticks)), dtype=np.int64)
    lo, hi = window_ticks
    merged_max_t: float | None = None
    rows = 0
    excluded_recorder = 0
    for f in rec.files("processes"):
        try:
            pf = pq.ParquetFile(f)
            names = set(pf.schema_arrow.names)
            batches = pf.iter_batches(
                batch_size=_BATCH_ROWS, columns=[c for c in wanted if c in names]
            )
            for batch in batches:
                tb = pa.Table.from_batches([batch])
                if merged_max_t is not None:  # segments overlapping a merged file
                    tb = tb.filter(pc.greater(tb.column("t"), merged_max_t))
                n = tb.num_rows
                if n == 0:
                    continue
                rows += n
                tick = _np(tb.column("tick"), -1).astype(np.int64)
                pid = _np(tb.column("pid")).astype(np.int64)
                st = (
                    _np(tb.column("start_time")).astype(np.int64)
                    if "start_time" in tb.column_names
                    else np.zeros(n, np.int64)
                )
                key = identity(pid, st)
                if "role" in tb.column_names:
                    role = pc.cast(tb.column("role"), pa.string())
                    is_lg = np.asarray(
                        pc.fill_null(pc.equal(role, "loadgen"), False).to_numpy(
                            zero_copy_only=False
                        ),
                        dtype=bool,
                    )
                else:
                    is_lg = np.zeros(n, bool)
                is_rec = np.isin(pid, list(recorder_pids)) if recorder_pids else np.zeros(n, bool)
                excluded_recorder += int(is_rec.sum())
                ok_tick = tick >= 0
                watched = ~is_lg & ~is_rec & ok_tick
                lgm = is_lg & ~is_rec & ok_tick
                wt, lt = tick[watched], tick[lgm]
                group.add("count", wt, None)
                for name, cols in GROUP_SUMS.items():
                    present = [c for c in cols if c in tb.column_names]
                    if not present:
                        continue
                    v = sum(_np(tb.column(c)) for c in present)
                    group.add(name, wt, v[watched])
                    if name == "pss":
                        valid = np.asarray(tb.column("pss").is_valid().to_numpy(
                            zero_copy_only=False), dtype=float)
                        group.add("pss_count", wt, valid[watched])
                    if name in LOADGEN_SUMS:
                        loadgen.add(name, lt, v[lgm])
                loadgen.add("count", lt, None)
                # small tables: first/last row per identity, window first/last, checkpoints
                listed = ~is_rec
                rowno = np.arange(n)
                inwin = listed & (tick >= lo) & (tick <= hi)
                g = pa.table(
                    {
                        "key": pa.array(key),
                        "row": pa.array(rowno, mask=~listed),
                        "wrow": pa.array(rowno, mask=~inwin),
                    }
                ).group_by("key")
                agg = g.aggregate(
                    [("row", "min"), ("row", "max"), ("wrow", "min"), ("wrow", "max")]
                )
                for col, dest in (
                    ("row_min", firsts),
                    ("row_max", lasts),
                    ("wrow_min", wfirsts),
                    ("wrow_max", wlasts),
                ):
                    r = agg.column(col).drop_null().to_numpy()
                    if len(r):
                        dest.append(_small(tb, r, key))
                if len(cps):
                    sel = np.nonzero(listed & np.isin(tick, cps))[0]
                    if len(sel):
                        snaps.append(_small(tb, sel, key))
            if f.name == "processes.parquet":
                mt = pq.read_table(f, columns=["t"]).column("t")
                merged_max_t = float(pc.max(mt).as_py()) if len(mt) else None
        except (OSError, pa.ArrowException) as e:
            notes.append(f"skipped unreadable file {f.relative_to(rec.path)}: {e}")
    cols = list(dict.fromkeys(["key", *_ID_COLUMNS, *PROCESS_VALUES]))

    def final(parts: list[pa.Table], which: str) -> pa.Table:
        t = _conform(parts, cols)
        return _pick(t.sort_by("t"), which) if t.num_rows else t

    ticks = system_ticks.astype(np.int64)
    count = group.at("count", ticks)
    sums = {}
    for name in GROUP_SUMS:
        if name in group.arrays:
            s = group.at(name, ticks)
            s[count == 0] = np.nan
            sums[name] = s
    lg_count = loadgen.at("count", ticks)
    lg = {name: loadgen.at(name, ticks) for name in LOADGEN_SUMS if name in loadgen.arrays}
    snap = _conform(snaps, cols)
    if excluded_recorder:
        notes.append(
            f"the recorder's own process (pid {', '.join(map(str, sorted(recorder_pids)))}) "
            "was among the selected processes: excluded from the watched sums"
        )
    return ProcessData(
        sums=sums,
        count=count,
        pss_count=group.at("pss_count", ticks),
        loadgen=lg,
        loadgen_count=lg_count,
        first=final(firsts, "min"),
        last=final(lasts, "max"),
        win_first=final(wfirsts, "min"),
        win_last=final(wlasts, "max"),
        snapshots=snap,
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

