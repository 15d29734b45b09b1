"""The terminal report of ``loadmem analyze``: the verdict first, then the evidence.

Takes an ``Analysis`` and a writable text stream; never recomputes anything. Key figures are
printed by the figure catalogue's formatter (``loadmem.analysis.figures.format_figure``), the
same one every other output uses, so a figure reads the same everywhere.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from loadmem.analysis.figures import format_figure, format_value
from loadmem.analysis.model import Analysis, severity_rank
from loadmem.presentation import mapping_kinds
from loadmem.presentation.escape import terminal
from loadmem.units import format_bytes, format_duration


def format_ms(value: Any) -> str:
    """A latency in a table cell, as the catalogue prints latencies."""
    return format_value("ms", value if isinstance(value, (int, float)) else None)

#: Key figures shown in the evidence table, in order, with a human label.
EVIDENCE_FIGURES: tuple[tuple[str, str], ...] = (
    ("window.duration_s", "window length"),
    ("window.used_start_bytes", "used memory (MemTotal - MemAvailable) at the start"),
    ("window.used_end_bytes", "used memory at the end"),
    ("window.used_delta_bytes", "used memory change"),
    ("window.used_rate_bytes_per_s", "used memory, mean rate"),
    ("window.available_delta_bytes", "available memory change"),
    ("window.free_delta_bytes", "free memory change"),
    ("watched.count", "watched processes at the end"),
    ("watched.same_count", "watched processes present throughout"),
    ("watched.rss_start_bytes", "watched sum RSS at the start"),
    ("watched.rss_end_bytes", "watched sum RSS at the end"),
    ("watched.pss_start_bytes", "watched sum PSS at the start"),
    ("watched.pss_end_bytes", "watched sum PSS at the end"),
    ("watched.rss_delta_bytes", "sum RSS change (same processes)"),
    ("watched.pss_delta_bytes", "sum PSS change (same processes)"),
    ("watched.uss_delta_bytes", "sum USS change (same processes)"),
    ("watched.anon_delta_bytes", "anonymous memory change (same processes)"),
    ("watched.pss_coverage_end_ratio", "processes with PSS figures at the end"),
    ("processes.appeared_count", "processes that appeared"),
    ("processes.appeared_rss_bytes", "their RSS at the end"),
    ("processes.appeared_pss_bytes", "their PSS at the end"),
    ("processes.exited_count", "processes that exited"),
    ("processes.exited_rss_bytes", "their RSS when the window opened"),
    ("processes.exited_pss_bytes", "their PSS when the window opened"),
    ("workers.count", "workers at the end"),
    ("workers.pss_per_worker_end_bytes", "PSS per worker at the end"),
    ("sharing_ratio.baseline", "sharing ratio PSS/RSS before load"),
    ("sharing_ratio.after_load", "sharing ratio PSS/RSS after load"),
    ("sharing_ratio.end", "sharing ratio PSS/RSS at the end"),
    ("cow.unshared_bytes", "copy-on-write unshared"),
    ("cow.remaining_bytes", "still shared (could be unshared later)"),
    ("cow.rate_bytes_per_s", "current unsharing rate"),
    ("cow.time_to_exhaust_s", "time until all is unshared"),
    ("growth.bytes", "growth (what the processes hold alone)"),
    ("rss.growth_rate_bytes_per_s", "sum RSS, mean rate (same processes)"),
    ("page_cache.delta_bytes", "page cache (Cached - Shmem + Buffers)"),
    ("shmem.delta_bytes", "Shmem (tmpfs, shared memory)"),
    ("slab.delta_bytes", "kernel slab"),
    ("other_processes.delta_bytes", "other processes (anonymous)"),
    ("unexplained.delta_bytes", "unexplained remainder"),
    ("requests.total", "requests during load"),
    ("requests.failure_ratio", "failure ratio"),
    ("requests.rps", "requests per second"),
    ("latency.p50_ms", "latency p50"),
    ("latency.p95_ms", "latency p95"),
    ("latency.p99_ms", "latency p99"),
    ("recorder.cpu_fraction", "recorder CPU (of one core)"),
    ("recorder.rss_bytes", "recorder RSS"),
    ("recorder.smaps_max_stall_ms", "longest smaps_rollup stall"),
)

#: Labels of the "before load" figures on a recording without a load phase.
NO_LOAD_LABELS = {"sharing_ratio.baseline": "sharing ratio PSS/RSS at the start"}


def evidence_rows(analysis: Analysis) -> list[tuple[str, str, str]]:
    """(label, value, figure name) of every key figure the analysis measured, each value
    printed by the figure catalogue's formatter (the same in every output)."""
    has_load = any(p.get("name") == "load" for p in analysis.phases)
    rows = []
    for key, label in EVIDENCE_FIGURES:
        value = analysis.figures.get(key)
        if value is None:
            continue
        if not has_load:
            label = NO_LOAD_LABELS.get(key, label)
        rows.append((label, format_figure(key, value), key))
    return rows


