"""``loadmem plot``: one figure that answers "where did the memory go?".

Panels share the time axis, phases are shaded and labelled, findings are annotated:

1. **System memory** (``/proc/meminfo``) drawn as the *change since the start* of the plotted
   range: used (MemTotal - MemAvailable, what ``free`` calls used), free (MemFree) and page
   cache (Cached + Buffers + SReclaimable, ``free``'s buff/cache). A 300 MB drain on a 24 GB
   machine is invisible on an absolute axis that has to reach MemTotal, so the levels at the
   start are given in the legend and MemTotal is drawn as a ceiling line only when it falls
   near the data; otherwise a note in the panel says how far above the scale it is.
2. **RSS of the watched processes, stacked by group** (master, workers, other): the view
   operators know from ``top``. Flat when the drain is copy-on-write.
3. **The truth panel**: private (USS) and shared pages stacked (their sum is the RSS from
   smaps_rollup), with sum RSS, sum PSS and sum USS as lines. Copy-on-write unsharing shows
   as the private band growing into the shared one while the top edge stays flat.
4. **Load** (only when the recording has a ``requests`` table): requests/s, failures/s and
   users; then **latency** (p95, ms).

Long recordings are reduced with min/max envelopes (``downsample.py``), never by dropping
extremes. Colours are the Okabe-Ito palette (safe for colour blindness) and every series also
differs by line style or hatch, so the figure survives grey-scale printing.

The figure is built on a bare ``matplotlib.figure.Figure`` with the Agg canvas: no pyplot, no
global state, safe to call from threads and tests.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import overload

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure, SubFigure

from loadmem.analysis.context import where
from loadmem.analysis.figures import format_figure
from loadmem.analysis.model import Analysis, Finding, Window, severity_rank
from loadmem.analysis.series import RecordingSeries
from loadmem.analysis.trend import levels
from loadmem.errors import LoadmemError
from loadmem.presentation import escape, mapping_kinds
from loadmem.presentation.downsample import DEFAULT_MAX_POINTS, envelope_indices
from loadmem.presentation.plot_container import panel_container
from loadmem.presentation.plot_series import (
    LoadSeries,
    PlotData,
    ProcessSeries,
    SystemSeries,
    plot_data,
)
from loadmem.recording.reader import Recording, open_recording
from loadmem.units import format_bytes, format_duration

# Okabe & Ito (2008), "Color Universal Design": distinguishable with every common colour
# vision deficiency; the choices below also differ in lightness for grey-scale printing.
BLACK = "#000000"
ORANGE = "#E69F00"
SKY = "#56B4E9"
GREEN = "#009E73"
BLUE = "#0072B2"
VERMILLION = "#D55E00"
PURPLE = "#CC79A7"

PHASE_COLOURS = {"baseline": "#ececec", "load": "#fbe3c0", "observe": "#d9e8f5"}
GROUP_STYLE = {  # facecolour, hatch
    "master": (BLUE, None),
    "workers": (SKY, "//"),
    "other": (PURPLE, ".."),
}

#: Panel titles, stable: tests and docs refer to them.
TITLE_SYSTEM = "System memory (/proc/meminfo): change since the analysed window opened"
TITLE_RSS = "RSS of watched processes, stacked by group (what top shows)"
TITLE_TRUTH = "The truth (smaps_rollup): private pages growing into shared = copy-on-write"
TITLE_LOAD = "Load: requests/s, failures/s, users"
TITLE_LATENCY = "Latency: p95 of each interval"

SUFFIXES = (".png", ".svg", ".pdf")
#: Inches below the time panels for the mapping-kind bars (``mapping_kinds.py``), when the
#: analysis has an attribution (two per-mapping snapshots around the window).
WHERE_HEIGHT = 2.6
FIGSIZE_WIDTH = 12.0
PNG_DPI = 100

#: Which panel a finding is drawn on; anything else goes on the system panel.
FINDING_PANEL = {
    "cow-unsharing": "truth",
    "rss-growth": "rss",
    "huge-pages": "rss",
    "recorder-footprint": "",  # reported in the text, not on the figure
    "cgroup-limit": "container",
    "working-set": "container",
}


def _byte_unit(values: Sequence[float]) -> tuple[float, str]:
    """Divisor and unit for an axis, chosen by magnitude with ``loadmem.units``' convention."""
    finite = [abs(v) for v in values if v is not None and math.isfinite(v)]
    top = max(finite, default=0.0)
    unit = format_bytes(top).split()[-1] if top >= 1 << 20 else "MB"
    if unit == "GB" and top < 2 * (1 << 30):
        unit = "MB"  # "1536 MB" reads better on an axis than "1.5 GB"
    return {"MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}.get(unit, 1 << 20), unit


def _time_unit(duration: float) -> tuple[float, str]:
    if duration <= 300:
        return 1.0, "s"
    if duration <= 5 * 3600:
        return 60.0, "min"
    return 3600.0, "h"


def _nanmax_abs(*arrays: np.ndarray) -> float:
    vals = [np.nanmax(np.abs(a)) for a in arrays if a.size and not np.all(np.isnan(a))]
    return float(max(vals, default=0.0))


def _first(a: np.ndarray) -> float:
    ok = a[~np.isnan(a)]
    return float(ok[0]) if ok.size else float("nan")


def _legend(ax: Axes, extra: Axes | None = None) -> None:
    """Legend to the right of the panel, outside the data (further out past a twin axis)."""
    handles, labels = ax.get_legend_handles_labels()
    if extra is not None:
        h2, l2 = extra.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    if handles:
        ax.legend(
            handles,
            labels,
            loc="upper left",
            bbox_to_anchor=(1.07 if extra is not None else 1.01, 1.0),
            borderaxespad=0.0,
            fontsize=8,
            frameon=False,
        )


def _empty(ax: Axes, title: str, message: str) -> None:
    ax.set_title(title, loc="left", fontsize=10)
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", color="#555")
    ax.set_yticks([])


class _Ctx:
    """Per-figure drawing settings: time scale and point budget."""

    def __init__(self, data: PlotData, max_points: int):
        self.data = data
        self.max_points = max_points
        self.tscale, self.tunit = _time_unit(data.t_end - data.t_start)

    @overload
    def x(self, t: np.ndarray) -> np.ndarray: ...

    @overload
    def x(self, t: float) -> float: ...

    def x(self, t: np.ndarray | float) -> np.ndarray | float:
        return np.asarray(t) / self.tscale if isinstance(t, np.ndarray) else t / self.tscale


def _shade_phases(ax: Axes, ctx: _Ctx) -> None:
    for name, a, b in ctx.data.phases:
        ax.axvspan(
            ctx.x(a),
            ctx.x(b),
            facecolor=PHASE_COLOURS.get(name, "#f3f3f3"),
            edgecolor="none",
            zorder=0,
        )
        ax.axvline(ctx.x(a), color="#9a9a9a", linewidth=0.8, linestyle=":", zorder=1)


#: Rough width of one bold 9 pt character as a fraction of the panel width (laptop size).
_CHAR_FRACTION = 0.0085


def _place_labels(
    labels: list[tuple[float, str]], levels: tuple[tuple[float, float], ...]
) -> list[tuple[float, float]] | None:
    """``(y, fontsize)`` for each ``(centre, text)`` so that no two labels on a line overlap,
    or None. Greedy, in the given order (widest phase first)."""
    placed: dict[float, list[tuple[float, float]]] = {y: [] for y, _ in levels}
    out = []
    for centre, text in labels:
        for y, size in levels:
            half = len(text) * _CHAR_FRACTION * size / 9.0 / 2 + 0.004
            if all(hi < centre - half or lo > centre + half for lo, hi in placed[y]):
                placed[y].append((centre - half, centre + half))
                out.append((y, size))
                break
        else:
            return None
    return out


def _phase_strip(ax: Axes, ctx: _Ctx) -> None:
    """A thin timeline above the panels naming each phase and its length.

    A label wider than its phase is shortened to the name. When labels of short phases next
    to each other would still collide, they are set smaller on two lines.
    """
    _shade_phases(ax, ctx)
    span = max(ctx.data.t_end - ctx.data.t_start, 1e-9)
    phases = sorted(ctx.data.phases, key=lambda p: p[1] - p[2])  # widest first
    labels = []
    for name, a, b in phases:
        text = f"{name} {format_duration(b - a)}"
        if len(text) * _CHAR_FRACTION > (b - a) / span:
            text = name
        labels.append((((a + b) / 2 - ctx.data.t_start) / span, text))
    spots = (
        _place_labels(labels, ((0.5, 9.0),))
        or _place_labels(labels, ((0.76, 7.5), (0.24, 7.5)))
        or [(0.5, 7.5)] * len(labels)
    )
    for (_name, a, b), (_, text), (y, size) in zip(phases, labels, spots, strict=True):
        ax.text(
            ctx.x((a + b) / 2),
            y,
            text,
            ha="center",
            va="center",
            fontsize=size,
            fontweight="bold",
            color="#222",
            clip_on=False,
        )
    if not ctx.data.phases:
        ax.text(0.5, 0.5, "no phases recorded (loadmem record)", transform=ax.transAxes,
                ha="center", va="center", fontsize=8, color="#555")  # fmt: skip
    ax.set_yticks([])
    ax.set_ylim(0, 1)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)


