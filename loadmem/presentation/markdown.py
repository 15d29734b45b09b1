"""``loadmem analyze --markdown``: a compact report for CI summaries
(e.g. ``>> $GITHUB_STEP_SUMMARY``): verdict, findings, key figures, phases, notes.

Takes an ``Analysis`` and a writable text stream; never recomputes anything.
"""

from __future__ import annotations

from typing import Any, TextIO

from loadmem.analysis.model import Analysis, severity_rank
from loadmem.presentation import mapping_kinds
from loadmem.presentation.escape import markdown
from loadmem.presentation.text import evidence_rows, format_bytes_cell, format_ms
from loadmem.units import format_duration

_ICON = {"ok": "✅", "info": "ℹ️", "warning": "⚠️", "critical": "🛑"}


def _cell(text: Any) -> str:
    return markdown(text)


def render(analysis: Analysis, stream: TextIO) -> None:
    a = analysis
    w = stream.write
    name = a.label or a.recording
    w(f"### loadmem analyze: {_cell(name)}\n\n")
    for e in a.meta.get("selected") or []:  # what --port/--cgroup/... found (meta.json)
        if isinstance(e, dict) and isinstance(e.get("text"), str):
            w(f"watching: {_cell(e['text'])}\n\n")
    w(f"**Verdict: {_ICON[a.severity]} {a.severity}** — {_cell(a.headline)}\n\n")
    w("| severity | finding | statement |\n|---|---|---|\n")
    for f in sorted(a.findings, key=lambda f: -severity_rank(f.severity)):
        w(f"| {_ICON[f.severity]} {f.severity} | `{f.id}` | {_cell(f.statement)} |\n")
    if a.attribution:  # where, by kind of mapping; runtime and remedy (mapping_kinds.py)
        w("\n" + mapping_kinds.markdown(a.attribution))
    w(
        f"\n<details><summary>Key figures ({a.window.name} window, "
        f"{format_duration(a.window.duration)})</summary>\n\n"
    )
    w("| figure | value | name |\n|---|---:|---|\n")
    for label, value, key in evidence_rows(a):
        w(f"| {label} | {value} | `{key}` |\n")
    w("\n</details>\n")
    if a.phases:
        w("\n| phase | length | requests | failures | p95 | Δ used | Δ sum RSS | Δ sum PSS |\n")
        w("|---|---:|---:|---:|---:|---:|---:|---:|\n")
        for p in a.phases:
            cells = [
                p["name"],
                format_duration(p["duration_s"]),
                p.get("requests") or 0,
                p.get("failures") or 0,
                format_ms(p.get("p95_ms")),
                *(format_bytes_cell(_diff(p, k), signed=True) for k in ("used", "rss", "pss")),
            ]
            w("| " + " | ".join(_cell(c) for c in cells) + " |\n")
    if a.notes:
        w("\n**Notes**\n\n")
        for n in a.notes:
            w(f"- {markdown(n, line_start=True)}\n")


def _diff(p: dict[str, Any], what: str) -> float | None:
    s, e = p.get(f"{what}_start_bytes"), p.get(f"{what}_end_bytes")
    return None if s is None or e is None else e - s
