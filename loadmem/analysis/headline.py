"""The headline: what used memory did over the window, and the verdict sentence."""

from __future__ import annotations

from typing import Any

from loadmem.analysis import detectors as det
from loadmem.analysis.model import Finding, Severity, severity_rank
from loadmem.units import format_bytes, format_duration


def drain_finding(ctx: det.Context, unexplained: float | None) -> Finding:
    """The headline: used and free memory against the watched processes' RSS."""
    used, rss = ctx.system.get("used"), ctx.group.get("rss")
    d_used = used.delta if used else None
    where = {
        "observe": "after load" if ctx.sharing.get("after_load") is not None
        else "in the observe phase",
        "whole": "over the whole recording",
        "custom": "in the chosen window",
    }.get(ctx.window.name, f"in the {ctx.window.name} phase")
    dur = format_duration(ctx.window.duration)
    if rss is not None and rss.delta is not None and rss.start:
        rel = rss.delta / rss.start
        how = ("stayed flat" if abs(rel) < 0.01 else "barely moved" if abs(rel) < 0.05
               else "grew" if rel > 0 else "fell")
        n = ctx.watched_count
        rss_txt = (
            f"the RSS of the {n} watched process{'es' if n != 1 else ''} {how} "
            f"({100 * rel:+.1f}%, {format_bytes(rss.delta, signed=True)})"
        )
        pss = ctx.group.get("pss")
        if pss is not None and pss.delta is not None:
            rss_txt += (f" and {'its' if n == 1 else 'their'} PSS moved "
                        f"{format_bytes(pss.delta, signed=True)}")
    else:
        rss_txt = "no watched process was recorded"
    sev: Severity = "ok"
    if d_used is None:
        statement = "Used memory could not be measured (no MemTotal/MemAvailable samples)."
    elif used is not None and used.significant(det.DRAIN_MIN, det.NOISE_K):
        verb = "rose" if d_used > 0 else "fell"
        rate = f"{format_bytes(used.rate, signed=True)}/s, " if used.rate else ""
        statement = (
            f"Used memory {verb} {format_bytes(abs(d_used))} in {dur} {where} "
            f"({rate}free memory {format_bytes(ctx.d('MemFree'), signed=True)}) "
            f"while {rss_txt}."
        )
        if d_used > 0:
            sev = "info"
            big = max(512 * det.MiB, 0.10 * (ctx.mem_total or 0))
            if unexplained is not None and unexplained >= big:
                sev = "warning"
    else:
        statement = (
            f"Used memory stayed flat in {dur} {where} "
            f"({format_bytes(d_used, signed=True)}, within noise) while {rss_txt}."
        )
    ev: dict[str, Any] = {
        "used.delta_bytes": d_used,
        "used.rate_bytes_per_s": used.rate if used else None,
        "used.noise_bytes": used.noise if used else None,
        "unexplained.delta_bytes": unexplained,
    }
    ev.update(det.evidence(ctx, "MemAvailable", "MemFree"))
    ev.update(det.evidence(ctx, "rss", "pss", source="group"))
    return Finding("memory-drain", sev, statement, None, ctx.window.t_start, ctx.window.t_end,
                   ev, ["system.MemTotal", "system.MemAvailable", "system.MemFree",
                        "processes.rss"])


def headline(drain: Finding, findings: list[Finding]) -> str:
    causes = [
        f for f in findings
        if f.id not in ("memory-drain", "recorder-footprint") and f.severity != "ok"
    ]
    causes.sort(key=lambda f: (-severity_rank(f.severity), -(abs(f.explained_bytes or 0))))
    if not causes:
        return drain.statement + " No memory mechanism stood out above the noise."
    named = ", ".join(
        f"{f.id} ({f.severity}"
        + (f", {format_bytes(f.explained_bytes, signed=True)}" if f.explained_bytes else "")
        + ")"
        for f in causes[:3]
    )
    rest = drain.evidence.get("unexplained.delta_bytes")
    tail = ""
    if drain.severity != "ok" and rest is not None and abs(rest) >= det.DRAIN_MIN:
        tail = f"; unexplained remainder {format_bytes(rest, signed=True)}"
    return f"{drain.statement} Findings: {named}{tail}."
