"""Compare releases: the key figures of several recordings side by side, with noise.

Recordings are split in two sides: the first ``base_count`` are the base (the last
release), the rest the new side. Several recordings on a side are repeats of one
release: their spread is the best noise estimate. For every figure of the metric catalogue
(``loadmem.analysis.figures``) the comparison gives each recording's value, the change of the
side means (absolute and relative), the noise, and a verdict:

- ``within noise``: |change| <= noise (never for a count of events that must not happen,
  ``Metric.events``: OOM kills, failed requests; any increase of those is ``worse``);
- ``better`` / ``worse``: beyond the noise, in the figure's direction of "better";
- ``changed``: beyond the noise for a figure with no better direction (page cache, counts);
- ``n/a``: a side lacks the figure.

Noise = the largest of: the spread of repeats on either side; 3 x sqrt(2) x the baseline
sigma of the series the figure is made of (``loadmem.compare.noise``; plus, for system-wide
figures, what the rest of the machine did: |Δ used - Δ watched PSS|, largest per side,
summed over the two sides); 3 x
the uncertainty of the request-interval means; and a floor per unit (e.g. 4 MiB, 1 ms,
1 point of a ratio, or a few % of the base value).

A figure is a **regression** when it is ``worse``, its scope is the service (watched
processes, system, load; not the recorder's own cost) and the change exceeds its allowance:
the per-figure budget from the config's ``[compare] budgets``, else ``fail_on_regression``
(relative to the base value; none for the counts of events that must not happen: any
increase of those is a regression). Without allowances nothing is a regression and the exit code
is 0: comparing is then informative only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from loadmem.analysis.analyze import analyze_with_series
from loadmem.analysis.figures import (
    BY_NAME,
    METRICS,
    Metric,
    analysis_figures,
    format_value,
    lookup,
)
from loadmem.compare.noise import RecordingNoise, recording_noise
from loadmem.errors import EXIT_FINDING, EXIT_OK, LoadmemError
from loadmem.gates.config import RegressionBudget
from loadmem.recording.reader import Recording, open_recording

#: Smallest change that counts, per unit: (absolute, fraction of the base value).
NOISE_FLOORS: dict[str, tuple[float, float]] = {
    "bytes": (4 * 2**20, 0.02),
    "bytes_per_s": (64 * 2**10, 0.05),
    "s": (1.0, 0.10),
    "ms": (1.0, 0.05),
    "ratio": (0.01, 0.02),
    "rps": (0.5, 0.05),
    "count": (1.0, 0.05),
}
K = 3.0  # sigmas
GATED_SCOPES = ("watched", "system", "load")


@dataclass
class RecordingSummary:
    """What the comparison needs from one recording (built by ``summarise``)."""

    path: str
    label: str | None
    side: str  # "base" | "new"
    figures: dict[str, float | None]
    noise: RecordingNoise
    headline: str = ""
    schema_version: int = 0
    started: str | None = None

    @property
    def name(self) -> str:
        return self.label or Path(self.path).name


@dataclass
class FigureChange:
    metric: Metric
    values: list[float | None]  # one per recording, in order
    base: float | None
    new: float | None
    delta: float | None
    relative: float | None  # delta / |base|; None when |base| is within the noise
    noise: float
    noise_source: str
    verdict: str
    allowance: float | None = None  # how much worse it may get (absolute)
    allowance_text: str = ""
    regression: bool = False

    def describe(self) -> str:
        m = self.metric
        rel = f", {self.relative * 100:+.0f}%" if self.relative is not None else ""
        return (
            f"{m.name} {m.format_change(self.delta)}{rel} "
            f"({m.format(self.base)} -> {m.format(self.new)}, "
            f"noise ±{format_value(m.unit, self.noise, plain=m.plain)})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric.name,
            "unit": self.metric.unit,
            "better": self.metric.better,
            "scope": self.metric.scope,
            "values": self.values,
            "base": self.base,
            "new": self.new,
            "delta": self.delta,
            "relative": self.relative,
            "noise": self.noise,
            "noise_source": self.noise_source,
            "verdict": self.verdict,
            "allowance": self.allowance,
            "regression": self.regression,
        }


@dataclass
class Comparison:
    recordings: list[RecordingSummary]
    changes: list[FigureChange]
    fail_on_regression: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def base(self) -> list[RecordingSummary]:
        return [r for r in self.recordings if r.side == "base"]

    @property
    def new(self) -> list[RecordingSummary]:
        return [r for r in self.recordings if r.side == "new"]

    @property
    def regressions(self) -> list[FigureChange]:
        return [c for c in self.changes if c.regression]

    @property
    def exit_code(self) -> int:
        return EXIT_FINDING if self.regressions else EXIT_OK

    def change(self, metric: str) -> FigureChange | None:
        """The change of a figure, by its name or an alias."""
        m = lookup(metric)
        name = m.name if m is not None else metric
        return next((c for c in self.changes if c.metric.name == name), None)

    def headline(self) -> str:
        """One line: the regressions (or worse figures) first, three at most; else what got
        better, the drain figures a fix improves first."""
        worse = _by_priority([c for c in self.changes
                              if c.verdict == "worse" and c.metric.scope in GATED_SCOPES])
        better = _by_priority([c for c in self.changes
                               if c.verdict == "better" and c.metric.scope in GATED_SCOPES])
        regressions = _by_priority(self.regressions)
        for items, what in ((regressions, "regression(s)"),
                            (worse, "figure(s) worse beyond noise")):
            if items:
                more = f"; and {len(items) - 3} more" if len(items) > 3 else ""
                return f"{len(items)} {what}: " + "; ".join(
                    c.describe() for c in items[:3]) + more
        tool = [c for c in self.changes
                if c.verdict == "worse" and c.metric.scope not in GATED_SCOPES]
        extra = (f" (the recorder's own cost changed: "
                 f"{', '.join(c.metric.name for c in tool)})" if tool else "")
        if better:
            more = f"; and {len(better) - 3} more" if len(better) > 3 else ""
            return (f"no figure of the service worse beyond noise; {len(better)} better: "
                    + "; ".join(c.describe() for c in better[:3]) + more + extra)
        return f"no figure of the service changed beyond noise{extra}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "recordings": [
                {"path": r.path, "label": r.label, "side": r.side, "headline": r.headline,
                 "noise_window": r.noise.window, "schema_version": r.schema_version}
                for r in self.recordings
            ],
            "fail_on_regression": self.fail_on_regression,
            "headline": self.headline(),
            "regressions": [c.metric.name for c in self.regressions],
            "exit_code": self.exit_code,
            "figures": [c.to_dict() for c in self.changes],
            "notes": self.notes,
        }


#: Figures that say most about a service, listed first in headlines: events that must not
#: happen, the drain figures a copy-on-write fix improves, then growth, then the load.
HEADLINE_ORDER = (
    "cgroup.oom_kills", "requests.failures",
    "cow.unshared_bytes", "window.used_delta_bytes", "watched.pss_delta_bytes",
    "growth.bytes", "watched.pss_end_bytes", "workers.pss_per_worker_end_bytes",
    "sharing_ratio.end", "watched.rss_delta_bytes", "requests.failure_ratio", "latency.p95_ms",
    "requests.rps",
)


def _by_priority(changes: list[FigureChange]) -> list[FigureChange]:
    def key(c: FigureChange) -> int:
        name = c.metric.name
        return HEADLINE_ORDER.index(name) if name in HEADLINE_ORDER else len(HEADLINE_ORDER)

    return sorted(changes, key=key)


def _clean(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _figure_noise(
    metric: Metric, base_vals: list[float | None], new_vals: list[float | None],
    recs: Sequence[RecordingSummary], base_value: float | None,
) -> tuple[float, str]:
    """The noise of one figure and where the estimate came from."""
    if metric.events:
        # OOM kills, failed requests: events that must not happen are never noise
        return 0.0, "none: a count of events that must not happen"
    candidates: list[tuple[float, str]] = []
    for vals in (base_vals, new_vals):
        v = [x for x in vals if x is not None]
        if len(v) >= 2:
            candidates.append((max(v) - min(v), f"spread of {len(v)} repeats"))
    noises = [r.noise for r in recs]
    if metric.unit == "bytes_per_s" and metric.scope in ("system", "watched"):
        # A rate over the window is a change over the window divided by its length: it
        # inherits the noise of the byte figures (floor included), per second.
        durations = [d for r in recs if (d := _clean(r.figures.get("window.duration_s")))]
        as_bytes = replace(metric, unit="bytes", name=metric.name + "(as bytes)")
        byte_noise, source = _figure_noise(as_bytes, [], [], recs, None)
        if durations:
            amount = byte_noise / max(min(durations), 1.0)
            if metric.scope == "system":
                # a step made by another process gives a steep slope over a short window:
                # allow for the part of the system slope the watched group does not explain
                amount += _per_side_max(recs, _rest_rate)
            candidates.append((amount, source + " per second"))
    if metric.unit == "bytes" and metric.scope in ("system", "watched"):
        if metric.scope == "system":
            sigmas = [n.used_bytes for n in noises]
        else:
            sigmas = [max(n.pss_bytes or 0.0, n.rss_bytes or 0.0) for n in noises]
        sig = max((s for s in sigmas if s is not None), default=None)
        if sig is not None:
            amount = K * math.sqrt(2) * sig
            source = noises[0].window
            if metric.scope == "system" and metric.name != "other_processes.delta_bytes":
                rest = _per_side_max(recs, _rest_of_machine)
                if rest:
                    amount += rest
                    source += " + rest of the machine"
            candidates.append((amount, source))
    if metric.scope == "load":
        req_sig = [n.request[metric.name] for n in noises if metric.name in n.request]
        if req_sig:
            candidates.append((K * math.sqrt(sum(s * s for s in req_sig)), "load intervals"))
        if metric.name == "requests.failure_ratio":
            totals = [t for r in recs if (t := _clean(r.figures.get("requests.total")))]
            p = base_value or 0.0
            if totals and min(totals) > 0:
                candidates.append(
                    (K * math.sqrt(max(p * (1 - p), 1e-12) * 2 / min(totals)), "binomial")
                )
    if metric.unit == "ratio" and metric.scope == "watched":
        # Ratios of the watched group's memory inherit the noise of their byte figures.
        denominators = [d for r in recs if (d := _ratio_denominator(metric.name, r.figures))]
        if denominators:
            bytes_metric = "watched.rss_delta_bytes" if "rss" in metric.name else \
                "watched.pss_delta_bytes"
            byte_noise, source = _figure_noise(BY_NAME[bytes_metric], [], [], recs, None)
            candidates.append((byte_noise / min(denominators), source + " (as a ratio)"))
    absolute, relative = NOISE_FLOORS.get(metric.unit, (0.0, 0.0))
    floor = max(absolute, relative * abs(base_value or 0.0))
    best = max(candidates, default=(0.0, "floor"), key=lambda c: c[0])
    return (best if best[0] >= floor else (floor, "floor"))


def _rest_of_machine(figures: dict[str, float | None]) -> float:
    """How much system used memory moved for reasons other than the watched processes.

    |Δ used - Δ watched PSS| (what the service did not cause), or at least |Δ of unwatched
    processes| or |the unexplained remainder| (which also takes the kernel's own tables
    out, so it can be a little larger): on a shared machine a system-wide figure cannot be
    more precise than this.
    """
    used = _clean(figures.get("window.used_delta_bytes"))
    pss = _clean(figures.get("watched.pss_delta_bytes"))
    parts = [abs(v) for name in ("other_processes.delta_bytes", "unexplained.delta_bytes")
             if (v := _clean(figures.get(name))) is not None]
    if used is not None and pss is not None:
        parts.append(abs(used - pss))
    return max(parts, default=0.0)


def _per_side_max(recs: Sequence[RecordingSummary],
                  f: Callable[[dict[str, float | None]], float]) -> float:
    """Sum over the two sides of the largest ``f(figures)``: the machine may have pushed the
    base one way and the new side the other, so the two contributions add up."""
    total = 0.0
    for side in ("base", "new"):
        total += max((f(r.figures) for r in recs if r.side == side), default=0.0)
    return total


def _rest_rate(figures: dict[str, float | None]) -> float:
    """|system used slope - watched PSS change per second|: the rest of the machine's rate."""
    rate = _clean(figures.get("window.used_rate_bytes_per_s"))
    pss = _clean(figures.get("watched.pss_delta_bytes"))
    duration = _clean(figures.get("window.duration_s"))
    if rate is None or pss is None or not duration:
        return 0.0
    return abs(rate - pss / duration)


