"""``analyze(recording, window=None) -> Analysis``: the verdict and the numbers behind it.

A pipeline of named steps, each a small function:

1. ``_open`` and ``_read_system``: the recording and its system series (at least 2 samples);
2. ``_windows``: the verdict's window and its parts (``window.py``);
3. ``_series``: one pass over the processes table (``series``): per-tick sums, lifetimes,
   a fixed set per window;
4. ``_measure``: how every series moved over the window and each of its phases
   (``context.py``), plus the sharing ratios, what is still shared and the current rate;
5. ``_judge``: one detector per mechanism (``detectors.py``), the drain headline and the
   unexplained remainder (``headline.py``);
6. ``key_figures``: the named figures of the catalogue (``figures.py``) the reporters, gates
   and ``loadmem compare`` read;
7. ``_tables``: the phase and process tables (``summaries.py``); ``_notes``: what the reader
   should know about the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loadmem.analysis import attribution, container, headline, summaries, traffic
from loadmem.analysis import detectors as det
from loadmem.analysis.context import Context, measure, where
from loadmem.analysis.model import Analysis, Finding, Window, severity_rank
from loadmem.analysis.series import (
    RecordingSeries,
    SystemSeries,
    build,
    index_at,
    index_range,
    read_system,
)
from loadmem.analysis.trend import edge_count, end_edge, theil_sen
from loadmem.analysis.window import Windows, resolve
from loadmem.errors import LoadmemError
from loadmem.recording.reader import Recording, open_recording
from loadmem.units import format_bytes, format_duration

#: Below this much unsharing over the recent half of the window, it has stopped for now.
COW_STOPPED_BYTES = 1 << 20
#: A note is added when PSS figures at the window's end are older than the recorder's
#: --pss-max-age (meta ``pss_max_age_s``, else this) plus two intervals: the budget held
#: reads back. Younger figures are current: the recorder re-reads a process that faults.
DEFAULT_PSS_MAX_AGE_S = 15.0
#: Summed drift of the PSS figures at the window's end worth a note: the smallest
#: copy-on-write finding (a drain that size could be missing from the figures).
PSS_DRIFT_NOTE = det.COW_INFO


@dataclass
class Result:
    """An analysis with the series it was made from (the plot draws the same series)."""

    analysis: Analysis
    series: RecordingSeries
    windows: Windows


def analyze(recording: Recording | str | Path, window: str | None = None,
            limit_horizon: float = container.LIMIT_HORIZON_S) -> Analysis:
    """Explain what happened to memory in ``window`` (default: the load and observe phases,
    else the observe phase, else the whole recording). Raises ``LoadmemError`` for a
    recording with nothing usable. ``limit_horizon``: a container limit predicted within
    this many seconds is critical."""
    return analyze_with_series(recording, window, limit_horizon).analysis


def analyze_with_series(recording: Recording | str | Path, window: str | None = None,
                        limit_horizon: float = container.LIMIT_HORIZON_S) -> Result:
    """``analyze``, with the series the analysis was made from (the plot draws them)."""
    rec = _open(recording)
    system = _read_system(rec)
    wins = _windows(rec, system, window)
    series = _series(rec, system, wins)
    ctx = _measure(rec, series, wins)
    findings, drain, unexplained = _judge(ctx)
    tr = traffic.read_traffic(rec)
    figures = key_figures(ctx, series, wins, tr, rec, unexplained)
    view = _container(rec, ctx, wins, findings, figures, limit_horizon)
    att = _where(rec, series, wins, findings, figures)
    phases, processes = _tables(ctx, series, wins, tr)
    analysis = Analysis(
        recording=str(rec.path),
        label=rec.label,
        window=Window(wins.main.name, wins.main.t_start, wins.main.t_end),
        headline=headline.headline(drain, findings),
        findings=findings,
        figures=figures,
        phases=phases,
        processes=processes,
        meta=dict(rec.meta),
        notes=_notes(rec, series, wins, ctx),
        container=view.to_dict() if view is not None else None,
        attribution=att.to_dict() if att is not None else None,
    )
    return Result(analysis, series, wins)


# --- 1. the recording ------------------------------------------------------------------------


def _open(recording: Recording | str | Path) -> Recording:
    return recording if isinstance(recording, Recording) else open_recording(recording)


def _read_system(rec: Recording) -> SystemSeries:
    system = read_system(rec)
    if len(system) < 2:
        raise LoadmemError(
            f"{rec.path} has {len(system)} system sample(s): nothing to analyse",
            "record for longer (at least a few intervals)",
        )
    return system


# --- 2. windows ------------------------------------------------------------------------------


def _windows(rec: Recording, system: SystemSeries, spec: str | None) -> Windows:
    wins = resolve(rec.phases(), float(system.t[0]), float(system.t[-1]), spec)
    win = index_range(system, wins.main.t_start, wins.main.t_end)
    if win.stop - win.start < 2:
        raise LoadmemError(
            f"the {wins.main.name} window ({format_duration(wins.main.t_start)} to "
            f"{format_duration(wins.main.t_end)}) holds fewer than 2 samples",
            "choose a longer --window",
        )
    return wins


# --- 3. series -------------------------------------------------------------------------------


def checkpoint_times(wins: Windows) -> dict[str, float | None]:
    """Points the process table reports: end of the baseline (the window's start without
    one), end of the load, end of the window."""
    return {
        "baseline": wins.baseline.t_end if wins.baseline is not None else wins.main.t_start,
        "load_end": wins.load.t_end if wins.load is not None else None,
        "end": wins.main.t_end,
    }


def _series(rec: Recording, system: SystemSeries, wins: Windows) -> RecordingSeries:
    times = [t for t in checkpoint_times(wins).values() if t is not None]
    return build(rec, wins.all(), times, system=system)


# --- 4. measure ------------------------------------------------------------------------------


def _ratio_at(series: RecordingSeries, t: float | None) -> float | None:
    """Sharing ratio sum PSS / sum smaps Rss (both from the same reads) at the sample at or
    before ``t``."""
    if t is None:
        return None
    i = index_at(series.system, t)
    w = series.processes.watched
    pss, rss = summaries.at(w.get("pss"), i), summaries.at(w.get("smaps_rss"), i)
    if pss is None or not rss:
        return None
    return pss / rss


def _cow_rate(ctx: Context, series: RecordingSeries) -> tuple[float | None, float | None]:
    """Current unsharing rate: the Theil–Sen slope of the same processes' PSS less that of
    their new anonymous memory over the last half of the window (at least 5 samples), never
    below 0; and the time until what is still shared would be unshared at that rate (None
    when it has stopped)."""
    life = ctx.life
    if life is None:
        return None, None
    pss, anon = life.sums.get("pss"), life.sums.get("rss_anon")
    if pss is None:
        return None, None
    t = series.system.t[life.sl]
    n = len(t)
    recent = slice(max(0, n - max(5, n // 2)), n)
    r_pss = theil_sen(t[recent], pss[recent])
    if r_pss is None:
        return None, None
    r_anon = theil_sen(t[recent], anon[recent]) if anon is not None else None
    rate = max(r_pss - max(r_anon or 0.0, 0.0), 0.0)
    span = float(t[recent][-1] - t[recent][0]) if n else 0.0
    if ctx.remaining is None or rate * span < COW_STOPPED_BYTES:
        return rate, None
    return rate, ctx.remaining / rate


def _measure(rec: Recording, series: RecordingSeries, wins: Windows) -> Context:
    ctx = measure(series, wins.main, wins.baseline)
    win = index_range(series.system, wins.main.t_start, wins.main.t_end)
    k = edge_count(win.stop - win.start)
    ctx.parts = [measure(series, w, wins.baseline, k) for w in wins.parts]
    ctx.has_load = wins.load is not None
    cps = checkpoint_times(wins)
    ctx.sharing = {k: _ratio_at(series, cps[k]) for k in ("baseline", "load_end", "end")}
    ctx.sharing["after_load"] = ctx.sharing.pop("load_end")
    srss, pss = ctx.everyone.get("smaps_rss"), ctx.everyone.get("pss")
    if srss is not None and pss is not None and srss.end is not None and pss.end is not None:
        ctx.remaining = max(srss.end - pss.end, 0.0)
    ctx.cow_rate, ctx.cow_time_to_exhaust = _cow_rate(ctx, series)
    ctx.recorder = summaries.recorder_figures(rec)
    for part in ctx.parts:
        part.has_load, part.sharing, part.recorder = ctx.has_load, ctx.sharing, {}
    return ctx


# --- 5. judge --------------------------------------------------------------------------------


def unexplained_delta(ctx: Context) -> float | None:
    """The used-memory change no component accounts for: Δused less the watched processes'
    real PSS change (every one with figures at each end), the load generator's, other
    processes' anonymous memory, shared memory nobody watched maps, unreclaimable slab,
    page tables and kernel stacks."""
    d_used = ctx.d("used")
    if d_used is None:
        return None

    def dd(name: str, source: str = "system") -> float:
        return ctx.d(name, source) or 0.0

    pss = ctx.total_delta("pss") or 0.0
    shmem_unmapped = dd("Shmem") - max(ctx.total_delta("pss_shmem") or 0.0, 0.0)
    return d_used - (pss + dd("pss", "loadgen") + (det.other_anon(ctx) or 0.0)
                     + shmem_unmapped + dd("SUnreclaim") + dd("PageTables") + dd("KernelStack"))


def _phase_findings(ctx: Context, found: set[str]) -> list[Finding]:
    """Mechanisms seen in one phase of the window but not over all of it (files read into
    the page cache during the load, then other caches evicted after it): each phase is judged
    too, and such a finding is reported for its phase, at most ``info`` since the change did
    not last over the window."""
    best: dict[str, Finding] = {}
    for part in ctx.parts:
        for detect in det.DETECTORS:
            f = detect(part)
            if f is None or f.id in found or f.id == "recorder-footprint" or f.severity == "ok":
                continue
            if severity_rank(f.severity) > severity_rank("info"):
                f.severity = "info"
            f.statement = (f"{f.statement} (Over the whole window, from "
                           f"{where(ctx.window).removeprefix('from ')}, it did not stand out.)")
            f.evidence["phase"] = part.window.name
            kept = best.get(f.id)
            if kept is None or abs(f.explained_bytes or 0) > abs(kept.explained_bytes or 0):
                best[f.id] = f
    return list(best.values())


def _judge(ctx: Context) -> tuple[list[Finding], Finding, float | None]:
    findings = [f for f in (d(ctx) for d in det.DETECTORS) if f is not None]
    findings += _phase_findings(ctx, {f.id for f in findings})
    unexplained = unexplained_delta(ctx)
    drain = headline.drain_finding(ctx, unexplained)
    drain.evidence["loadgen.pss_delta_bytes"] = ctx.d("pss", "loadgen")
    findings.insert(0, drain)
    return findings, drain, unexplained


# --- 6. key figures --------------------------------------------------------------------------


def _finite(v: float | None) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def key_figures(ctx: Context, series: RecordingSeries, wins: Windows, tr: traffic.Traffic,
                rec: Recording, unexplained: float | None) -> dict[str, float | None]:
    """Every figure of the catalogue (``figures.py``) the analysis publishes, by name."""
    main = wins.main
    dur = main.duration
    used = ctx.system.get("used")
    d_used = ctx.d("used")

    def level(name: str, source: str, end: bool) -> float | None:
        c = ctx._changes(source).get(name)
        return None if c is None else (c.end if end else c.start)

    new = [p for p in ctx.appeared if not p.exited]
    gone = [p for p in ctx.exited if not p.appeared]
    unshared = det.cow_unshared(ctx)
    growth = det.growth(ctx)
    end_tick = int(series.system.tick[index_at(series.system, main.t_end)])
    workers = summaries.workers_at(series, end_tick)
    w_pss: float | None = float(sum(r["pss"] for r in workers)) if workers else None
    load_stats = _load_stats(rec, wins, tr, series)
    rec_fig = ctx.recorder
    d_rss = ctx.d("rss", "group")
    figures: dict[str, float | None] = {
        "window.duration_s": dur,
        "window.used_start_bytes": used.start if used else None,
        "window.used_end_bytes": used.end if used else None,
        "window.used_delta_bytes": d_used,
        "window.used_rate_bytes_per_s": d_used / dur if d_used is not None and dur > 0 else None,
        "window.available_delta_bytes": ctx.d("MemAvailable"),
        "window.free_delta_bytes": ctx.d("MemFree"),
        "watched.count": float(ctx.watched_count),
        "watched.same_count": float(ctx.same_count),
        "watched.rss_start_bytes": level("rss", "everyone", end=False),
        "watched.rss_end_bytes": level("rss", "everyone", end=True),
        "watched.pss_start_bytes": level("pss", "everyone", end=False),
        "watched.pss_end_bytes": level("pss", "everyone", end=True),
        "watched.rss_delta_bytes": d_rss,
        "watched.pss_delta_bytes": ctx.d("pss", "group"),
        "watched.uss_delta_bytes": ctx.d("uss", "group"),
        "watched.anon_delta_bytes": det.anon_delta(ctx),
        "watched.pss_coverage_end_ratio": (
            ctx.life.smaps_end / ctx.life.present_end
            if ctx.life is not None and ctx.life.present_end else None),
        "processes.appeared_count": float(len(new)),
        "processes.appeared_rss_bytes": ctx.lifecycle_total("rss", "appeared"),
        "processes.appeared_pss_bytes": ctx.lifecycle_total("pss", "appeared"),
        "processes.exited_count": float(len(gone)),
        "processes.exited_rss_bytes": ctx.lifecycle_total("rss", "exited"),
        "processes.exited_pss_bytes": ctx.lifecycle_total("pss", "exited"),
        "workers.count": float(len(workers)),
        "workers.pss_end_bytes": w_pss,
        "workers.pss_per_worker_end_bytes": (w_pss / len(workers)
                                             if workers and w_pss is not None else None),
        "sharing_ratio.baseline": ctx.sharing.get("baseline"),
        "sharing_ratio.after_load": ctx.sharing.get("after_load"),
        "sharing_ratio.end": ctx.sharing.get("end"),
        "cow.unshared_bytes": max(unshared, 0.0) if unshared is not None else None,
        "cow.remaining_bytes": ctx.remaining,
        "cow.rate_bytes_per_s": ctx.cow_rate,
        "cow.time_to_exhaust_s": ctx.cow_time_to_exhaust,
        "growth.bytes": max(growth, 0.0) if growth is not None else None,
        "watched.pss_growth_ratio": _growth_ratio(ctx, "pss"),
        "watched.rss_growth_ratio": _growth_ratio(ctx, "rss"),
        "rss.growth_rate_bytes_per_s": d_rss / dur if d_rss is not None and dur > 0 else None,
        "page_cache.delta_bytes": ctx.d("file_cache"),
        "shmem.delta_bytes": ctx.d("Shmem"),
        "slab.delta_bytes": (None if ctx.d("SUnreclaim") is None
                             else (ctx.d("SUnreclaim") or 0.0) + (ctx.d("SReclaimable") or 0.0)),
        "other_processes.delta_bytes": det.other_anon(ctx),
        "unexplained.delta_bytes": unexplained,
        "requests.total": float(load_stats["requests"]) if load_stats else None,
        "requests.failures": float(load_stats["failures"]) if load_stats else None,
        "requests.failure_ratio": (load_stats["failures"] / load_stats["requests"]
                                   if load_stats and load_stats["requests"] else None),
        "requests.rps": load_stats["rps"] if load_stats else None,
        "latency.p50_ms": load_stats["p50_ms"] if load_stats else None,
        "latency.p95_ms": load_stats["p95_ms"] if load_stats else None,
        "latency.p99_ms": load_stats["p99_ms"] if load_stats else None,
        "recorder.cpu_fraction": rec_fig.get("cpu_fraction"),
        "recorder.rss_bytes": rec_fig.get("rss_bytes"),
        "recorder.smaps_max_stall_ms": rec_fig.get("smaps_max_stall_ms"),
    }
    return {k: _finite(v) for k, v in figures.items()}


def _growth_ratio(ctx: Context, kind: str) -> float | None:
    """The same processes' change over their sum when the window opened."""
    c = ctx.group.get(kind)
    if c is None or c.delta is None or not c.start or c.start <= 0:
        return None
    return c.delta / c.start


