"""Run-to-run noise of one recording, from its own quiet stretch and its request intervals.

``loadmem compare`` must not call a difference a regression when the recording itself
wobbles that much. With one recording per side the only evidence of noise is inside each
recording:

- memory series (system used = MemTotal - MemAvailable, the watched group's summed RSS and
  PSS) during the **baseline** phase, or, without phases, the first 20% of the recording
  (the lead-in): sigma = 1.4826 x MAD around the median, a robust standard deviation;
- per-interval request figures during the **load** phase (p50/p95/p99, request rate):
  sigma of the interval values / sqrt(intervals), the uncertainty of their mean.

Vectorised with pyarrow/numpy; reads only the few columns it needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loadmem.recording.reader import Recording

LEAD_IN_FRACTION = 0.2


@dataclass
class RecordingNoise:
    """Robust standard deviations (sigma) of one recording's series, in their units."""

    window: str  # "baseline phase" | "lead-in (first 20%)" | "none"
    used_bytes: float | None = None
    rss_bytes: float | None = None
    pss_bytes: float | None = None
    request: dict[str, float] = field(default_factory=dict)  # metric name -> sigma of mean
    load_start: float | None = None  # t of the load phase start (alignment for plots)


def robust_sigma(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    if values.size < 3:
        return None
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def _quiet_window(rec: Recording) -> tuple[str, float, float] | None:
    phases = {name: (t0, t1) for name, t0, t1 in rec.phases()}
    if "baseline" in phases:
        t0, t1 = phases["baseline"]
        return "baseline phase", t0, t1 if t1 is not None else rec.duration
    duration = rec.duration
    if duration <= 0:
        return None
    return f"lead-in (first {LEAD_IN_FRACTION:.0%})", 0.0, duration * LEAD_IN_FRACTION


def _between(table: pa.Table, t0: float, t1: float) -> pa.Table:
    t = table.column("t")
    return table.filter(pc.and_(pc.greater_equal(t, t0), pc.less_equal(t, t1)))


def _group_sums(table: pa.Table, column: str) -> np.ndarray:
    if table.num_rows == 0:
        return np.array([])
    sums = table.select(["tick", column]).group_by("tick").aggregate([(column, "sum")])
    return sums.column(f"{column}_sum").to_numpy(zero_copy_only=False).astype(float)


def recording_noise(rec: Recording) -> RecordingNoise:
    """The noise estimate of one recording (fields None where the data is missing)."""
    phases = {name: (t0, t1) for name, t0, t1 in rec.phases()}
    load = phases.get("load")
    quiet = _quiet_window(rec)
    if quiet is None:
        return RecordingNoise(window="none", load_start=load[0] if load else None)
    label, t0, t1 = quiet
    noise = RecordingNoise(window=label, load_start=load[0] if load else None)

    system = rec.table("system")
    if {"MemTotal", "MemAvailable"} <= set(system.column_names) and system.num_rows:
        s = _between(system.select(["t", "MemTotal", "MemAvailable"]), t0, t1)
        used = pc.subtract(s.column("MemTotal"), s.column("MemAvailable"))
        noise.used_bytes = robust_sigma(used.to_numpy(zero_copy_only=False).astype(float))

    procs = rec.table("processes", ["t", "tick", "role", "rss", "pss"])
    if procs.num_rows:
        procs = _between(procs, t0, t1)
        procs = procs.filter(pc.equal(procs.column("role").cast(pa.string()), "target"))
        noise.rss_bytes = robust_sigma(_group_sums(procs, "rss"))
        noise.pss_bytes = robust_sigma(_group_sums(procs.filter(pc.is_valid(procs["pss"])),
                                                   "pss"))

    if load is not None:
        req = rec.table("requests")
        lt1 = load[1] if load[1] is not None else rec.duration
        if req.num_rows and "name" in req.column_names:
            rows = _between(req, load[0], lt1 + 1.0)
            rows = rows.filter(pc.equal(rows.column("name").cast(pa.string()), "Aggregated"))
            n = rows.num_rows
            if n >= 3:
                def col(name: str) -> np.ndarray:
                    return rows.column(name).to_numpy(zero_copy_only=False).astype(float)

                for metric, values in (
                    ("latency.p50_ms", col("p50_ms")),
                    ("latency.p95_ms", col("p95_ms")),
                    ("latency.p99_ms", col("p99_ms")),
                    ("requests.rps", col("requests") / np.maximum(col("interval_s"), 1e-9)),
                ):
                    sigma = robust_sigma(values)
                    if sigma is not None:
                        noise.request[metric] = sigma / math.sqrt(n)
    return noise