def _ratio_denominator(name: str, figures: dict[str, float | None]) -> float | None:
    """The byte figure a watched-group ratio is divided by, for scaling the byte noise."""
    if name.endswith("_growth_ratio"):
        kind = "rss" if "rss" in name else "pss"
        start = _clean(figures.get(f"watched.{kind}_start_bytes"))
        if start is not None:
            return start
        end, delta = (_clean(figures.get(f"watched.{kind}_{x}_bytes")) for x in ("end", "delta"))
        return end - delta if end is not None and delta is not None and end > delta else None
    return _clean(figures.get("watched.rss_end_bytes"))


def _verdict(metric: Metric, delta: float | None, noise: float) -> str:
    if delta is None:
        return "n/a"
    if abs(delta) <= noise:
        return "within noise"
    if metric.better == "neutral":
        return "changed"
    up_is_bad = metric.better == "lower"
    return "worse" if (delta > 0) == up_is_bad else "better"


def compare(
    recordings: Sequence[RecordingSummary],
    fail_on_regression: float | None = None,
    budgets: dict[str, RegressionBudget] | None = None,
) -> Comparison:
    """Compare summaries (sides already assigned). Pure: no I/O."""
    budgets = budgets or {}
    base_recs = [r for r in recordings if r.side == "base"]
    new_recs = [r for r in recordings if r.side == "new"]
    if not base_recs or not new_recs:
        raise LoadmemError("compare needs at least one recording on each side",
                           "give BASE and NEW recordings; --base N sets how many are base")
    changes: list[FigureChange] = []
    for metric in METRICS:
        values = [_clean(r.figures.get(metric.name)) for r in recordings]
        if all(v is None for v in values):
            continue
        base_vals = [_clean(r.figures.get(metric.name)) for r in base_recs]
        new_vals = [_clean(r.figures.get(metric.name)) for r in new_recs]
        base, new = _mean(base_vals), _mean(new_vals)
        delta = new - base if base is not None and new is not None else None
        noise, source = _figure_noise(metric, base_vals, new_vals, recordings, base)
        # a change relative to a base that is itself within the noise means nothing
        relative = (delta / abs(base) if delta is not None and base and abs(base) > noise
                    else None)
        verdict = _verdict(metric, delta, noise)
        change = FigureChange(metric, values, base, new, delta, relative, noise, source, verdict)
        budget = budgets.get(metric.name)
        if budget is not None:
            if budget.absolute is not None:
                change.allowance = budget.absolute
            elif budget.relative is not None:
                change.allowance = budget.relative * abs(base or 0.0)
            change.allowance_text = budget.text
        elif fail_on_regression is not None and metric.events:
            # a percentage of zero OOM kills allows none, and one more of them is never
            # "within 10 %": any increase of such a count is a regression
            change.allowance = 0.0
            change.allowance_text = "none (events that must not happen)"
        elif fail_on_regression is not None:
            change.allowance = fail_on_regression * abs(base or 0.0)
            change.allowance_text = f"{fail_on_regression * 100:g}%"
        change.regression = (
            verdict == "worse"
            and metric.scope in GATED_SCOPES
            and change.allowance is not None
            and delta is not None
            and abs(delta) > change.allowance
        )
        changes.append(change)
    return Comparison(list(recordings), changes, fail_on_regression)


