"""Gate evaluation: an ``Analysis`` and gates in, a ``GateReport`` out. No I/O, no printing.

A gate whose figure the analysis could not measure (``None``: e.g. latency on a recording
without load) **fails** by default, with the reason in its message: a budget that silently
stops being checked is worse than a red build. A gate declared with ``missing = "skip"``
is reported as skipped instead and does not fail the report, unless the figure is missing
because the table it comes from is damaged (a file that cannot be read, rows that
``meta.json`` says were written): ``skip`` is for a figure that does not apply, lost data
always fails.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from loadmem.analysis.figures import analysis_figures, format_value
from loadmem.analysis.model import Analysis
from loadmem.errors import EXIT_FINDING, EXIT_OK
from loadmem.gates.config import Gate

Status = Literal["pass", "fail", "skip"]


@dataclass
class GateResult:
    name: str
    metric: str
    measured: float | None
    comparison: str  # "max" | "min"
    budget: float
    passed: bool
    message: str
    status: Status = "pass"
    unit: str = ""
    measured_text: str = ""
    budget_text: str = ""
    margin: float | None = None  # budget - measured for max, measured - budget for min


@dataclass
class GateReport:
    recording: str
    label: str | None
    config_source: str
    results: list[GateResult]
    headline: str = ""  # the analysis verdict, for context
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.status != "fail" for r in self.results)

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.passed else EXIT_FINDING

    @property
    def failed(self) -> list[GateResult]:
        return [r for r in self.results if r.status == "fail"]

    @property
    def skipped(self) -> list[GateResult]:
        return [r for r in self.results if r.status == "skip"]

    def summary(self) -> str:
        n, f, s = len(self.results), len(self.failed), len(self.skipped)
        word = "PASSED" if self.passed else "FAILED"
        extra = f", {s} skipped" if s else ""
        return f"gates {word}: {n - f - s} passed, {f} failed{extra} ({self.config_source})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "recording": self.recording,
            "label": self.label,
            "config": self.config_source,
            "passed": self.passed,
            "exit_code": self.exit_code,
            "headline": self.headline,
            "results": [asdict(r) for r in self.results],
            "notes": list(self.notes),
        }


#: The recording table each scope's figures come from.
TABLE_OF_SCOPE = {"load": "requests", "watched": "processes", "system": "system",
                  "window": "system", "recorder": "recorder"}


def evaluate_gate(gate: Gate, figures: dict[str, float | None],
                  damaged: Mapping[str, str] | None = None) -> GateResult:
    """Compare one figure with its budget; the message carries both numbers. ``damaged``:
    table -> what is wrong with it (``Recording.damage``)."""
    m = gate.metric
    measured = figures.get(m.name)
    op = "<=" if gate.comparison == "max" else ">="
    budget_text = format_value(m.unit, gate.budget)
    base = GateResult(
        name=gate.name, metric=m.name, measured=measured, comparison=gate.comparison,
        budget=gate.budget, passed=False, message="", unit=m.unit,
        measured_text=m.format(measured), budget_text=budget_text,
    )
    if measured is None:
        lost = (damaged or {}).get(TABLE_OF_SCOPE.get(m.scope, ""))
        if lost is not None:
            base.status = "fail"
            base.message = f"{m.name} not measured: its data is damaged ({lost})"
            return base
        why = "not measured in this recording" + (
            " (no load phase / requests table)" if m.scope == "load" else ""
        )
        if gate.missing == "skip":
            base.status, base.passed = "skip", True
            base.message = f"{m.name} {why}: skipped (missing = \"skip\")"
        else:
            base.status = "fail"
            base.message = (
                f"{m.name} {why}: a gate that cannot be measured fails "
                "(set missing = \"skip\" to allow it)"
            )
        return base
    measured = float(measured)
    margin = gate.budget - measured if gate.comparison == "max" else measured - gate.budget
    passed = margin >= 0
    base.measured, base.margin, base.passed = measured, margin, passed
    base.status = "pass" if passed else "fail"
    if passed:
        base.message = f"{m.name} = {base.measured_text} (budget {op} {budget_text})"
    else:
        over = format_value(m.unit, abs(margin))
        verb = "over" if gate.comparison == "max" else "under"
        base.message = (
            f"{m.name} = {base.measured_text}, budget {op} {budget_text}: {over} {verb} budget"
        )
    return base


def evaluate(analysis: Analysis, gates: Iterable[Gate], config_source: str = "",
             damaged: Mapping[str, str] | None = None) -> GateReport:
    """One result per gate, in declaration order."""
    figures = analysis_figures(analysis)
    results = [evaluate_gate(g, figures, damaged) for g in gates]
    return GateReport(
        recording=analysis.recording,
        label=analysis.label,
        config_source=config_source,
        results=results,
        headline=analysis.headline,
        notes=list(analysis.notes),
    )