def _start_level(t: np.ndarray, v: np.ndarray, window: Window) -> float:
    """The level of a series when the analysed window opens: the same definition (median of
    the window's first samples) the analysis, the run summary and ``loadmem ls`` use."""
    i0 = max(int(np.searchsorted(t, window.t_start, side="right")) - 1, 0)
    i1 = int(np.searchsorted(t, window.t_end, side="right"))
    start, _ = levels(v, slice(i0, i1))
    return float("nan") if start is None else start


def _panel_system(ax: Axes, s: SystemSeries | None, p: ProcessSeries | None, ctx: _Ctx,
                  analysis: Analysis) -> None:
    """System memory as change since the analysed window opened (before load, for a run),
    with the watched processes' PSS change for reference: the part of *used* the service
    accounts for (the rest is someone else). The legend gives the window's figures as every
    other output prints them."""
    if s is None:
        _empty(ax, TITLE_SYSTEM, "no /proc/meminfo samples in this range")
        return
    w = analysis.window
    used_delta = format_figure("window.used_delta_bytes",
                               analysis.figures.get("window.used_delta_bytes"))
    series = [
        (f"used (total - available)\n  {used_delta} {where(w)}", s.used, BLUE, "-", 2.0),
        ("free (MemFree)", s.free, ORANGE, "--", 1.6),
        ("page cache (Cached - Shmem + Buffers)", s.cache, GREEN, "-.", 1.6),
    ]
    if np.isfinite(s.shmem).any() and np.nanmax(s.shmem) - np.nanmin(s.shmem) >= 4 << 20:
        series.append(("Shmem (tmpfs, shared memory)", s.shmem, VERMILLION, ":", 1.6))
    starts = [_start_level(s.t, v, w) for _, v, *_ in series]
    if analysis.figures.get("window.used_start_bytes") is not None:  # the analysis' own
        starts[0] = float(analysis.figures["window.used_start_bytes"] or 0.0)
    deltas = [v - st for (_, v, *_), st in zip(series, starts, strict=True)]
    pss_start = _start_level(p.t, p.pss, w) if p is not None else float("nan")
    pss_delta = p.pss - pss_start if p is not None and math.isfinite(pss_start) else None
    extra = [pss_delta] if pss_delta is not None else []
    scale, unit = _byte_unit([_nanmax_abs(*deltas, *extra)])
    idx = envelope_indices(np.vstack(deltas), ctx.max_points)
    x = ctx.x(s.t[idx])
    for (label, _, colour, style, width), d, st in zip(series, deltas, starts, strict=True):
        ax.plot(
            x,
            d[idx] / scale,
            color=colour,
            linestyle=style,
            linewidth=width,
            label=f"{label}\n  when the window opened {format_bytes(st)}",
        )
    if p is not None and pss_delta is not None:
        pidx = envelope_indices(pss_delta, ctx.max_points)
        ax.plot(
            ctx.x(p.t[pidx]),
            pss_delta[pidx] / scale,
            color=PURPLE,
            linestyle=(0, (1, 1.5)),
            linewidth=2.2,
            label=f"watched processes' PSS\n  (panel 3) when the window opened "
            f"{format_bytes(pss_start)}",
        )
    ax.axhline(0, color="#666", linewidth=0.6)
    ax.set_title(TITLE_SYSTEM, loc="left", fontsize=10)
    ax.set_ylabel(f"change ({unit})")
    if s.total is not None and math.isfinite(starts[0]):
        headroom = s.total - starts[0]  # used would reach MemTotal at +headroom
        lo, hi = ax.get_ylim()
        if headroom / scale <= hi + 0.5 * (hi - lo):
            ax.axhline(
                headroom / scale,
                color=BLACK,
                linestyle=(0, (6, 2, 1, 2)),
                linewidth=1.2,
                label=f"MemTotal {format_bytes(s.total)} (ceiling for used)",
            )
        else:  # off scale: say so in the legend rather than flatten the change
            ax.plot(
                [],
                [],
                color="none",
                label=f"MemTotal {format_bytes(s.total)}: the ceiling\n"
                f"  is {format_bytes(headroom)} above used (off scale)",
            )
    _legend(ax)


