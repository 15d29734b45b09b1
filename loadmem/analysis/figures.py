"""The figure catalogue: the contract between the analysis and everything that prints a figure.

Every key figure the analyzer publishes (``Analysis.figures``, see ``docs/analysis.md``) is
listed here once, with its unit (which decides how a budget is parsed and how a value is
printed), its direction of "better" (what a fix produces; ``neutral`` when neither way is
better, e.g. what is still shared, which a fix raises), its scope (the watched processes,
the whole machine, the load, the recorder), friendly aliases (the old ``observe.*`` names
among them) and **the one formatter** every output uses (``format_figure``: text, Markdown,
HTML, JSON text, gates, comparisons). A few figures are derived here from the analyzer's own
(growth as a percentage, the shared fraction of RSS): pure arithmetic on published figures,
never a second analysis.

Declaring the catalogue once keeps the config loader, the evaluator, the comparison, the
reporters and the docs from drifting apart: an unknown metric is an error everywhere, not a
silent no-op, and a figure printed in two outputs reads the same.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from loadmem.units import format_bytes, format_duration

if TYPE_CHECKING:
    from loadmem.analysis.model import Analysis

Unit = Literal["bytes", "bytes_per_s", "s", "ms", "ratio", "count", "rps"]
Better = Literal["lower", "higher", "neutral"]
Scope = Literal["watched", "system", "load", "recorder", "window"]


@dataclass(frozen=True)
class Metric:
    """One published figure. ``name`` is the analyzer's dotted figure name."""

    name: str
    unit: Unit
    better: Better
    scope: Scope
    description: str
    aliases: tuple[str, ...] = ()
    signed: bool = False  # a delta: print with its sign
    derived: bool = False  # computed here from other figures
    plain: bool = False  # a ratio printed as a number (0.33), not a percentage
    #: A count of events that must not happen (OOM kills, failed requests): zero is the
    #: healthy value, so any increase is worse, never noise, and a regression under a
    #: blanket ``--fail-on-regression`` (a percentage of zero kills allows none). Read by
    #: ``loadmem compare`` (verdict, noise, allowance) and the gates (a default ``max 0``).
    events: bool = False

    def format(self, value: float | None) -> str:
        """The one way this figure is printed, in every output (text, Markdown, HTML, JSON
        text fields, gates, comparisons)."""
        return format_value(self.unit, value, signed=self.signed, plain=self.plain)

    def format_change(self, value: float | None) -> str:
        """A change of this figure (always signed), e.g. in a comparison."""
        return format_value(self.unit, value, signed=True, plain=self.plain)