def format_bytes_cell(value: Any, signed: bool = False) -> str:
    """A size in a table cell (per-phase and per-process figures)."""
    return format_bytes(value, signed=signed) if isinstance(value, (int, float)) else "n/a"


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> list[str]:
    """Plain aligned columns (the last one left to run on)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
    out = []
    for r in [header, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(r, widths, strict=False)]
        out.append("  " + "  ".join([*cells, str(r[-1])]).rstrip())
    return out


def _wrap(text: str, indent: str, width: int = 100, first: str | None = None) -> Iterable[str]:
    return textwrap.wrap(text, width=width, initial_indent=indent if first is None else first,
                         subsequent_indent=indent, break_on_hyphens=False)


def render(analysis: Analysis, stream: TextIO, width: int = 100) -> None:
    """Write the human report: verdict, findings, evidence table, phases, processes, notes."""
    a = analysis
    w = stream.write
    title = f"loadmem analyze {terminal(a.recording)}" + (
        f" [{terminal(a.label)}]" if a.label else "")
    w(title + "\n")
    for e in a.meta.get("selected") or []:  # what --port/--cgroup... found (meta.json)
        if isinstance(e, dict) and isinstance(e.get("text"), str):
            w(f"watching: {terminal(e['text'])}\n")
    w("\n")
    w(f"Verdict: {a.severity.upper()}\n")
    for line in _wrap(terminal(a.headline), "  ", width):
        w(line + "\n")
    w("\nFindings\n")
    findings = sorted(a.findings, key=lambda f: -severity_rank(f.severity))
    for f in findings:
        if f.id == "memory-drain":  # its statement opens the verdict above
            w(f"  [{f.severity}] {f.id}: the verdict above\n")
            continue
        w(f"  [{f.severity}] {f.id}\n")
        for line in _wrap(terminal(f.statement), "      ", width):
            w(line + "\n")
    if a.attribution:  # where, by kind of mapping; runtime and remedy (mapping_kinds.py)
        w("\n" + mapping_kinds.text_block(a.attribution))
    win = a.window
    w(
        f"\nEvidence ({win.name} window, {format_duration(win.t_start)} to "
        f"{format_duration(win.t_end)} after the start)\n"
    )
    for line in table(evidence_rows(a), ("figure", "value", "name")):
        w(line + "\n")
    if a.phases:
        w("\nPhases\n")
        prow = [
            (
                terminal(p["name"]),
                format_duration(p["start_s"]),
                format_duration(p["duration_s"]),
                str(p.get("requests") or 0),
                str(p.get("failures") or 0),
                format_ms(p.get("p95_ms")),
                format_bytes_cell(_diff(p, "used"), signed=True),
                format_bytes_cell(_diff(p, "rss"), signed=True),
                format_bytes_cell(_diff(p, "pss"), signed=True),
            )
            for p in a.phases
        ]
        hdr = (
            "phase",
            "start",
            "length",
            "requests",
            "failures",
            "p95",
            "Δ used",
            "Δ RSS",
            "Δ PSS",
        )
        for line in table(prow, hdr):
            w(line + "\n")
    if a.processes:
        w("\nProcesses (watched and load generator; values at the end of the window, or when "
          "last seen)\n")
        procs = sorted(a.processes, key=lambda p: -(p.get("pss_end_bytes") or 0))
        shown = procs[:15]
        rows2 = [
            (
                str(p["pid"]),
                terminal(p.get("name") or "?"),
                terminal(p.get("group", "")),
                terminal(p.get("role", "")),
                format_bytes_cell(p.get("rss_end_bytes")),
                format_bytes_cell(p.get("pss_end_bytes")),
                format_bytes_cell(p.get("uss_end_bytes")),
                format_bytes_cell(p.get("shared_end_bytes")),
                format_bytes_cell(_pdiff(p, "pss"), signed=True),
                _until(p, a.window.t_end),
            )
            for p in shown
        ]
        hdr2 = ("pid", "name", "group", "role", "RSS", "PSS", "USS", "shared", "Δ PSS",
                "seen until")
        for line in table(rows2, hdr2):
            w(line + "\n")
        if len(procs) > len(shown):
            w(f"  ... and {len(procs) - len(shown)} more (see --json)\n")
    if a.notes:
        w("\nNotes\n")
        for n in a.notes:
            for line in _wrap(terminal(n), "    ", width, first="  - "):
                w(line + "\n")


def _diff(p: dict[str, Any], what: str) -> float | None:
    s, e = p.get(f"{what}_start_bytes"), p.get(f"{what}_end_bytes")
    return None if s is None or e is None else e - s


def _until(p: dict[str, Any], t_end: float) -> str:
    """"end" for a process still there at the end of the window, else when it was last seen
    (its values are from then)."""
    last = p.get("last_s")
    if last is None or last >= t_end - 1.0:
        return "end"
    return format_duration(last)


def _pdiff(p: dict[str, Any], what: str) -> float | None:
    s, e = p.get(f"{what}_baseline_bytes"), p.get(f"{what}_end_bytes")
    return None if s is None or e is None else e - s
