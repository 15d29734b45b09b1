"""Comparisons as a terminal table, Markdown (for CI summaries) and JSON. Never recompute."""

from __future__ import annotations

import json
from typing import TextIO

from loadmem.analysis.figures import format_value
from loadmem.compare.comparison import Comparison, FigureChange
from loadmem.presentation.escape import markdown, terminal

_VERDICT_ICON = {"better": "🟢", "worse": "🔴", "within noise": "⚪", "changed": "🔵", "n/a": ""}


def _columns(comp: Comparison) -> list[str]:
    return [f"{r.side}:{terminal(r.name)}" for r in comp.recordings]


def _row(c: FigureChange) -> list[str]:
    m = c.metric
    rel = f"{c.relative * 100:+.1f}%" if c.relative is not None else "—"
    verdict = c.verdict.upper() + (" REGRESSION" if c.regression else "") \
        if c.verdict == "worse" else c.verdict
    return [
        m.name,
        *[m.format(v) for v in c.values],
        m.format_change(c.delta),
        rel,
        "±" + format_value(m.unit, c.noise, plain=m.plain),
        verdict,
    ]


def render_text(comp: Comparison, stream: TextIO) -> None:
    """Verdict first, then one row per figure."""
    stream.write(f"loadmem compare: {terminal(comp.headline())}\n")
    for r in comp.recordings:
        stream.write(f"  {r.side:<4} {terminal(r.name)}: {terminal(r.path)} "
                     f"(noise from {r.noise.window})\n")
    header = ["figure", *_columns(comp), "change", "rel", "noise", "verdict"]
    rows = [header, *[_row(c) for c in comp.changes]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for i, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            cell.rjust(widths[j + 1]) for j, cell in enumerate(row[1:-1])
        ] + [row[-1]]
        stream.write("  " + "  ".join(cells).rstrip() + "\n")
        if i == 0:
            stream.write("  " + "  ".join("-" * w for w in widths).rstrip() + "\n")
    if comp.fail_on_regression is not None or any(c.allowance is not None for c in comp.changes):
        word = "FAILED" if comp.regressions else "passed"
        stream.write(f"regression check {word}: {len(comp.regressions)} regression(s)\n")
    for note in comp.notes:
        stream.write(f"note: {terminal(note)}\n")


def render_markdown(comp: Comparison, stream: TextIO) -> None:
    icon = "❌" if comp.regressions else "✅"
    stream.write(f"### {icon} loadmem compare\n\n{markdown(comp.headline(), line_start=True)}\n\n")
    header = ["figure", *_columns(comp), "change", "rel", "noise", "verdict"]
    stream.write("| " + " | ".join(markdown(h) for h in header) + " |\n")
    stream.write("|---|" + "---:|" * (len(header) - 2) + "---|\n")
    for c in comp.changes:
        row = _row(c)
        row[0] = f"`{row[0]}`"
        row[-1] = f"{_VERDICT_ICON.get(c.verdict, '')} {row[-1]}".strip()
        stream.write("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |\n")
    stream.write("\n")


def render_json(comp: Comparison, stream: TextIO) -> None:
    json.dump(comp.to_dict(), stream, indent=2, default=float)
    stream.write("\n")