def _load_stats(rec: Recording, wins: Windows, tr: traffic.Traffic,
                series: RecordingSeries) -> dict[str, float] | None:
    if wins.load is not None:
        stats = traffic.summarize(tr, wins.load.t_start, wins.load.t_end)
        stats.update(traffic.load_stats_totals(rec))
        return stats
    if not tr.empty:
        stats = traffic.summarize(tr, -np.inf, np.inf)
        t = series.system.t
        stats["rps"] = stats["requests"] / (t[-1] - t[0]) if t[-1] > t[0] else None
        return stats
    return None


def _container(rec: Recording, ctx: Context, wins: Windows, findings: list[Finding],
               figures: dict[str, float | None],
               horizon: float) -> container.ContainerView | None:
    """The container view (``container.py``) when the watched processes share a memory
    cgroup: its findings and ``cgroup.*`` figures (null without one) join the analysis'."""
    view = container.container_view(rec, wins.main.t_start, wins.main.t_end)
    if view is None:
        figures.update(dict.fromkeys(container.FIGURES))
        return None
    rss = ctx.group.get("rss")
    findings += container.findings(view, findings, ctx.d("rss", "group"),
                                   rss.start if rss is not None else None, horizon=horizon)
    figures.update({k: _finite(v) for k, v in view.figures().items()})
    return view


