"""Per-process series, streamed from the processes table in one pass, in bounded memory.

The processes table is the large one (24 h at 1 Hz with 100 processes is 8.6 M rows). It is
read one row group at a time, only the columns needed, and each row group is added into
per-tick sums with ``numpy.add.reduceat`` over runs of equal ticks; a few small tables (the
first and last row of each process, its rows at a handful of checkpoint ticks, its first and
last row inside each window) are kept. Nothing is looped over per row.

What it builds (definitions in ``definitions.py``):

- **the watched set**: role ``target`` (or no role); the load generator (role ``loadgen``) is
  summed apart; a userland proxy in front of the server (role ``proxy``) and the recorder's
  own pid (its ``recorder`` table, ``meta.json``) are left out of everything;
- **per-tick sums over every watched process** (``watched``), RSS by group (``master``,
  ``worker``, ``process``: what the plot stacks), and the **PSS coverage**: how many of the
  processes present at a tick have smaps_rollup figures (``smaps_count`` / ``count``);
- **process lifetimes**: a process is ``(pid, start_time)``; its first and last sample;
- for each window asked for, **sums over a fixed set** (``Lifecycle``): the cheap figures
  (RSS, RssAnon...) over the processes present at both ends of the window, the smaps figures
  (PSS, USS, shared...) over those that also had smaps figures at both ends; the processes
  that appeared or exited inside the window are listed apart with their own figures.

smaps_rollup figures are read at a slower cadence than RSS; the recorder writes the latest
read on every row (null until the first read), so a per-tick sum of those columns is the
per-process carry-forward, and a process read for the first time mid-way is not "growth".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loadmem.analysis.model import Window
from loadmem.analysis.series.definitions import (
    CHEAP_SUMS,
    PROCESS_SUMS,
    PROCESS_VALUES,
    ROLE_LOADGEN,
    ROLE_PROXY,
    SMAPS_MARKER,
    SMAPS_SUMS,
    identity,
)
from loadmem.analysis.series.system import SystemSeries, index_range
from loadmem.analysis.trend import MAX_EDGE, lead
from loadmem.recording.reader import Recording

_ID_COLUMNS = ("tick", "pid", "start_time", "ppid", "name", "role", "depth")
#: When a row's smaps figures were read (``pss_fresh``: during this very tick).
_READ_COLUMNS = ("pss_fresh", "pss_read_t")
#: Columns of the small per-process tables.
SMALL_COLUMNS = ("key", "t", *_ID_COLUMNS, *_READ_COLUMNS, *PROCESS_VALUES)
_GROUP_NAMES = ("master", "worker", "process")


# --- per-tick sums ----------------------------------------------------------------------------


@dataclass
class Sums:
    """Per-tick sums over a set of processes, aligned with the system samples
    ``[start, start + len)``. A sum is NaN at a tick where no process of the set had a row
    (smaps sums: where none had smaps figures)."""

    start: int
    values: dict[str, np.ndarray]
    count: np.ndarray  # processes of the set with a row at that tick
    smaps_count: np.ndarray  # of which with smaps figures

    def get(self, name: str) -> np.ndarray | None:
        return self.values.get(name)

    def __len__(self) -> int:
        return len(self.count)


class _Acc:
    """Adds per-row values into per-sample sums (indices relative to ``offset``)."""

    def __init__(self, offset: int, size: int) -> None:
        self.offset, self.size = offset, size
        self.arrays: dict[str, np.ndarray] = {}

    def add(self, name: str, at: np.ndarray, sums: np.ndarray) -> None:
        arr = self.arrays.get(name)
        if arr is None:
            arr = self.arrays[name] = np.zeros(self.size)
        arr[at - self.offset] += sums

    def sums(self, names: Sequence[str], smaps: Sequence[str],
             expect: tuple[int, int] | None = None) -> Sums:
        """The sums, NaN at a sample where no process of the set had a row (``expect``:
        where not exactly this many had a row / smaps figures: a fixed set)."""
        count = self.arrays.get("count", np.zeros(self.size))
        smaps_count = self.arrays.get("smaps_count", np.zeros(self.size))
        values = {}
        for n in names:
            if n in self.arrays:
                v = self.arrays[n].copy()
                c = smaps_count if n in smaps else count
                if expect is None:
                    v[c == 0] = np.nan
                else:
                    v[c != (expect[1] if n in smaps else expect[0])] = np.nan
                values[n] = v
        return Sums(self.offset, values, count, smaps_count)


def _runs(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts of the runs of equal values in a sorted array, and the values."""
    starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
    return starts, idx[starts]


