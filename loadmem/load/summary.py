"""The short summary ``loadmem run`` prints at the end, read from the run's analysis.

Memory figures are the analysis' own key figures (``loadmem.analysis.figures``), printed by
the figure catalogue's formatter, so the summary, ``loadmem analyze``, ``loadmem ls``, the
plot and the report show the same numbers for one recording: "before load" and "at end" are
the levels when the analysed window opens (just before the load) and at its end, "change"
is the change of the same processes (the ones present at both ends); processes that
appeared or exited in between are accounted on their own line. "used" is MemTotal -
MemAvailable (what ``free`` shows as used with procps-ng >= 4); the load generator is left
out. Request figures come from Locust's own final totals.
"""

from __future__ import annotations

from loadmem.analysis.figures import format_figure
from loadmem.analysis.model import Analysis
from loadmem.load.orchestrator import RunResult
from loadmem.units import format_duration

#: Rows of the memory table: label, figure at the start, at the end, change.
MEMORY_ROWS = (
    ("used (system)", "window.used_start_bytes", "window.used_end_bytes",
     "window.used_delta_bytes"),
    ("sum RSS", "watched.rss_start_bytes", "watched.rss_end_bytes", "watched.rss_delta_bytes"),
    ("sum PSS", "watched.pss_start_bytes", "watched.pss_end_bytes", "watched.pss_delta_bytes"),
)


def _count(analysis: Analysis, name: str) -> int:
    v = analysis.figures.get(name)
    return int(v) if v is not None else 0


def memory_lines(analysis: Analysis) -> list[str]:
    """The memory table of the summary (empty when the analysis has no used memory)."""
    f = analysis.figures
    if f.get("window.used_delta_bytes") is None:
        return []
    start_label = "before load" if analysis.window.name == "load+observe" else "at start"
    lines = [f"memory:   {'':16}{start_label:>12}{'at end':>12}{'change':>12}"]
    for label, a, b, d in MEMORY_ROWS:
        if f.get(a) is None and f.get(b) is None:
            continue
        lines.append(f"          {label:<16}{format_figure(a, f.get(a)):>12}"
                     f"{format_figure(b, f.get(b)):>12}{format_figure(d, f.get(d)):>12}")
    n, same = _count(analysis, "watched.count"), _count(analysis, "watched.same_count")
    appeared, exited = (_count(analysis, "processes.appeared_count"),
                        _count(analysis, "processes.exited_count"))
    if not appeared and not exited:
        lines.append(f"          (sums over {n} target processes, the same at both ends; "
                     "used = MemTotal - MemAvailable)")
    else:
        def rss(name: str) -> str:
            return format_figure(name, f.get(name))

        parts = []
        if appeared:
            parts.append(f"{appeared} appeared (RSS {rss('processes.appeared_rss_bytes')} at "
                         "the end)")
        if exited:
            parts.append(f"{exited} exited (RSS {rss('processes.exited_rss_bytes')} before)")
        lines.append(f"          (change = the {same} target processes present throughout; "
                     + ", ".join(parts) + "; used = MemTotal - MemAvailable)")
    if not n:
        lines.append("          (no target process was found: check --target/--watch-*)")
    return lines


def summary_lines(result: RunResult, analysis: Analysis | None) -> list[str]:
    lines = []
    ph = []
    for p in result.phases:
        dur = (p.t_end - p.t_start) if p.t_end is not None else None
        note = "" if p.reason in ("duration", "done", "shape", None) else f" ({p.reason})"
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
    if analysis is not None and result.recorded:
        lines += memory_lines(analysis)
    for w in result.warnings:
        lines.append(f"warning:  {w}")
    return lines