def format_value(unit: str, value: float | None, signed: bool = False,
                 plain: bool = False) -> str:
    """Print a figure in the unit people read it in (MB, %, ms, requests/s)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if unit == "bytes":
        return format_bytes(value, signed=signed)
    if unit == "bytes_per_s":
        return format_bytes(value, signed=signed) + "/s"
    if unit == "s":
        return ("+" if signed and value > 0 else "") + format_duration(value)
    if unit == "ms":
        if abs(value) >= 1000:
            return f"{value / 1000:+.2f} s" if signed else f"{value / 1000:.2f} s"
        return f"{value:+.1f} ms" if signed else f"{value:.1f} ms"
    if unit == "ratio" and plain:
        return f"{value:+.2f}" if signed else f"{value:.2f}"
    if unit == "ratio":
        return f"{value * 100:+.1f}%" if signed else f"{value * 100:.1f}%"
    if unit == "rps":
        return f"{value:+.1f}/s" if signed else f"{value:.1f}/s"
    if float(value).is_integer():
        return f"{int(value):+d}" if signed else f"{int(value)}"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _m(name: str, unit: Unit, better: Better, scope: Scope, description: str,
       *aliases: str, signed: bool = False, derived: bool = False,
       plain: bool = False, events: bool = False) -> Metric:
    if events:
        assert unit == "count" and better == "lower", name
    return Metric(name, unit, better, scope, description, tuple(aliases), signed, derived, plain,
                  events)


METRICS: tuple[Metric, ...] = (
    _m("window.duration_s", "s", "neutral", "window", "length of the analysed window"),
    # system-wide, over the window (load and observe for a run)
    _m("window.used_start_bytes", "bytes", "neutral", "system",
       "system used memory (MemTotal - MemAvailable) when the window opens (before load)"),
    _m("window.used_end_bytes", "bytes", "neutral", "system",
       "system used memory at the end of the window"),
    _m("window.used_delta_bytes", "bytes", "lower", "system",
       "change of system used memory (MemTotal - MemAvailable) over the window",
       "observe.used_delta_bytes", "memory_growth", "used_growth", signed=True),
    _m("window.used_rate_bytes_per_s", "bytes_per_s", "lower", "system",
       "mean rate of that change (change / window length)",
       "observe.used_rate_bytes_per_s", "drain_rate", signed=True),
    _m("window.available_delta_bytes", "bytes", "higher", "system",
       "change of MemAvailable over the window", "observe.available_delta_bytes",
       signed=True),
    _m("window.free_delta_bytes", "bytes", "neutral", "system",
       "change of MemFree over the window (page cache makes it drop harmlessly)",
       "observe.free_delta_bytes", signed=True),
    # the watched processes (role target)
    _m("watched.count", "count", "neutral", "watched", "watched processes at the end"),
    _m("watched.same_count", "count", "neutral", "watched",
       "watched processes present at both ends of the window"),
    _m("watched.rss_start_bytes", "bytes", "neutral", "watched",
       "summed RSS of the watched processes when the window opens"),
    _m("watched.rss_end_bytes", "bytes", "lower", "watched",
       "summed RSS of the watched processes at the end (counts shared pages once per "
       "process)", "rss"),
    _m("watched.pss_start_bytes", "bytes", "neutral", "watched",
       "summed PSS of the watched processes with figures when the window opens"),
    _m("watched.pss_end_bytes", "bytes", "lower", "watched",
       "summed PSS of the watched processes with figures at the end", "pss"),
    _m("watched.rss_delta_bytes", "bytes", "lower", "watched",
       "change of summed RSS over the window, the same processes at both ends",
       "rss_growth", signed=True),
    _m("watched.pss_delta_bytes", "bytes", "lower", "watched",
       "change of summed PSS, the same processes (with figures) at both ends", "pss_growth",
       signed=True),
    _m("watched.uss_delta_bytes", "bytes", "lower", "watched",
       "change of summed USS (private clean + dirty), the same processes", "uss_growth",
       signed=True),
    _m("watched.anon_delta_bytes", "bytes", "lower", "watched",
       "change of summed RssAnon (new anonymous memory), the same processes", signed=True),
    # how well the recorder covered them (its budget), not a figure of the service
    _m("watched.pss_coverage_end_ratio", "ratio", "higher", "recorder",
       "share of the watched processes with PSS figures at the end"),
    _m("processes.appeared_count", "count", "neutral", "watched",
       "watched processes that appeared inside the window"),
    _m("processes.appeared_rss_bytes", "bytes", "neutral", "watched",
       "their summed RSS at the end"),
    _m("processes.appeared_pss_bytes", "bytes", "neutral", "watched",
       "their summed PSS at the end"),
    _m("processes.exited_count", "count", "neutral", "watched",
       "watched processes that exited inside the window"),
    _m("processes.exited_rss_bytes", "bytes", "neutral", "watched",
       "their summed RSS when the window opened"),
    _m("processes.exited_pss_bytes", "bytes", "neutral", "watched",
       "their summed PSS when the window opened"),
    _m("workers.count", "count", "neutral", "watched", "worker processes at the end"),
    _m("workers.pss_end_bytes", "bytes", "lower", "watched",
       "summed PSS of the workers at the end", "workers_pss"),
    _m("workers.pss_per_worker_end_bytes", "bytes", "lower", "watched",
       "PSS per worker at the end", "pss_per_worker"),
    _m("sharing_ratio.baseline", "ratio", "lower", "watched",
       "sum PSS / sum RSS before load (lower = more shared)", plain=True),
    _m("sharing_ratio.after_load", "ratio", "lower", "watched",
       "sum PSS / sum RSS when the load ended", plain=True),
    _m("sharing_ratio.end", "ratio", "lower", "watched",
       "sum PSS / sum RSS at the end (1.00 = nothing shared)", "sharing_ratio", plain=True),
    _m("cow.unshared_bytes", "bytes", "lower", "watched",
       "memory copied by copy-on-write unsharing over the window", "cow_unshared",
       "cow_drain"),
    # what is still shared is what a fix keeps shared: more of it is neither worse nor better
    _m("cow.remaining_bytes", "bytes", "neutral", "watched",
       "sum(Rss - Pss) at the end: still shared, could be unshared later (a fix raises it)",
       "cow_remaining"),
    _m("cow.rate_bytes_per_s", "bytes_per_s", "lower", "watched",
       "current copy-on-write unsharing rate (last half of the window)", "cow_rate"),
    _m("cow.time_to_exhaust_s", "s", "higher", "watched",
       "time until the remaining shared memory is unshared at the current rate"),
    _m("growth.bytes", "bytes", "lower", "watched",
       "what the watched processes hold alone grew by (new anonymous memory, at most their "
       "USS growth)", "growth", "leak"),
    _m("rss.growth_rate_bytes_per_s", "bytes_per_s", "lower", "watched",
       "mean rate of the watched processes' summed RSS change (the same processes)",
       "rss_growth_rate", signed=True),
    _m("page_cache.delta_bytes", "bytes", "neutral", "system",
       "page cache growth (Cached - Shmem + Buffers): benign", signed=True),
    _m("shmem.delta_bytes", "bytes", "lower", "system", "tmpfs / shared memory growth",
       signed=True),
    _m("slab.delta_bytes", "bytes", "lower", "system", "kernel slab growth", signed=True),
    _m("other_processes.delta_bytes", "bytes", "neutral", "system",
       "anonymous memory growth of processes nobody watched", signed=True),
    _m("unexplained.delta_bytes", "bytes", "lower", "system",
       "used memory growth no mechanism explains", signed=True),
    # the load (from the requests table)
    _m("requests.total", "count", "neutral", "load", "requests completed during load"),
    _m("requests.failures", "count", "lower", "load", "failed requests during load",
       "failures", events=True),
    _m("requests.failure_ratio", "ratio", "lower", "load", "failed / total requests",
       "failure_ratio", "error_rate"),
    _m("requests.rps", "rps", "higher", "load", "mean request rate during load", "rps",
       "request_rate"),
    _m("latency.p50_ms", "ms", "lower", "load", "median latency during load", "p50"),
    _m("latency.p95_ms", "ms", "lower", "load", "95th percentile latency during load", "p95"),
    _m("latency.p99_ms", "ms", "lower", "load", "99th percentile latency during load", "p99"),
    # the recorder's own cost
    _m("recorder.cpu_fraction", "ratio", "lower", "recorder",
       "recorder CPU time / wall time"),
    _m("recorder.rss_bytes", "bytes", "lower", "recorder", "recorder RSS"),
    _m("recorder.smaps_max_stall_ms", "ms", "lower", "recorder",
       "longest single smaps_rollup read (the stall it imposed on a target)"),
    _m("watched.pss_growth_ratio", "ratio", "lower", "watched",
       "the same processes' PSS change over the window / their PSS when it opened",
       "pss_growth_pct", "memory_growth_pct", signed=True),
    _m("watched.rss_growth_ratio", "ratio", "lower", "watched",
       "the same processes' RSS change over the window / their RSS when it opened",
       "rss_growth_pct", signed=True),
    # derived here from the figures above
    _m("shared_fraction.end", "ratio", "higher", "watched",
       "1 - sharing_ratio.end: the part of the watched RSS that is still shared",
       "shared_fraction", "sharing", derived=True),
)

PHASES = ("baseline", "load", "observe")
GROUPS = ("master", "worker")

_PHASE_KINDS: tuple[tuple[str, str, Better, Scope], ...] = (
    ("used", "system used memory", "lower", "system"),
    ("rss", "the watched processes' summed RSS", "lower", "watched"),
    ("pss", "the watched processes' summed PSS", "lower", "watched"),
)

#: Per phase and per group figures, from ``Analysis.phases`` / ``Analysis.processes``.
BREAKDOWN: tuple[Metric, ...] = (
    *(
        _m(f"phase.{p}.{kind}_delta_bytes", "bytes", better, scope,
           f"change of {what} during the {p} phase", signed=True, derived=True)
        for p in PHASES
        for kind, what, better, scope in _PHASE_KINDS
    ),
    *(
        _m(f"group.{g}.{kind}_end_bytes", "bytes", "lower", "watched",
           f"summed {kind.upper()} of the {g} process(es) at the end", derived=True)
        for g in GROUPS
        for kind in ("rss", "pss", "uss")
    ),
)
#: The container view (``loadmem/analysis/container.py``): the memory cgroup the watched
#: processes share, as the OOM killer and kubelet see it; absent (null) without one.
CONTAINER: tuple[Metric, ...] = (
    _m("cgroup.usage_bytes.end", "bytes", "lower", "watched",
       "the container's memory cgroup usage at the end (memory.current)", "cgroup_usage"),
    _m("cgroup.working_set_bytes.end", "bytes", "lower", "watched",
       "the container's working set at the end: usage - inactive file (kubelet's)",
       "working_set"),
    _m("cgroup.working_set_delta_bytes", "bytes", "lower", "watched",
       "change of the container's working set over the window", "working_set_growth",
       signed=True),
    _m("cgroup.working_set_rate_bytes_per_s", "bytes_per_s", "lower", "watched",
       "current rate of the working set (Theil-Sen, last half of the window)", signed=True),
    _m("cgroup.limit_bytes", "bytes", "neutral", "watched",
       "the container's effective memory limit (its own or an ancestor's)", "cgroup_limit"),
    _m("cgroup.headroom_fraction.end", "ratio", "higher", "watched",
       "share of the limit not used by the working set at the end", "headroom"),
    _m("cgroup.time_to_limit_s", "s", "higher", "watched",
       "time from the window's end until the working set reaches the limit at the current "
       "rate (null when not growing)", "time_to_limit"),
    _m("cgroup.oom_kills", "count", "lower", "watched",
       "processes the OOM killer killed in the container during the window", "oom_kills",
       events=True),
    _m("cgroup.limit_hits", "count", "lower", "watched",
       "times the container's usage hit its limit during the window (memory.events max, "
       "v1 failcnt)"),
    _m("cgroup.pressure_some_fraction.max", "ratio", "lower", "watched",
       "highest share of time some tasks of the container stalled on memory (PSI avg10, v2)",
       "memory_pressure"),
)
#: Where the copy-on-write unsharing and the growth were, between the two per-mapping
#: snapshots around the window (``loadmem/analysis/attribution.py``), over every target
#: process read in both; null without snapshots.
WHERE: tuple[Metric, ...] = (
    _m("where.unshared_bytes", "bytes", "lower", "watched",
       "PSS gained without new pages between the two per-mapping snapshots (copy-on-write "
       "unsharing), summed over the processes read in both"),
    *(
        _m(f"where.unshared_{kind}_bytes", "bytes", "lower", "watched",
           f"of which in {desc}")
        for kind, desc in (("anon", "anonymous mappings (allocator arenas, runtime heaps)"),
                           ("heap", "[heap] (brk)"),
                           ("data", "programs' and libraries' .data and .bss"),
                           ("stack", "stacks"))
    ),
    _m("where.unshared_anon_ratio", "ratio", "neutral", "watched",
       "share of the unsharing in anonymous mappings"),
    _m("where.grown_bytes", "bytes", "lower", "watched",
       "new resident pages (PSS) between the two snapshots, in mappings old and new"),
)
METRICS = METRICS + BREAKDOWN + CONTAINER + WHERE

BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}
_ALIASES: dict[str, Metric] = {a: m for m in METRICS for a in m.aliases}


def lookup(name: str) -> Metric | None:
    """The metric for a figure name or alias (case-insensitive), or None."""
    key = name.strip()
    return BY_NAME.get(key) or _ALIASES.get(key.lower()) or BY_NAME.get(key.lower())


def event_counts() -> tuple[Metric, ...]:
    """The figures that count events that must not happen (``Metric.events``)."""
    return tuple(m for m in METRICS if m.events)


def format_figure(name: str, value: float | None) -> str:
    """A published figure as every output prints it (its catalogue entry's formatter).
    Raises ``KeyError`` for a name the catalogue does not know: every published figure must
    be catalogued."""
    metric = lookup(name)
    if metric is None:
        raise KeyError(f"figure {name!r} is not in the catalogue (loadmem/analysis/figures.py)")
    return metric.format(value)


def _ratio(delta: float | None, start: float | None) -> float | None:
    if delta is None or start is None or start <= 0:
        return None
    return delta / start


def with_derived(figures: Mapping[str, float | None]) -> dict[str, float | None]:
    """The analyzer's figures plus the ones derived here (None when an input is missing).
    Figures given under an alias (an older analysis' ``observe.*`` names) are also given
    under their catalogue name."""
    out: dict[str, float | None] = {
        k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in figures.items()
    }
    for k in list(out):
        m = lookup(k)
        if m is not None and m.name != k:
            out.setdefault(m.name, out[k])
    for kind in ("pss", "rss"):
        out.setdefault(
            f"watched.{kind}_growth_ratio",
            _ratio(out.get(f"watched.{kind}_delta_bytes"), out.get(f"watched.{kind}_start_bytes")),
        )
    sr = out.get("sharing_ratio.end")
    out.setdefault("shared_fraction.end", None if sr is None else 1.0 - sr)
    return out


def _num(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def analysis_figures(analysis: Analysis) -> dict[str, float | None]:
    """Every figure gates and comparisons know, from one ``Analysis``.

    The analyzer's figures, the derived ratios, and the per-phase / per-group breakdown read
    from ``analysis.phases`` and ``analysis.processes`` (sums only: nothing re-analysed).
    """
    out = with_derived(analysis.figures)
    for row in analysis.phases or []:
        name = row.get("name")
        if name not in PHASES:
            continue
        for kind in ("used", "rss", "pss"):
            start, end = _num(row.get(f"{kind}_start_bytes")), _num(row.get(f"{kind}_end_bytes"))
            out[f"phase.{name}.{kind}_delta_bytes"] = (
                end - start if start is not None and end is not None else None
            )
    processes = analysis.processes or []
    for group in GROUPS:
        rows = [r for r in processes if r.get("group") == group and r.get("role", "target")
                == "target"]
        for kind in ("rss", "pss", "uss"):
            values = [_num(r.get(f"{kind}_end_bytes")) for r in rows]
            known = [v for v in values if v is not None]
            out[f"group.{group}.{kind}_end_bytes"] = sum(known) if known else None
    for m in BREAKDOWN:
        out.setdefault(m.name, None)
    return out