def summarise(path: str | Path, side: str, analysis_window: str | None = None,
              recording: Recording | None = None) -> RecordingSummary:
    """Analyse one recording and estimate its noise (from the analysis' own series)."""
    rec = recording if recording is not None else open_recording(path)
    result = analyze_with_series(rec, window=analysis_window)
    analysis = result.analysis
    return RecordingSummary(
        path=str(rec.path),
        label=rec.label,
        side=side,
        figures=analysis_figures(analysis),
        noise=recording_noise(rec, result.series),
        headline=analysis.headline,
        schema_version=rec.schema_version,
        started=rec.meta.get("start_utc") or rec.meta.get("started"),
    )


def compare_recordings(
    paths: Sequence[str | Path],
    base_count: int = 1,
    fail_on_regression: float | None = None,
    budgets: dict[str, RegressionBudget] | None = None,
) -> Comparison:
    """Open, check schema versions, analyse and compare recordings (base side first)."""
    if len(paths) < 2:
        raise LoadmemError("compare needs at least two recordings", "loadmem compare BASE NEW")
    if not 1 <= base_count < len(paths):
        raise LoadmemError(
            f"--base {base_count} leaves no recording on one side ({len(paths)} given)",
            f"use --base between 1 and {len(paths) - 1}",
        )
    recs = [open_recording(p) for p in paths]
    versions = {r.schema_version for r in recs}
    if len(versions) > 1:
        listing = ", ".join(f"{r.path.name} (v{r.schema_version})" for r in recs)
        raise LoadmemError(
            f"recordings use different schema versions: {listing}",
            "compare recordings written by the same loadmem schema version",
        )
    summaries = [
        summarise(r.path, "base" if i < base_count else "new", recording=r)
        for i, r in enumerate(recs)
    ]
    result = compare(summaries, fail_on_regression, budgets)
    for r in recs:
        result.notes += [f"{r.path.name}: {n}" for n in r.notes]
    return result