def _where(rec: Recording, series: RecordingSeries, wins: Windows, findings: list[Finding],
           figures: dict[str, float | None]) -> attribution.Attribution | None:
    """Where the memory went, mapping kind by mapping kind, between the per-mapping snapshots
    around the window (``attribution.py``): the ``where.*`` figures (null without two
    snapshots), and the places, the runtime and its documented remedy added to the
    copy-on-write finding (where the growth went, to the RSS-growth finding)."""
    # the series layer's groups, by (pid, start_time): the same names as the tables
    groups = {(k & ((1 << 22) - 1), k >> 22): g for k, g in series.processes.groups.items()}
    att = attribution.attribute_recording(rec, wins.main.t_start, wins.main.t_end,
                                          groups or None)
    figures.update({k: _finite(v) for k, v in attribution.figures(att).items()})
    if att is None:
        return None
    cow = next((f for f in findings if f.id == "cow-unsharing"), None)
    if cow is not None:
        attribution.annotate_cow(cow, att)
    growth = next((f for f in findings if f.id == "rss-growth"), None)
    if growth is not None:
        attribution.annotate_growth(growth, att)
    return att


# --- 7. tables and notes ---------------------------------------------------------------------


def _tables(ctx: Context, series: RecordingSeries, wins: Windows, tr: traffic.Traffic,
            ) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    by_name = {p.window.name: p for p in ctx.parts}
    phases = []
    for w in wins.phases:
        pctx = by_name.get(w.name) or measure(series, w, wins.baseline)
        phases.append(summaries.phase_row(pctx, tr))
    system = series.system
    ticks = {k: (int(system.tick[index_at(system, t)]) if t is not None else None)
             for k, t in checkpoint_times(wins).items()}
    return phases, summaries.process_rows(series, ticks, wins.main.t_end)