def _fill(
    ax: Axes,
    x: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    colour: str,
    hatch: str | None,
    label: str,
    alpha: float = 0.75,
) -> None:
    ax.fill_between(
        x,
        lower,
        upper,
        facecolor=colour,
        alpha=alpha,
        hatch=hatch,
        edgecolor="#333" if hatch else colour,
        linewidth=0.0,
        label=label,
    )


def _panel_rss(ax: Axes, p: ProcessSeries | None, ctx: _Ctx) -> None:
    if p is None or not p.rss_by_group:
        _empty(ax, TITLE_RSS, "no watched processes in this range")
        return
    names = list(p.rss_by_group)
    layers = np.vstack([np.nan_to_num(p.rss_by_group[n]) for n in names])
    tops = np.cumsum(layers, axis=0)
    scale, unit = _byte_unit([_nanmax_abs(tops[-1])])
    idx = envelope_indices(np.vstack([layers, tops[-1:]]), ctx.max_points)
    x = ctx.x(p.t[idx])
    bottom = np.zeros(len(idx))
    counts = p.count
    for name, top in zip(names, tops, strict=True):
        colour, hatch = GROUP_STYLE.get(name, (PURPLE, ".."))
        end = p.rss_by_group[name][~np.isnan(p.rss_by_group[name])]
        label = f"{name} (end {format_bytes(end[-1] if end.size else None)})"
        _fill(ax, x, bottom, top[idx] / scale, colour, hatch, label)
        bottom = top[idx] / scale
    ax.plot(x, bottom, color=BLACK, linewidth=1.0, label="sum RSS (VmRSS)")
    ax.set_ylim(0, max(1e-9, float(np.nanmax(bottom))) * 1.15)
    ax.set_title(TITLE_RSS, loc="left", fontsize=10)
    ax.set_ylabel(f"RSS ({unit})")
    if counts.size:
        ax.text(
            0.005,
            0.96,
            f"{int(np.max(counts))} processes",
            transform=ax.transAxes,
            fontsize=8,
            va="top",
            color="#333",
        )
    _legend(ax)


