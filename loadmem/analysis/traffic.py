"""Request statistics from the ``requests`` table (written by ``loadmem run``).

The table has one row per endpoint per interval (about a second) plus an ``Aggregated`` total
row. Counts add up exactly. Percentiles do not: the exact overall p95 of a phase needs the
full latency histogram, which the table does not keep, so a phase's percentile is estimated as
the request-weighted median of its per-interval percentiles, unless the run stored Locust's own
final totals in a ``load_stats`` event (then those are used for the load phase).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loadmem.recording.reader import Recording

TOTAL_ROW = "Aggregated"


@dataclass(frozen=True)
class Traffic:
    t: np.ndarray  # end of each interval (s)
    requests: np.ndarray
    failures: np.ndarray
    p50: np.ndarray
    p95: np.ndarray
    p99: np.ndarray
    interval: np.ndarray

    @property
    def empty(self) -> bool:
        return len(self.t) == 0


def _col(table: pa.Table, name: str) -> np.ndarray:
    if name not in table.column_names:
        return np.full(table.num_rows, np.nan)
    return np.asarray(
        pc.fill_null(pc.cast(table.column(name), pa.float64()), np.nan).to_numpy(
            zero_copy_only=False
        ),
        dtype=float,
    )


def read_traffic(rec: Recording) -> Traffic:
    """Total rows (``Aggregated``); if a writer left them out, the sum of endpoint rows."""
    table = rec.table("requests")
    if table.num_rows and "name" in table.column_names:
        names = pc.cast(table.column("name"), pa.string())
        total = pc.fill_null(pc.equal(names, TOTAL_ROW), False)
        if pc.any(total).as_py():
            table = table.filter(total)
    return Traffic(
        t=_col(table, "t"),
        requests=np.nan_to_num(_col(table, "requests")),
        failures=np.nan_to_num(_col(table, "failures")),
        p50=_col(table, "p50_ms"),
        p95=_col(table, "p95_ms"),
        p99=_col(table, "p99_ms"),
        interval=_col(table, "interval_s"),
    )


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float | None:
    ok = np.isfinite(values) & (weights > 0)
    if not ok.any():
        return None
    v, w = values[ok], weights[ok]
    order = np.argsort(v)
    cw = np.cumsum(w[order])
    return float(v[order][int(np.searchsorted(cw, cw[-1] / 2.0))])


def summarize(tr: Traffic, t0: float, t1: float) -> dict[str, Any]:
    """Requests, failures, rate and estimated percentiles for intervals ending in (t0, t1]."""
    if tr.empty:
        return {"requests": 0, "failures": 0, "rps": None, "p50_ms": None, "p95_ms": None,
                "p99_ms": None}
    m = (tr.t > t0) & (tr.t <= t1 + 1e-9)
    req = float(tr.requests[m].sum())
    fail = float(tr.failures[m].sum())
    dur = t1 - t0
    w = tr.requests[m]
    return {
        "requests": int(req),
        "failures": int(fail),
        "rps": req / dur if dur > 0 and req > 0 else (0.0 if m.any() else None),
        "p50_ms": _weighted_median(tr.p50[m], w),
        "p95_ms": _weighted_median(tr.p95[m], w),
        "p99_ms": _weighted_median(tr.p99[m], w),
    }


def load_stats_totals(rec: Recording) -> dict[str, Any]:
    """Locust's final totals if the run stored them (``load_stats`` event), else {}."""
    events = rec.events("load_stats")
    if not events or not isinstance(events[-1].get("data"), dict):
        return {}
    data = events[-1]["data"]
    total = data.get(TOTAL_ROW, data.get("total", data))
    if not isinstance(total, dict):
        return {}
    out: dict[str, Any] = {}
    for key, names in {
        "p50_ms": ("p50_ms", "p50", "median_ms"),
        "p95_ms": ("p95_ms", "p95"),
        "p99_ms": ("p99_ms", "p99"),
    }.items():
        for n in names:
            v = total.get(n)
            if isinstance(v, (int, float)):
                out[key] = float(v)
                break
    return out