Partial = tuple[np.ndarray, dict[str, np.ndarray]]  # sample indices, name -> sums there


def _partial(idx: np.ndarray, vals: dict[str, np.ndarray], names: Sequence[str],
             counter: str) -> Partial:
    """Per-sample sums of ``vals[names]`` over rows at (sorted) sample indices ``idx``."""
    if len(idx) == 0:
        return idx, {}
    starts, at = _runs(idx)
    out = {counter: np.diff(np.r_[starts, len(idx)]).astype(np.float64)}
    for n in names:
        v = vals.get(n)
        if v is not None:
            out[n] = np.add.reduceat(v, starts).astype(np.float64)
    return at, out


def _add(acc: _Acc, part: Partial) -> None:
    at, sums = part
    for n, v in sums.items():
        acc.add(n, at, v)


# --- small per-process tables -----------------------------------------------------------------


def _ints(col: pa.ChunkedArray | pa.Array, fill: int = 0) -> np.ndarray:
    if col.null_count:
        col = pc.fill_null(col, fill)
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.int64)


def _equals(col: pa.ChunkedArray, value: str) -> np.ndarray:
    """``column == value`` as bools (null is False); dictionary columns compare codes."""
    parts = []
    for chunk in col.chunks:
        if pa.types.is_dictionary(chunk.type):
            codes = [i for i, v in enumerate(chunk.dictionary.to_pylist()) if v == value]
            idx = pc.fill_null(chunk.indices, -1).to_numpy(zero_copy_only=False)
            parts.append(np.isin(idx, codes) if codes else np.zeros(len(chunk), bool))
        else:
            eq = pc.fill_null(pc.equal(chunk, value), False)
            parts.append(np.asarray(eq.to_numpy(zero_copy_only=False), dtype=bool))
    return np.concatenate(parts) if parts else np.zeros(0, bool)