def _panel_truth(ax: Axes, p: ProcessSeries | None, ctx: _Ctx, analysis: Analysis) -> None:
    if p is None or np.all(np.isnan(p.pss)):
        _empty(ax, TITLE_TRUTH, "no smaps_rollup figures (PSS) for every watched process in "
               "this range")
        return
    uss, shared = p.uss, p.shared
    total = uss + shared
    scale, unit = _byte_unit([_nanmax_abs(p.rss, total, p.pss)])
    idx = envelope_indices(np.vstack([uss, shared, p.rss, p.pss]), ctx.max_points)
    x = ctx.x(p.t[idx])
    u, tot = uss[idx] / scale, total[idx] / scale
    _fill(ax, x, np.zeros(len(idx)), u, VERMILLION, "xx", "private pages (USS)", alpha=0.55)
    _fill(ax, x, u, tot, SKY, None, "shared pages", alpha=0.45)
    ax.plot(x, p.rss[idx] / scale, color=BLACK, linewidth=1.8, label="sum RSS")
    name = "watched.pss_delta_bytes"
    d_pss = format_figure(name, analysis.figures.get(name))
    pss_label = f"sum PSS\n  {d_pss} {where(analysis.window)} (same processes)"
    if p.full_from is not None and p.full_from > p.t[0] + 1e-9:
        pss_label += (f"\n  drawn from {format_duration(p.full_from)}: PSS of every "
                      "process read")
    ax.plot(x, p.pss[idx] / scale, color=BLUE, linewidth=2.2, linestyle="--", label=pss_label)
    ax.plot(x, u, color=VERMILLION, linewidth=1.6, linestyle=":", label="sum USS")
    top = np.nanmax(np.concatenate([tot, p.rss[idx] / scale, p.pss[idx] / scale]))
    ax.set_ylim(0, max(1e-9, float(top)) * 1.2)
    ax.set_title(TITLE_TRUTH, loc="left", fontsize=10)
    ax.set_ylabel(f"watched processes ({unit})")
    _legend(ax)