def _pss_staleness(rec: Recording, tick: int, t_end: float) -> float | None:
    """How long the stalest PSS figure among the rows of ``tick`` had gone unconfirmed
    (None if unknown): ``pss_stale_s`` (0 for a figure the recorder still knew to hold, however
    old its read); in recordings made before that column, the age of the oldest read. Reads
    the rows of one tick only (``Recording.rows_at_ticks``): cheap on any size."""
    tb = rec.rows_at_ticks("processes", [tick], ["t", "pss_stale_s", "pss_read_t"])
    if tb.num_rows == 0:
        return None
    if "pss_stale_s" in tb.column_names and tb.column("pss_stale_s").null_count < tb.num_rows:
        m = pc.max(tb.column("pss_stale_s")).as_py()
        return None if m is None else m + max(t_end - pc.max(tb.column("t")).as_py(), 0.0)
    if "pss_read_t" not in tb.column_names:
        return None
    m = pc.min(tb.column("pss_read_t")).as_py()
    return None if m is None else max(t_end - m, 0.0)


def _pss_drift(rec: Recording, ticks: np.ndarray) -> float | None:
    """The most the summed PSS figures may have moved since their reads, over ``ticks``:
    the recorder table's ``pss_drift`` (None in recordings made before that column). The
    series layer has loaded that table already (one row per tick): read from it, not again
    from the files."""
    if not rec.has("recorder") or len(ticks) == 0:
        return None
    tb = rec.table("recorder", ["tick", "pss_drift"])
    if tb.num_rows == 0 or tb.column("tick").null_count == tb.num_rows:
        return None
    drift = tb.filter(pc.is_in(tb.column("tick"), pa.array(ticks, tb.column("tick").type)))
    return pc.max(drift.column("pss_drift")).as_py() if drift.num_rows else None


