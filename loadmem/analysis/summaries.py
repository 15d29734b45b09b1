"""Summary tables for the reporters: per phase, per process, the recorder's own cost.

Built once by ``analyze`` from the series layer and the measured windows, so reporters never
recompute anything. Phase rows use the same levels (medians of the edge samples) and the same
like-with-like sums as the verdict's window.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loadmem.analysis import traffic
from loadmem.analysis.context import Context
from loadmem.analysis.series import RecordingSeries, process_value
from loadmem.recording.reader import Recording


def at(arr: np.ndarray | None, i: int | None) -> float | None:
    """Value at index ``i`` as a float, None when out of range or not finite."""
    if arr is None or i is None or i < 0 or i >= len(arr):
        return None
    v = float(arr[i])
    return v if np.isfinite(v) else None


def recorder_figures(rec: Recording) -> dict[str, float | None]:
    """The recorder's own cost: CPU per second of recording (its threads and, where
    recorded, its compaction children), peak RSS, longest smaps_rollup read."""
    tb = rec.table("recorder", ["t", "cpu_user", "cpu_system", "cpu_children", "rss",
                                "smaps_max_us"])
    out: dict[str, float | None] = {"cpu_fraction": None, "rss_bytes": None,
                                    "smaps_max_stall_ms": None}
    if tb.num_rows == 0:
        return out
    t = tb.column("t").to_numpy()
    def col(name: str, fill: float) -> np.ndarray:
        c = pc.cast(tb.column(name), pa.float64())
        return np.asarray(pc.fill_null(c, fill).to_numpy(zero_copy_only=False), dtype=float)

    cpu = col("cpu_user", np.nan) + col("cpu_system", np.nan) + col("cpu_children", 0.0)
    ok = np.isfinite(cpu)
    if ok.sum() >= 2 and t[ok][-1] > t[ok][0]:
        out["cpu_fraction"] = float((cpu[ok][-1] - cpu[ok][0]) / (t[ok][-1] - t[ok][0]))
    rss = pc.max(tb.column("rss")).as_py()
    out["rss_bytes"] = float(rss) if rss is not None else None
    stall = pc.max(tb.column("smaps_max_us")).as_py()
    out["smaps_max_stall_ms"] = float(stall) / 1000.0 if stall is not None else None
    return out


def _level(ctx: Context, name: str, source: str, end: bool) -> float | None:
    c = ctx._changes(source).get(name)
    if c is None:
        return None
    return c.end if end else c.start


def phase_row(ctx: Context, tr: traffic.Traffic) -> dict[str, Any]:
    """One phase: its length, requests, and used / RSS / PSS at its ends (RSS and PSS of the
    processes present at both ends of the phase)."""
    w = ctx.window
    s = traffic.summarize(tr, w.t_start, w.t_end)
    row: dict[str, Any] = {
        "name": w.name, "start_s": w.t_start, "end_s": w.t_end, "duration_s": w.duration,
        "requests": s["requests"], "failures": s["failures"], "rps": s["rps"],
        "p95_ms": s["p95_ms"],
    }
    for kind, source in (("used", "system"), ("rss", "group"), ("pss", "group")):
        row[f"{kind}_start_bytes"] = _level(ctx, kind, source, end=False)
        row[f"{kind}_end_bytes"] = _level(ctx, kind, source, end=True)
    row["processes_throughout"] = ctx.same_count
    row["appeared"] = len([p for p in ctx.appeared if not p.exited])
    row["exited"] = len([p for p in ctx.exited if not p.appeared])
    return row


_SNAP_VALUES = ("rss", "pss", "uss", "private_dirty", "shared")


def process_rows(
    series: RecordingSeries, checkpoints: dict[str, int | None], t_end: float
) -> list[dict[str, Any]]:
    """One row per process identity seen (watched and load generator; never the recorder):
    its figures at the end of the baseline, at the end of the load and at the end of the
    window; a process gone by then has its figures when last seen."""
    p = series.processes
    snaps: dict[tuple[int, int], dict[str, Any]] = {}
    for r in p.snapshots.to_pylist():
        snaps[(r["key"], r["tick"])] = r
    last = {r["key"]: r for r in p.last.to_pylist()}
    rows = []
    for r in p.first.to_pylist():
        k = r["key"]
        seen_last = last.get(k, r)
        row: dict[str, Any] = {
            "pid": r["pid"], "start_time": r["start_time"], "name": r["name"],
            "group": p.groups.get(k, "process"), "role": r["role"] or "target",
            "depth": r["depth"], "ppid": r["ppid"], "first_s": r["t"],
            "last_s": seen_last["t"],
        }
        for label, tick in checkpoints.items():
            s = snaps.get((k, tick)) if tick is not None else None
            if s is None and label == "end" and r["t"] <= t_end:
                s = seen_last if seen_last["t"] <= t_end else None
            for v in _SNAP_VALUES:
                row[f"{v}_{label}_bytes"] = None if s is None else process_value(s, v)
        rows.append(row)
    return rows


def workers_at(series: RecordingSeries, tick: int) -> list[dict[str, Any]]:
    """Worker rows present at ``tick`` (a checkpoint) with a PSS figure."""
    p = series.processes
    return [
        r for r in p.snapshots.to_pylist()
        if r["tick"] == tick and p.groups.get(r["key"]) == "worker" and r["role"] != "loadgen"
        and r["pss"] is not None
    ]