def _stairs(
    ax: Axes, load: LoadSeries, values: np.ndarray, idx: np.ndarray, ctx: _Ctx, **style: object
) -> None:
    """Per-interval figures drawn over the interval they cover (``t - interval_s`` to ``t``)."""
    t = load.t[idx]
    edges = np.concatenate([[t[0] - load.interval[idx[0]]], t])
    ax.stairs(values[idx], ctx.x(edges), baseline=None, **style)  # type: ignore[arg-type]


def _panel_load(ax: Axes, load: LoadSeries, ctx: _Ctx) -> None:
    idx = envelope_indices(np.vstack([load.rps, load.failures_per_s, load.users]), ctx.max_points)
    _stairs(ax, load, load.rps, idx, ctx, color=BLUE, linewidth=1.6, label="requests/s")
    _stairs(ax, load, load.failures_per_s, idx, ctx, color=VERMILLION, linewidth=1.4,
            linestyle="--", label="failures/s")  # fmt: skip
    ax.set_ylabel("per second")
    ax.set_ylim(bottom=0)
    ax.set_title(TITLE_LOAD, loc="left", fontsize=10)
    users = ax.twinx()
    if not np.all(np.isnan(load.users)):
        _stairs(users, load, load.users, idx, ctx, color=GREEN, linewidth=1.2,
                linestyle="-.", label="users (right axis)")  # fmt: skip
    users.set_ylabel("users")
    users.set_ylim(bottom=0)
    _legend(ax, users)


def _panel_latency(ax: Axes, load: LoadSeries, ctx: _Ctx) -> None:
    idx = envelope_indices(load.p95_ms, ctx.max_points)
    _stairs(ax, load, load.p95_ms, idx, ctx, color=ORANGE, linewidth=1.6, label="p95 (ms)")
    ax.set_ylabel("ms")
    ax.set_ylim(bottom=0)
    ax.set_title(TITLE_LATENCY, loc="left", fontsize=10)
    _legend(ax)


