"""The short summary ``loadmem run`` prints at the end, computed from the recording itself.

Memory "before" is the last recorder tick at or before the load started; "after" is the
last tick of the recording. "used" is MemTotal - MemAvailable (what ``free`` shows as used
with procps-ng >= 4); sum RSS and sum PSS are over the processes with role ``target`` (the
load generator is left out). Request figures come from Locust's own final totals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from loadmem.load.orchestrator import RunResult
from loadmem.presentation.escape import terminal
from loadmem.recording.reader import Recording
from loadmem.units import format_bytes, format_duration


@dataclass
class MemoryPoint:
    t: float
    used: int | None
    sum_rss: int | None
    sum_pss: int | None
    processes: int


def _system_used(rec: Recording) -> list[tuple[float, int | None]]:
    table = rec.table("system", ["t", "MemTotal", "MemAvailable"])
    out = []
    for t, total, avail in zip(*(table.column(c).to_pylist() for c in table.column_names),
                               strict=True):
        used = total - avail if total is not None and avail is not None else None
        out.append((t, used))
    return out


def _target_sums(rec: Recording) -> list[tuple[float, int, int, int]]:
    """Per tick: (t, sum rss, sum pss, count) over role ``target``."""
    table = rec.table("processes", ["t", "tick", "role", "rss", "pss"])
    if table.num_rows == 0:
        return []
    role = table.column("role")
    if pa.types.is_dictionary(role.type):
        role = role.cast(pa.string())
    table = table.filter(pc.equal(role, "target"))
    if table.num_rows == 0:
        return []
    grouped = table.group_by("tick").aggregate(
        [("t", "max"), ("rss", "sum"), ("pss", "sum"), ("tick", "count")]
    ).sort_by("t_max")
    return list(zip(grouped.column("t_max").to_pylist(), grouped.column("rss_sum").to_pylist(),
                    grouped.column("pss_sum").to_pylist(),
                    grouped.column("tick_count").to_pylist(), strict=True))


def _at(points: list[tuple[Any, ...]], t: float | None) -> tuple[Any, ...] | None:
    """The last point at or before ``t`` (the last point overall when ``t`` is None)."""
    if not points:
        return None
    if t is None:
        return points[-1]
    found = None
    for p in points:
        if p[0] <= t:
            found = p
    return found or points[0]


def memory_before_after(rec: Recording, t_load: float | None) -> tuple[MemoryPoint | None,
                                                                       MemoryPoint | None]:
    used, sums = _system_used(rec), _target_sums(rec)
    result = []
    for t in (t_load, None):
        u, s = _at(used, t), _at(sums, t)
        if u is None and s is None:
            result.append(None)
            continue
        result.append(MemoryPoint(
            t=(u or s)[0],  # type: ignore[index]
            used=u[1] if u else None,
            sum_rss=s[1] if s else None,
            sum_pss=s[2] if s else None,
            processes=s[3] if s else 0,
        ))
    return result[0], result[1]


def _delta(a: int | None, b: int | None) -> str:
    return format_bytes(b - a, signed=True) if a is not None and b is not None else "n/a"


def summary_lines(result: RunResult, rec: Recording | None) -> list[str]:
    lines = []
    ph = []
    for p in result.phases:
        dur = (p.t_end - p.t_start) if p.t_end is not None else None
        note = "" if p.reason in ("duration", "done", "shape", None) else f" ({terminal(p.reason)})"
        ph.append(f"{p.phase} {format_duration(dur)}{note}")
    lines.append("phases:   " + (", ".join(ph) or "none"))
    total = next((r for r in result.totals if r.get("name") == "Aggregated"), None)
    if total:
        n, f = int(total.get("requests") or 0), int(total.get("failures") or 0)
        ratio = f / n if n else 0.0
        p95 = total.get("p95_ms")
        p99 = total.get("p99_ms")
        rps = total.get("rps")
        lines.append(
            f"requests: {n:,}" + (f" ({rps:,.0f}/s)" if rps else "")
            + f", failures {f:,} ({ratio:.2%})"
            + (f", p95 {p95:g} ms" if p95 is not None else "")
            + (f", p99 {p99:g} ms" if p99 is not None else "")
        )
    elif any(p.phase == "load" for p in result.phases):
        lines.append("requests: none recorded")
    if rec is not None and result.recorded:
        t_load = next((p.t_start for p in result.phases if p.phase == "load"), None)
        before, after = memory_before_after(rec, t_load)
        if before and after:
            lines.append(f"memory:   {'':16}{'before load':>12}{'at end':>12}{'change':>12}")
            for name, attr in (("used (system)", "used"), ("sum RSS", "sum_rss"),
                               ("sum PSS", "sum_pss")):
                a, b = getattr(before, attr), getattr(after, attr)
                lines.append(f"          {name:<16}{format_bytes(a):>12}{format_bytes(b):>12}"
                             f"{_delta(a, b):>12}")
            lines.append(f"          (sums over {after.processes} target processes; "
                         "used = MemTotal - MemAvailable)")
            if not after.processes:
                lines.append("          (no target process was found: check --target/--watch-*)")
    for w in result.warnings:
        lines.append(f"warning:  {terminal(w)}")
    return lines
