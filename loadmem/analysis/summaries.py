"""Summary tables for the reporters: per phase, per process, the recorder's own cost.

Built once by ``analyze`` from the series and the small per-process tables, so reporters
never recompute anything.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow.compute as pc

from loadmem.analysis import detectors as det
from loadmem.analysis import traffic
from loadmem.analysis.series import ProcessData, SystemSeries, index_range
from loadmem.analysis.window import Windows
from loadmem.recording.reader import Recording


def at(arr: np.ndarray | None, i: int | None) -> float | None:
    """Value at index ``i`` as a float, None when out of range or not finite."""
    if arr is None or i is None or i < 0 or i >= len(arr):
        return None
    v = float(arr[i])
    return v if np.isfinite(v) else None


def groups(p: ProcessData) -> dict[int, str]:
    """identity key -> master | worker | process (depth 0 with descendants = master)."""
    f = p.first
    if f.num_rows == 0:
        return {}
    keys = f.column("key").to_pylist()
    pids = f.column("pid").to_pylist()
    ppids = f.column("ppid").to_pylist()
    depth = f.column("depth").to_pylist()
    roles = f.column("role").to_pylist()
    watched_pids = {pid for pid, r in zip(pids, roles, strict=True) if r != "loadgen"}
    parents = {pp for pp, r in zip(ppids, roles, strict=True) if r != "loadgen"}
    out = {}
    for k, pid, pp, d, r in zip(keys, pids, ppids, depth, roles, strict=True):
        if r == "loadgen":
            out[k] = "process"
        elif (d == 0 or d is None) and pid in parents:
            out[k] = "master"
        elif (d is not None and d >= 1) or (d is None and pp in watched_pids):
            out[k] = "worker"
        else:
            out[k] = "process"
    return out


def proc_changes(p: ProcessData, groups: dict[int, str]) -> list[det.ProcChange]:
    if p.win_first.num_rows == 0:
        return []
    first = {r["key"]: r for r in p.win_first.to_pylist()}
    out = []
    for r in p.win_last.to_pylist():
        a = first.get(r["key"])
        if a is None:
            continue
        out.append(
            det.ProcChange(
                pid=r["pid"], name=r["name"] or "?", group=groups.get(r["key"], "process"),
                role=r["role"] or "target", rss_start=a["rss"], rss_end=r["rss"],
                pss_start=a["pss"], pss_end=r["pss"], smaps_rss_start=a["smaps_rss"],
                smaps_rss_end=r["smaps_rss"], t_start=a["t"], t_end=r["t"],
            )
        )
    return out


def recorder_figures(rec: Recording) -> dict[str, float | None]:
    tb = rec.table("recorder", ["t", "cpu_user", "cpu_system", "rss", "smaps_max_us"])
    out: dict[str, float | None] = {"cpu_fraction": None, "rss_bytes": None,
                                    "smaps_max_stall_ms": None}
    if tb.num_rows == 0:
        return out
    t = tb.column("t").to_numpy()
    cpu = (pc.fill_null(tb.column("cpu_user"), np.nan).to_numpy(zero_copy_only=False)
           + pc.fill_null(tb.column("cpu_system"), np.nan).to_numpy(zero_copy_only=False))
    ok = np.isfinite(cpu)
    if ok.sum() >= 2 and t[ok][-1] > t[ok][0]:
        out["cpu_fraction"] = float((cpu[ok][-1] - cpu[ok][0]) / (t[ok][-1] - t[ok][0]))
    rss = pc.max(tb.column("rss")).as_py()
    out["rss_bytes"] = float(rss) if rss is not None else None
    stall = pc.max(tb.column("smaps_max_us")).as_py()
    out["smaps_max_stall_ms"] = float(stall) / 1000.0 if stall is not None else None
    return out


def phase_rows(
    wins: Windows, system: SystemSeries, p: ProcessData, tr: traffic.Traffic
) -> list[dict[str, Any]]:
    used = system.get("used")
    rows = []
    for w in wins.phases:
        sl = index_range(system, w.t_start, w.t_end)
        i0, i1 = sl.start, max(sl.stop - 1, sl.start)
        s = traffic.summarize(tr, w.t_start, w.t_end)
        rows.append({
            "name": w.name,
            "start_s": w.t_start,
            "end_s": w.t_end,
            "duration_s": w.duration,
            "requests": s["requests"],
            "failures": s["failures"],
            "rps": s["rps"],
            "p95_ms": s["p95_ms"],
            "used_start_bytes": at(used, i0),
            "used_end_bytes": at(used, i1),
            "rss_start_bytes": at(p.sums.get("rss"), i0),
            "rss_end_bytes": at(p.sums.get("rss"), i1),
            "pss_start_bytes": at(p.sums.get("pss"), i0),
            "pss_end_bytes": at(p.sums.get("pss"), i1),
        })
    return rows


_SNAP_VALUES = ("rss", "pss", "uss", "private_dirty", "shared")


def process_rows(
    p: ProcessData, groups: dict[int, str], checkpoints: dict[str, int | None]
) -> list[dict[str, Any]]:
    snaps: dict[tuple[int, int], dict[str, Any]] = {}
    for r in p.snapshots.to_pylist():
        snaps[(r["key"], r["tick"])] = r
    last_in_window = {r["key"]: r for r in p.win_last.to_pylist()}
    rows = []
    for r in p.first.to_pylist():
        k = r["key"]
        row: dict[str, Any] = {
            "pid": r["pid"], "start_time": r["start_time"], "name": r["name"],
            "group": groups.get(k, "process"), "role": r["role"] or "target",
            "depth": r["depth"], "ppid": r["ppid"], "first_s": r["t"],
        }
        for label, tick in checkpoints.items():
            s = snaps.get((k, tick)) if tick is not None else None
            if s is None and label == "end":
                s = last_in_window.get(k)
            for v in _SNAP_VALUES:
                if s is None:
                    val = None
                elif v == "uss":
                    pc_, pd_ = s.get("private_clean"), s.get("private_dirty")
                    val = None if pc_ is None and pd_ is None else (pc_ or 0) + (pd_ or 0)
                elif v == "shared":
                    sc, sd = s.get("shared_clean"), s.get("shared_dirty")
                    val = None if sc is None and sd is None else (sc or 0) + (sd or 0)
                else:
                    val = s.get(v)
                row[f"{v}_{label}_bytes"] = val
        rows.append(row)
    last = {r["key"]: r["t"] for r in p.last.to_pylist()}
    for row, r in zip(rows, p.first.to_pylist(), strict=True):
        row["last_s"] = last.get(r["key"])
    return rows


def workers_at(p: ProcessData, groups: dict[int, str], tick: int) -> list[dict[str, Any]]:
    """Worker rows present at ``tick`` with a PSS figure."""
    return [
        r for r in p.snapshots.to_pylist()
        if r["tick"] == tick and groups.get(r["key"]) == "worker" and r["role"] != "loadgen"
        and r["pss"] is not None
    ]