def _finding_label(f: Finding) -> str:
    """``cow-unsharing: +312 MB from 1m05s``. Without ``explained_bytes`` (the overall drain),
    the first ``*.delta_bytes`` of its evidence, named: ``memory-drain: used +614 MB ...``."""
    parts = [f.id]
    if f.explained_bytes is not None:
        parts.append(format_bytes(f.explained_bytes, signed=True))
    else:
        delta = next((k for k in f.evidence if k.endswith("delta_bytes")), None)
        value = f.evidence.get(delta) if delta else None
        if delta and isinstance(value, (int, float)) and math.isfinite(value):
            name = delta.removesuffix("delta_bytes").rstrip("._")
            parts.append(f"{name} {format_bytes(value, signed=True)}".strip())
    if f.t_start is not None:
        parts.append(f"from {format_duration(f.t_start)}")
    return f"{parts[0]}: {' '.join(parts[1:])}" if len(parts) > 1 else parts[0]


#: Height of one annotation lane above the data, as a fraction of the panel height.
_LANE = 0.11


def _annotate_findings(axes: dict[str, Axes], analysis: Analysis, ctx: _Ctx) -> int:
    """Mark where each finding starts, the stretch it covers and how many MB it is about.

    Each annotated panel gets one lane per finding above its data (the y range is extended
    to make room), so a label never hides a line. Worst severity first. Returns how many
    findings were drawn.
    """
    per_panel: dict[str, list[Finding]] = {}
    for f in sorted(analysis.findings, key=lambda f: -severity_rank(f.severity)):
        panel = FINDING_PANEL.get(f.id, "system")
        if f.severity == "ok" or not panel:
            continue
        panel = panel if panel in axes else "system"
        t0 = f.t_start if f.t_start is not None else ctx.data.t_start
        if panel in axes and ctx.data.t_start <= t0 <= ctx.data.t_end:
            per_panel.setdefault(panel, []).append(f)
    for panel, findings in per_panel.items():
        ax = axes[panel]
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, lo + (hi - lo) / (1 - _LANE * len(findings) - 0.02))
        for i, f in enumerate(findings):
            t0 = f.t_start if f.t_start is not None else ctx.data.t_start
            y = 1 - 0.01 - _LANE * (i + 0.5)
            warn = severity_rank(f.severity) >= severity_rank("warning")
            colour = VERMILLION if warn else "#444"
            ax.axvline(ctx.x(t0), color=colour, linestyle=(0, (4, 2)), linewidth=1.3, zorder=4)
            if f.t_end is not None and f.t_end > t0:
                ax.annotate(
                    "",
                    xy=(ctx.x(min(f.t_end, ctx.data.t_end)), y),
                    xytext=(ctx.x(t0), y),
                    xycoords=("data", "axes fraction"),
                    arrowprops={"arrowstyle": "|-|", "color": colour, "linewidth": 1.0},
                    zorder=4,
                )
            ax.text(
                ctx.x(t0),
                y,
                f" {f.severity.upper()} {_finding_label(f)}",
                transform=ax.get_xaxis_transform(),
                ha="left",
                va="center",
                fontsize=8.5,
                color=colour,
                fontweight="bold",
                zorder=5,
                bbox={"facecolor": "white", "edgecolor": colour, "alpha": 0.95, "pad": 2},
            )
    return sum(len(v) for v in per_panel.values())


def _resolve_window(
    window: Window | tuple[float, float] | str | None, analysis: Analysis
) -> tuple[float, float] | None:
    if window is None:
        return None
    if isinstance(window, Window):
        return (window.t_start, window.t_end)
    if isinstance(window, str):
        # The window syntax belongs to the analyzer; a string means "the window the analysis
        # was made for", which the CLI guarantees by passing the same string to analyze().
        return (analysis.window.t_start, analysis.window.t_end)
    t0, t1 = window
    return (float(t0), float(t1))


