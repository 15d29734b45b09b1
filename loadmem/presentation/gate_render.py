"""Gate reports as text (terminal), Markdown (``$GITHUB_STEP_SUMMARY``) and JSON.

Renderers take a finished ``GateReport`` and a writable stream and never recompute.
"""

from __future__ import annotations

import json
from typing import TextIO

from loadmem.gates.evaluate import GateReport
from loadmem.presentation.escape import markdown, markdown_code, terminal

_MARK = {"pass": "PASS", "fail": "FAIL", "skip": "SKIP"}
_ICON = {"pass": "✅", "fail": "❌", "skip": "⏭️"}


def render_text(report: GateReport, stream: TextIO) -> None:
    """One line per gate: status, name, measured value, budget; then the summary."""
    title = terminal(report.recording) + (f" ({terminal(report.label)})" if report.label else "")
    stream.write(f"loadmem gates for {title}\n")
    width = max((len(terminal(r.name)) for r in report.results), default=4)
    for r in report.results:
        stream.write(f"  {_MARK[r.status]}  {terminal(r.name):<{width}}  {terminal(r.message)}\n")
    if not report.results:
        stream.write("  (no gates configured)\n")
    stream.write(terminal(report.summary()) + "\n")


def _md_cell(text: str) -> str:
    return markdown(text)


def render_markdown(report: GateReport, stream: TextIO) -> None:
    """A heading with the verdict and a table, as GitHub/GitLab render it."""
    word = "passed" if report.passed else "failed"
    icon = "✅" if report.passed else "❌"
    label = f" — {markdown_code(report.label, table=False)}" if report.label else ""
    stream.write(f"### {icon} loadmem gates {word}{label}\n\n")
    stream.write(f"Recording {markdown_code(report.recording, table=False)}, budgets from "
                 f"{markdown(report.config_source)}.\n\n")
    if report.headline:
        stream.write(f"> {markdown(report.headline, line_start=True)}\n\n")
    stream.write("| | gate | metric | measured | budget | note |\n")
    stream.write("|---|---|---|---:|---:|---|\n")
    for r in report.results:
        op = "≤" if r.comparison == "max" else "≥"
        stream.write(
            f"| {_ICON[r.status]} | {_md_cell(r.name)} | {markdown_code(r.metric)} | "
            f"{_md_cell(r.measured_text)} | {op} {_md_cell(r.budget_text)} | "
            f"{_md_cell(r.message if r.status != 'pass' else '')} |\n"
        )
    stream.write(f"\n{markdown(report.summary())}\n")


def render_json(report: GateReport, stream: TextIO) -> None:
    json.dump(report.to_dict(), stream, indent=2, default=float)
    stream.write("\n")
