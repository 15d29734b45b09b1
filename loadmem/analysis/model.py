"""What analysis produces: findings with evidence, and named key figures.

This is the contract between the analyzer (``loadmem.analysis``), the reporters
(``loadmem.presentation``) and the gates (``loadmem.gates``): reporters and gates read these
values and never recompute them.

Key figures (``Analysis.figures``) have stable dotted names, documented in
``docs/analysis.md``; units are in the name's suffix: ``_bytes``, ``_s``, ``_ms``,
``_bytes_per_s``, ``_ratio`` (a fraction), or none for counts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Severity = Literal["ok", "info", "warning", "critical"]
SEVERITIES: tuple[Severity, ...] = ("ok", "info", "warning", "critical")


def severity_rank(s: str) -> int:
    return SEVERITIES.index(s)


@dataclass(frozen=True)
class Window:
    """The stretch of the recording a verdict is about (``t`` seconds since start)."""

    name: str  # "observe", "load", "baseline", "whole", "custom"
    t_start: float
    t_end: float

    @property
    def duration(self) -> float:
        return self.t_end - self.t_start


@dataclass
class Finding:
    """One mechanism the analyzer found (or ruled out), with its numbers."""

    id: str  # stable: cow-unsharing, rss-growth, page-cache, shmem, kernel-slab, ...
    severity: Severity
    statement: str  # one sentence, numbers with units
    explained_bytes: float | None = None  # how much of the window's change it explains
    t_start: float | None = None  # where it starts (for annotations)
    t_end: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)  # name -> number (units in name)
    series: list[str] = field(default_factory=list)  # table.column it rests on

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Analysis:
    """Everything ``loadmem analyze`` says about one recording."""

    recording: str  # path
    label: str | None
    window: Window
    headline: str  # the verdict, one or two sentences
    findings: list[Finding]
    figures: dict[str, float | None]  # named key figures, see module docstring
    phases: list[dict[str, Any]] = field(default_factory=list)  # per phase summary rows
    processes: list[dict[str, Any]] = field(default_factory=list)  # per process summary rows
    meta: dict[str, Any] = field(default_factory=dict)  # the recording's meta.json
    notes: list[str] = field(default_factory=list)  # data problems the reader should know
    #: the container view (``container.ContainerView.to_dict()``) when the watched processes
    #: share a memory cgroup that is a container, was selected, or has a limit
    container: dict[str, Any] | None = None
    #: where memory was unshared or grew, mapping kind by kind, with each group's runtime
    #: and documented remedy (``attribution.Attribution.to_dict()``), when the recording
    #: has two per-mapping snapshots around the window
    attribution: dict[str, Any] | None = None

    @property
    def severity(self) -> Severity:
        worst: Severity = "ok"
        for f in self.findings:
            if severity_rank(f.severity) > severity_rank(worst):
                worst = f.severity
        return worst

    def finding(self, id: str) -> Finding | None:
        return next((f for f in self.findings if f.id == id), None)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["severity"] = self.severity
        return d