def _notes(rec: Recording, series: RecordingSeries, wins: Windows, ctx: Context) -> list[str]:
    procs = series.processes
    notes = [*rec.notes, *wins.notes, *procs.notes]
    if wins.baseline is None:
        notes.append("no baseline phase: the noise floor was estimated from the window itself")
    if procs.rows == 0:
        notes.append("no per-process samples: only system-wide figures were analysed")
        return notes
    cov = series.coverage
    if cov.processes_end and cov.with_smaps_end < cov.processes_end:
        notes.append(
            f"{cov.sentence()} at the end. {cov.processes_end - cov.with_smaps_end} had no "
            "smaps_rollup figures (never read, or not readable): PSS sums leave them out"
        )
    elif cov.full_from_s is not None and cov.full_from_s > float(series.system.t[0]) + 1e-9:
        notes.append(f"{cov.sentence()} (the recorder reads smaps_rollup within a budget)")
    system = series.system
    i_end = index_at(system, wins.main.t_end)
    age = _pss_staleness(rec, int(system.tick[i_end]), float(system.t[i_end]))
    max_age = float(rec.meta.get("pss_max_age_s") or DEFAULT_PSS_MAX_AGE_S)
    interval = float(rec.meta.get("interval_s") or rec.meta.get("interval") or 1.0)
    if age is not None and age > max_age + 2 * interval:
        notes.append(
            f"the stalest PSS figure at the end of the window had gone unconfirmed for "
            f"{format_duration(age)}, beyond --pss-max-age {format_duration(max_age)}: the "
            "recorder's --pss-budget held reads back, so the last PSS changes may be missing"
        )
    # the PSS level at the end is the median of the end edge's current samples when it has
    # any (trend.levels); with none, of held-back figures, which may leave it short
    edge = end_edge(index_range(system, wins.main.t_start, wins.main.t_end))
    current = procs.current
    drift = (_pss_drift(rec, system.tick[edge])
             if current is None or not current[edge].any() else None)
    if drift is not None and drift >= PSS_DRIFT_NOTE:
        notes.append(
            f"the PSS figures at the end of the window may be short by up to "
            f"{format_bytes(drift)}: the processes faulted that much since their last "
            "smaps_rollup read, which the recorder's --pss-budget held back (pss_drift); raise "
            "--pss-budget, or end the recording later, for the figures to catch up"
        )
    gaps = [e for e in rec.events("gap") if isinstance(e.get("data"), dict)
            and wins.main.t_start <= float(e["data"].get("to_t", e["t"])) <= wins.main.t_end]
    if gaps:
        missed = sum(int(e["data"].get("missed") or 0) for e in gaps)
        first = gaps[0]["data"]
        notes.append(
            f"{missed} recorder tick(s) were missed in the window ({len(gaps)} gap(s), the "
            f"first from {format_duration(float(first.get('from_t', gaps[0]['t'])))}): no "
            "samples there; levels and rates use the samples around them"
        )
    lg = procs.loadgen
    if len(lg.count) and lg.count.max() > 0:
        n_lg = int(lg.count.max())
        rss = lg.get("rss")
        top = float(np.nanmax(rss)) if rss is not None and np.isfinite(rss).any() else None
        notes.append(
            f"the load generator ({n_lg} process{'es' if n_lg != 1 else ''}, up to "
            f"{format_bytes(top)} RSS) is excluded from the watched figures; it is listed "
            "among the processes with role loadgen"
        )
    return notes