def _by_key(key: np.ndarray, rows: np.ndarray | None = None,
            idx: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keys, first row, last row) of each key among ``rows`` (default all), in row order.

    With ``idx`` (the rows' sorted sample indices) and every process present at the first
    and the last tick of the rows (the usual case), those two ticks' rows are the answer: no
    sort of the whole batch."""
    if rows is None and idx is not None and len(key):
        first_end = int(np.searchsorted(idx, idx[0], side="right"))
        last_start = int(np.searchsorted(idx, idx[-1], side="left"))
        k0, k1 = key[:first_end], key[last_start:]
        uk = np.asarray(pc.unique(pa.array(key)).to_numpy())
        if len(uk) == len(k0) == len(k1) and np.isin(uk, k0).all() and np.isin(uk, k1).all():
            o0, o1 = np.argsort(k0), np.argsort(k1)
            return k0[o0], o0, last_start + o1
    rows = np.arange(len(key)) if rows is None else rows
    if len(rows) == 0:
        e = np.zeros(0, np.int64)
        return e, e, e
    order = rows[np.argsort(key[rows], kind="stable")]
    ks = key[order]
    bounds = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
    ends = np.r_[bounds[1:], len(ks)] - 1
    return ks[bounds], order[bounds], order[ends]


def _small(tb: pa.Table, rows: np.ndarray, key: np.ndarray, t: np.ndarray) -> pa.Table:
    out = tb.take(pa.array(rows, type=pa.int64()))
    for name in ("name", "role"):
        if name in out.column_names:
            i = out.column_names.index(name)
            out = out.set_column(i, name, pc.cast(out.column(name), pa.string()))
    return out.append_column("key", pa.array(key[rows])).append_column("t", pa.array(t[rows]))


def _conform(tables: list[pa.Table]) -> pa.Table:
    """Concatenate small tables that may lack some columns (older files, absent fields)."""

    def typ(c: str) -> pa.DataType:
        if c in ("name", "role"):
            return pa.string()
        if c in ("t", "pss_read_t"):
            return pa.float64()
        return pa.bool_() if c == "pss_fresh" else pa.int64()

    fixed = []
    for t in tables:
        for c in SMALL_COLUMNS:
            if c not in t.column_names:
                t = t.append_column(c, pa.nulls(t.num_rows, typ(c)))
        fixed.append(t.select(list(SMALL_COLUMNS)))
    if not fixed:
        return pa.table({c: pa.array([], typ(c)) for c in SMALL_COLUMNS})
    return pa.concat_tables(fixed, promote_options="permissive")


def _pick(parts: list[pa.Table], which: str) -> pa.Table:
    """One row per identity: the earliest (``min``) or latest (``max``) by ``t``."""
    table = _conform(parts)
    if table.num_rows == 0:
        return table
    table = table.sort_by([("t", "ascending"), ("tick", "ascending")])
    idx = pa.array(np.arange(table.num_rows))
    g = pa.table({"key": table.column("key"), "row": idx}).group_by("key", use_threads=False)
    rows = g.aggregate([("row", which)]).column(f"row_{which}")
    return table.take(rows).sort_by("t")


# --- windows: fixed sets and lifecycles -------------------------------------------------------


@dataclass
class Lifecycle:
    """How the watched set changed over one window, and sums over a fixed set.

    ``same`` are the processes present at both ends (their cheap figures are summed in
    ``sums``); ``same_smaps`` those of them that had smaps figures at both ends (their smaps
    figures are summed). ``appeared``/``exited`` are the processes that started or ended
    inside the window, one dict each: ``key``, ``pid``, ``name``, ``role``, ``first_s``,
    ``last_s``, ``first`` (its first row in the window), ``last`` (its last row in it),
    ``first_smaps`` (its first row in the window with smaps figures, or None).
    """

    window: Window
    sl: slice  # system samples of the window
    same: np.ndarray  # identity keys
    same_smaps: np.ndarray
    present_start: int  # watched processes present at the start
    smaps_start: int  # of which with smaps figures
    present_end: int
    smaps_end: int
    sums: Sums
    appeared: list[dict[str, Any]] = field(default_factory=list)
    exited: list[dict[str, Any]] = field(default_factory=list)
    first: dict[int, dict[str, Any]] = field(default_factory=dict)  # key -> first row inside
    last: dict[int, dict[str, Any]] = field(default_factory=dict)  # key -> last row inside
    #: key -> first row inside with smaps figures
    first_smaps: dict[int, dict[str, Any]] = field(default_factory=dict)


class _WindowAcc:
    def __init__(self, w: Window, sl: slice, same: np.ndarray, same_smaps: np.ndarray,
                 counts: tuple[int, int, int, int]) -> None:
        self.w, self.sl = w, sl
        self.same, self.same_smaps = np.sort(same), np.sort(same_smaps)
        self.counts = counts
        # the start level is made of the samples up to the window's first (10 at most: a
        # phase may be measured with its window's edge count, larger than its own)
        start = lead(sl, MAX_EDGE)
        self.acc = _Acc(start, sl.stop - start)
        self.t_lo, self.t_hi = 0.0, 0.0
        self.first: list[pa.Table] = []
        self.last: list[pa.Table] = []
        self.first_smaps: list[pa.Table] = []


def _member(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    if len(sorted_keys) == 0:
        return np.zeros(len(keys), bool)
    pos = np.clip(np.searchsorted(sorted_keys, keys), 0, len(sorted_keys) - 1)
    return sorted_keys[pos] == keys


# --- the result -------------------------------------------------------------------------------


@dataclass
class ProcessSeries:
    """Everything the rest of loadmem knows about the processes of one recording."""

    watched: Sums  # every watched process, per system sample
    rss_by_group: dict[str, np.ndarray]  # VmRSS summed per group, per system sample
    loadgen: Sums  # the load generator, per system sample
    first: pa.Table  # first row of each identity (watched and load generator)
    last: pa.Table  # last row of each identity
    first_smaps: pa.Table  # first row with smaps figures of each identity
    snapshots: pa.Table  # rows at the checkpoint ticks
    groups: dict[int, str]  # identity key -> master | worker | process
    windows: dict[str, Lifecycle]
    recorder_pids: set[int] = field(default_factory=set)
    rows: int = 0
    notes: list[str] = field(default_factory=list)
    #: per system sample: every smaps figure was current (the recorder table's pss_stale_s
    #: is 0); None when the recording does not say (made before that column)
    current: np.ndarray | None = None


def _lifecycle_times(rec: Recording) -> np.ndarray:
    """Times at which a watched process appeared or exited (the recorder's events), sorted:
    each one changes its siblings' PSS (shared pages split among more or fewer)."""
    times = [e["t"] for kind in ("process_start", "process_exit") for e in rec.events(kind)
             if not (isinstance(e.get("data"), dict)
                     and e["data"].get("role") in (ROLE_LOADGEN, ROLE_PROXY))]
    return np.sort(np.array(times, dtype=np.float64))


def _boundary_sets(rec: Recording, system: SystemSeries, windows: Sequence[tuple[Window, slice]],
                   excluded: np.ndarray) -> list[tuple[np.ndarray, np.ndarray,
                                                       tuple[int, int, int, int]]]:
    """For each window: the watched processes present at both ends, those of them with smaps
    figures at both ends, and how many were present / had smaps at each end.

    A smaps figure carried forward from a read made before a watched process appeared or
    exited is stale (the shared pages are now split among more or fewer processes): such a
    process counts as first read inside the window."""
    ticks = sorted({int(system.tick[i]) for _, sl in windows for i in (sl.start, sl.stop - 1)})
    tb = rec.rows_at_ticks("processes", ticks,
                           ["pid", "start_time", "role", SMAPS_MARKER, "pss_read_t"])
    if tb.num_rows == 0:
        empty = np.zeros(0, np.int64)
        return [(empty, empty, (0, 0, 0, 0)) for _ in windows]
    tick = _ints(tb.column("tick"))
    pid = _ints(tb.column("pid"))
    keep = ~np.isin(pid, excluded)
    if "role" in tb.column_names:
        keep &= ~_equals(tb.column("role"), ROLE_LOADGEN) & ~_equals(tb.column("role"),
                                                                     ROLE_PROXY)
    st = _ints(tb.column("start_time")) if "start_time" in tb.column_names else np.zeros_like(pid)
    key = identity(pid, st)
    has = (np.asarray(tb.column(SMAPS_MARKER).is_valid().to_numpy(zero_copy_only=False), bool)
           if SMAPS_MARKER in tb.column_names else np.zeros(len(pid), bool))
    read_t = (np.asarray(pc.fill_null(tb.column("pss_read_t"), np.inf).to_numpy(
        zero_copy_only=False), np.float64) if "pss_read_t" in tb.column_names
        else np.full(len(pid), np.inf))
    events = _lifecycle_times(rec)
    out = []
    for _, sl in windows:
        lo, hi = int(system.tick[sl.start]), int(system.tick[sl.stop - 1])
        t_lo, t_hi = float(system.t[sl.start]), float(system.t[sl.stop - 1])
        at_lo, at_hi = keep & (tick == lo), keep & (tick == hi)
        fresh = has.copy()
        for t_edge, at in ((t_lo, at_lo), (t_hi, at_hi)):
            if len(events):  # an event after the read, up to the edge: the figure is stale
                after_read = np.searchsorted(events, read_t[at], side="right")
                upto = np.searchsorted(events, t_edge, side="right")
                fresh[np.flatnonzero(at)[upto > after_read]] = False
        same = np.intersect1d(key[at_lo], key[at_hi])
        smaps = np.intersect1d(key[at_lo & fresh], key[at_hi & fresh])
        counts = (len(np.unique(key[at_lo])), len(np.unique(key[at_lo & has])),
                  len(np.unique(key[at_hi])), len(np.unique(key[at_hi & has])))
        out.append((same, smaps, counts))
    return out


def read_processes(
    rec: Recording,
    system: SystemSeries,
    windows: Sequence[Window] = (),
    checkpoint_ticks: Sequence[int] = (),
) -> ProcessSeries:
    """Stream the processes table once: per-tick sums, lifetimes, fixed sets per window."""
    rec_table = rec.table("recorder", ["pid", "tick", "pss_stale_s"])
    recorder_pids = {int(p) for p in pc.unique(rec_table.column("pid")).to_pylist() if p}
    if isinstance(rec.meta.get("recorder_pid"), int):
        recorder_pids.add(rec.meta["recorder_pid"])
    excluded = np.array(sorted(recorder_pids), dtype=np.int64)
    n = len(system)
    idx_of_tick = system.index_of_tick()
    current = _current(rec_table, idx_of_tick, n)
    spans = [(w, index_range(system, w.t_start, w.t_end)) for w in windows]
    spans = [(w, sl) for w, sl in spans if sl.stop > sl.start]
    wins = [_WindowAcc(w, sl, same, smaps, counts) for (w, sl), (same, smaps, counts)
            in zip(spans, _boundary_sets(rec, system, spans, excluded), strict=True)]
    for wa in wins:
        wa.t_lo, wa.t_hi = float(system.t[wa.sl.start]), float(system.t[wa.sl.stop - 1])
    watched, loadgen, by_group = _Acc(0, n), _Acc(0, n), _Acc(0, n)
    cps = np.array(sorted(set(checkpoint_ticks)), dtype=np.int64)
    parts: dict[str, list[pa.Table]] = {"first": [], "last": [], "first_smaps": [], "snap": []}
    parents: set[int] = set()
    notes: list[str] = []
    rows = excluded_recorder = 0
    wanted = list(dict.fromkeys([*_ID_COLUMNS, "pss_fresh", *PROCESS_VALUES]))
    cheap, smaps = list(CHEAP_SUMS), list(SMAPS_SUMS)
    for tb in rec.batches("processes", wanted):
        if "tick" not in tb.column_names or "pid" not in tb.column_names:
            notes.append("a processes file lacks tick/pid columns: skipped")
            continue
        tick = _ints(tb.column("tick"), -1)
        pid = _ints(tb.column("pid"))
        ok = (tick >= 0) & (tick < len(idx_of_tick))
        ok[ok] &= idx_of_tick[tick[ok]] >= 0  # a row needs its tick's system sample (its time)
        is_rec = np.isin(pid, excluded) if len(excluded) else np.zeros(len(pid), bool)
        excluded_recorder += int((is_rec & ok).sum())
        ok &= ~is_rec
        if "role" in tb.column_names:  # a proxy in front of the server is not the service
            ok &= ~_equals(tb.column("role"), ROLE_PROXY)
        if not ok.all():
            tb, tick, pid = tb.filter(pa.array(ok)), tick[ok], pid[ok]
        if tb.num_rows == 0:
            continue
        if np.any(tick[1:] < tick[:-1]):
            order = np.argsort(tick, kind="stable")
            tb, tick, pid = tb.take(pa.array(order)), tick[order], pid[order]
        rows += tb.num_rows
        idx = idx_of_tick[tick]
        t = system.t[idx]
        st = (_ints(tb.column("start_time")) if "start_time" in tb.column_names
              else np.zeros(len(pid), np.int64))
        key = identity(pid, st)
        has_smaps = (np.asarray(tb.column(SMAPS_MARKER).is_valid().to_numpy(
            zero_copy_only=False), bool) if SMAPS_MARKER in tb.column_names
            else np.zeros(len(pid), bool))
        # a process's first smaps figures in a window: its first fresh read there
        if "pss_fresh" in tb.column_names:
            read_here = np.asarray(pc.fill_null(tb.column("pss_fresh"), False).to_numpy(
                zero_copy_only=False), bool) & has_smaps
        else:
            read_here = has_smaps
        vals: dict[str, np.ndarray] = {}
        for name, cols in PROCESS_SUMS.items():
            present = [c for c in cols if c in tb.column_names]
            if present:
                v = _ints(tb.column(present[0]))
                for c in present[1:]:
                    v = v + _ints(tb.column(c))
                vals[name] = v
        is_lg = (_equals(tb.column("role"), ROLE_LOADGEN) if "role" in tb.column_names
                 else np.zeros(len(pid), bool))
        w_rows = ~is_lg
        all_watched = not is_lg.any()
        # lifetimes: first and last row of each process in this batch
        ukeys, first_rows, last_rows = _by_key(key, idx=idx)
        # groups, as far as this pass has seen the tree (the tables use the final grouping):
        # the parents of this batch's descendants, from one row per process
        depth = _ints(tb.column("depth"), 0) if "depth" in tb.column_names else np.zeros(
            len(pid), np.int64)
        if "ppid" in tb.column_names:
            one_each = np.concatenate([first_rows, last_rows])
            kids = one_each[w_rows[one_each] & (depth[one_each] >= 1)]
            parents.update(_ints(tb.column("ppid").take(pa.array(kids)))
                           .tolist() if len(kids) else [])
        group = np.where(depth >= 1, 1, 2)
        if parents:
            group[(depth <= 0) & np.isin(pid, np.fromiter(parents, np.int64))] = 0
        # every watched process, the load generator, RSS by group
        w_cheap = w_smaps = None
        for acc, m in ((watched, w_rows), (loadgen, is_lg)):
            if not m.any():
                continue
            every = bool(m.all())
            mv = vals if every else {k: v[m] for k, v in vals.items()}
            im = idx if every else idx[m]
            pc_ = _partial(im, mv, cheap, "count")
            ms = has_smaps[m] if not every else has_smaps
            if ms.all():
                ps_ = _partial(im, mv, smaps, "smaps_count")
            else:
                ps_ = _partial(im[ms], {k: v[ms] for k, v in mv.items() if k in smaps},
                               smaps, "smaps_count")
            _add(acc, pc_)
            _add(acc, ps_)
            if acc is watched:
                w_cheap, w_smaps = pc_, ps_
        if "rss" in vals:
            for g in range(3):
                m = w_rows & (group == g)
                if m.any():
                    starts, at = _runs(idx[m])
                    by_group.add(_GROUP_NAMES[g], at, np.add.reduceat(vals["rss"][m], starts))
        parts["first"].append(_small(tb, first_rows, key, t))
        parts["last"].append(_small(tb, last_rows, key, t))
        sm = np.flatnonzero(read_here)
        if len(sm):
            parts["first_smaps"].append(_small(tb, _by_key(key, sm)[1], key, t))
        # windows: sums over the fixed set, first and last rows inside
        for wa in wins:
            r0, r1 = (int(x) for x in np.searchsorted(idx, [wa.acc.offset, wa.sl.stop]))
            if r1 <= r0:
                continue
            whole = r0 == 0 and r1 == len(idx)
            in_same = _member(wa.same, ukeys).all() and all_watched
            if whole and in_same and w_cheap is not None:
                _add(wa.acc, w_cheap)  # every row of the batch is in the fixed set
            else:
                m = _member(wa.same, key[r0:r1])
                if m.any():
                    _add(wa.acc, _partial(idx[r0:r1][m], {c: vals[c][r0:r1][m] for c in cheap
                                                          if c in vals}, cheap, "count"))
            in_smaps = _member(wa.same_smaps, ukeys).all() and all_watched and has_smaps.all()
            if whole and in_smaps and w_smaps is not None:
                _add(wa.acc, w_smaps)
            else:
                m = _member(wa.same_smaps, key[r0:r1]) & has_smaps[r0:r1]
                if m.any():
                    _add(wa.acc, _partial(idx[r0:r1][m], {c: vals[c][r0:r1][m] for c in smaps
                                                          if c in vals}, smaps, "smaps_count"))
            w0 = int(np.searchsorted(idx, wa.sl.start))  # rows inside the window proper
            if r1 <= w0:
                continue
            if w0 == 0 and r1 == len(idx):
                wf, wl = first_rows, last_rows
            else:
                _, wf, wl = _by_key(key, np.arange(w0, r1))
            wa.first.append(_small(tb, wf, key, t))
            wa.last.append(_small(tb, wl, key, t))
            sm = np.flatnonzero(read_here[w0:r1]) + w0
            if len(sm):
                wa.first_smaps.append(_small(tb, _by_key(key, sm)[1], key, t))
        if len(cps):
            lo, hi = np.searchsorted(tick, cps), np.searchsorted(tick, cps, side="right")
            snap = np.concatenate([np.arange(a, b) for a, b in zip(lo, hi, strict=True)])
            if len(snap):
                parts["snap"].append(_small(tb, snap, key, t))
    if excluded_recorder:
        notes.append(
            f"the recorder's own process (pid {', '.join(map(str, sorted(recorder_pids)))}) "
            "was among the selected processes: excluded from the watched figures"
        )
    first = _pick(parts["first"], "min")
    last = _pick(parts["last"], "max")
    groups = _groups(first)
    return ProcessSeries(
        watched=watched.sums([*cheap, *smaps], smaps),
        rss_by_group={g: by_group.arrays[g] for g in _GROUP_NAMES if g in by_group.arrays},
        loadgen=loadgen.sums([*cheap, *smaps], smaps),
        first=first,
        last=last,
        first_smaps=_pick(parts["first_smaps"], "min"),
        snapshots=_conform(parts["snap"]),
        groups=groups,
        windows={wa.w.name: _lifecycle(wa, first, last, groups) for wa in wins},
        recorder_pids=recorder_pids,
        rows=rows,
        notes=notes,
        current=current,
    )


def _current(recorder: pa.Table, idx_of_tick: np.ndarray, n: int) -> np.ndarray | None:
    """Per system sample: were all the smaps figures current at that tick (the recorder
    table's ``pss_stale_s`` 0)? A sample the recorder table has no row for counts as current
    (nothing says otherwise); None for a recording made before ``pss_stale_s``."""
    col = recorder.column("pss_stale_s")
    if recorder.num_rows == 0 or col.null_count == recorder.num_rows:
        return None
    tick = _ints(recorder.column("tick"), -1)
    stale = np.asarray(pc.fill_null(col, 0.0).to_numpy(
        zero_copy_only=False), np.float64)
    ok = (tick >= 0) & (tick < len(idx_of_tick))
    ok[ok] &= idx_of_tick[tick[ok]] >= 0
    out = np.ones(n, bool)
    out[idx_of_tick[tick[ok]]] = stale[ok] <= 0.0
    return out


def _groups(first: pa.Table) -> dict[int, str]:
    """identity key -> master | worker | process, from each process's first row.

    Depth >= 1 (a descendant of a selected process) is a ``worker``; a selected process
    (depth 0) with watched descendants is the ``master``; anything else (a lone selected
    process, the load generator) a ``process``."""
    if first.num_rows == 0:
        return {}
    rows = first.select(["key", "pid", "ppid", "depth", "role"]).to_pylist()
    watched = [r for r in rows if r["role"] != ROLE_LOADGEN]
    parents = {r["ppid"] for r in watched if (r["depth"] or 0) >= 1}
    out = {}
    for r in rows:
        d = r["depth"] or 0
        if r["role"] == ROLE_LOADGEN:
            out[r["key"]] = "process"
        elif d >= 1:
            out[r["key"]] = "worker"
        elif r["pid"] in parents:
            out[r["key"]] = "master"
        else:
            out[r["key"]] = "process"
    return out


def _lifecycle(wa: _WindowAcc, first: pa.Table, last: pa.Table,
               groups: dict[int, str]) -> Lifecycle:
    names = list(PROCESS_SUMS)
    sums = wa.acc.sums(names, list(SMAPS_SUMS), expect=(len(wa.same), len(wa.same_smaps)))
    w_first = {r["key"]: r for r in _pick(wa.first, "min").to_pylist()}
    w_last = {r["key"]: r for r in _pick(wa.last, "max").to_pylist()}
    w_smaps = {r["key"]: r for r in _pick(wa.first_smaps, "min").to_pylist()}
    born = {r["key"]: r for r in first.to_pylist()}
    died = {r["key"]: r for r in last.to_pylist()}
    t_lo, t_hi = wa.t_lo, wa.t_hi  # times of the window's first and last samples
    same = set(wa.same.tolist())
    appeared, exited = [], []
    for k, a in w_first.items():
        if k in same or a["role"] == ROLE_LOADGEN:
            continue
        b = w_last[k]
        entry = {
            "key": k, "pid": a["pid"], "start_time": a["start_time"], "name": a["name"],
            "role": a["role"], "group": groups.get(k, "process"),
            "first_s": born[k]["t"], "last_s": died[k]["t"],
            "first": a, "last": b, "first_smaps": w_smaps.get(k),
        }
        # new when its first sample is after the window opened, gone when its last sample
        # is before the window's last one (a process that came and went is both)
        if born[k]["t"] > t_lo:
            appeared.append(entry)
        if died[k]["t"] < t_hi:
            exited.append(entry)
    present_start, smaps_start, present_end, smaps_end = wa.counts
    return Lifecycle(
        window=wa.w, sl=wa.sl, same=wa.same, same_smaps=wa.same_smaps,
        present_start=present_start, smaps_start=smaps_start, present_end=present_end,
        smaps_end=smaps_end, sums=sums, appeared=appeared, exited=exited,
        first=w_first, last=w_last, first_smaps=w_smaps,
    )
