"""Run-to-run noise of one recording, from its own quiet stretch and its request intervals.

``loadmem compare`` must not call a difference a regression when the recording itself
wobbles that much. With one recording per side the only evidence of noise is inside each
recording:

- memory series from the series layer (``loadmem.analysis.series``: system used memory, the
  watched processes' summed RSS, and their summed PSS where every one of them had a figure)
  during the **baseline** phase, or, without phases, the first 20% of the recording (the
  lead-in): sigma = 1.4826 x MAD around the median, a robust standard deviation;
- per-interval request figures during the **load** phase (p50/p95/p99, request rate):
  sigma of the interval values / sqrt(intervals), the uncertainty of their mean.

Vectorised with pyarrow/numpy; the series are the analysis' own (no second read of the
processes table).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loadmem.analysis.series import RecordingSeries, build
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


def recording_noise(rec: Recording, series: RecordingSeries | None = None) -> RecordingNoise:
    """The noise estimate of one recording (fields None where the data is missing).
    ``series``: the analysis' own, else built from the recording."""
    phases = {name: (t0, t1) for name, t0, t1 in rec.phases()}
    load = phases.get("load")
    quiet = _quiet_window(rec)
    if quiet is None:
        return RecordingNoise(window="none", load_start=load[0] if load else None)
    label, t0, t1 = quiet
    noise = RecordingNoise(window=label, load_start=load[0] if load else None)

    series = series if series is not None else build(rec)
    t = series.system.t
    quiet_ = (t >= t0) & (t <= t1)
    noise.used_bytes = robust_sigma(series.system.get("used")[quiet_])
    w = series.processes.watched
    present = quiet_ & (w.count > 0)
    rss = w.get("rss")
    if rss is not None and present.any():
        noise.rss_bytes = robust_sigma(rss[present])
    pss = w.get("pss")
    full = present & (w.smaps_count >= w.count)
    if pss is not None and full.any():
        noise.pss_bytes = robust_sigma(pss[full])

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