def render_figure(
    recording: Recording | str | Path,
    analysis: Analysis,
    window: Window | tuple[float, float] | str | None = None,
    max_points: int = DEFAULT_MAX_POINTS,
    series: RecordingSeries | None = None,
) -> Figure:
    """Build the figure for ``recording`` annotated with ``analysis``' findings.

    ``window`` restricts the plotted range (``t`` seconds since the recording start); by
    default the whole recording is drawn. ``series``: the analysis' own (``loadmem.analysis.
    analyze_with_series``), else they are built again from the recording.
    """
    rec = recording if isinstance(recording, Recording) else open_recording(recording)
    rng = _resolve_window(window, analysis)
    data = plot_data(rec, rng, series)
    ctx = _Ctx(data, max_points)
    panels = ["phases", "system", "rss", "truth"]
    ratios = [0.2, 1.0, 0.9, 1.25]
    if analysis.container is not None:  # the container view (plot_container.py)
        panels.append("container")
        ratios.append(1.0)
    if data.load is not None:
        panels += ["load", "latency"]
        ratios += [0.75, 0.55]
    height = 1.2 + 2.0 * sum(ratios)
    where = analysis.attribution  # the mapping-kind bars below the time panels
    fig = Figure(figsize=(FIGSIZE_WIDTH, height + (WHERE_HEIGHT if where else 0.0)),
                 layout="constrained")
    FigureCanvasAgg(fig)
    host: Figure | SubFigure = fig
    if where:
        subs = fig.subfigures(2, 1, height_ratios=[height, WHERE_HEIGHT])
        assert isinstance(subs, np.ndarray)  # two subfigures: an array of them
        host = subs[0]
        mapping_kinds.draw(subs[1], where)
    axs = host.subplots(len(panels), 1, sharex=True, gridspec_kw={"height_ratios": ratios})
    axes = dict(zip(panels, axs, strict=True))
    _phase_strip(axes["phases"], ctx)
    for ax in axs[1:]:
        _shade_phases(ax, ctx)
        ax.grid(True, axis="y", color="#ddd", linewidth=0.6)
        ax.set_axisbelow(True)
    _panel_system(axes["system"], data.system, data.processes, ctx, analysis)
    _panel_rss(axes["rss"], data.processes, ctx)
    _panel_truth(axes["truth"], data.processes, ctx, analysis)
    if "container" in axes:
        panel_container(axes["container"], rec, analysis.container or {},
                        (data.t_start, data.t_end), ctx.x, max_points, _legend)
    if data.load is not None:
        _panel_load(axes["load"], data.load, ctx)
        _panel_latency(axes["latency"], data.load, ctx)
    _annotate_findings(axes, analysis, ctx)
    axs[-1].set_xlabel(f"time since recording start ({ctx.tunit})")
    axs[-1].set_xlim(ctx.x(data.t_start), ctx.x(max(data.t_end, data.t_start + 1e-9)))
    name = analysis.label or Path(analysis.recording).name
    # escaped line by line: the escape shows a newline inside recorded text as "\n"
    lines = textwrap.wrap(f"[{analysis.severity.upper()}] {analysis.headline}", 150)
    headline = "\n".join(escape.plot(line) for line in lines)
    fig.suptitle(f"loadmem: {escape.plot(name)}\n{headline}", x=0.01, ha="left", fontsize=10)
    return fig


def save_plot(
    recording: Recording | str | Path,
    analysis: Analysis,
    path: str | Path,
    window: Window | tuple[float, float] | str | None = None,
    series: RecordingSeries | None = None,
) -> Path:
    """Render and write the figure; the format (.png, .svg, .pdf) follows the extension."""
    out = Path(path)
    if out.suffix.lower() not in SUFFIXES:
        raise LoadmemError(
            f"cannot write a plot to {out.name}: unknown format {out.suffix or '(none)'}",
            "give a file name ending in .png, .svg or .pdf",
        )
    fig = render_figure(recording, analysis, window, series=series)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=PNG_DPI, metadata=_metadata(out.suffix.lower()))
    except OSError as e:
        raise LoadmemError(
            f"cannot write {out}: {e.strerror or e}", "choose a writable -o path"
        ) from None
    return out


def _metadata(suffix: str) -> dict[str, str] | None:
    # Reproducible files: no creation date (SVG/PDF embed one by default).
    if suffix == ".svg":
        return {"Date": None}  # type: ignore[dict-item]
    if suffix == ".pdf":
        return {"CreationDate": None}  # type: ignore[dict-item]
    return {"Software": "loadmem"}
