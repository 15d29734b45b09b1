"""``analyze(recording, window=None) -> Analysis``: the verdict and the numbers behind it.

A pipeline of small steps: open the recording, pick the window (``window.py``), build the
series (``series.py``), measure how each moved (``trend.py``), run one detector per mechanism
(``detectors.py``), state the headline (``headline.py``), then fill the named key figures the
reporters, gates and ``loadmem compare`` read (``docs/analysis.md`` lists them; keep them
stable) and the phase / process tables (``summaries.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loadmem.analysis import container, headline, summaries, traffic
from loadmem.analysis import detectors as det
from loadmem.analysis.model import Analysis, Window
from loadmem.analysis.series import (
    ProcessData,
    index_range,
    read_processes,
    read_system,
    tick_at,
)
from loadmem.analysis.trend import Change, change, noise_sigma, theil_sen
from loadmem.analysis.window import resolve
from loadmem.errors import LoadmemError
from loadmem.recording.reader import Recording, open_recording
from loadmem.units import format_bytes, format_duration

#: System series measured over the window (names understood by ``SystemSeries.get``).
SYSTEM_SERIES = (
    "used",
    "MemAvailable",
    "MemFree",
    "file_cache",
    "Cached",
    "Buffers",
    "Shmem",
    "SUnreclaim",
    "SReclaimable",
    "AnonPages",
    "PageTables",
    "KernelStack",
    "swap_used",
    "AnonHugePages",
    "Committed_AS",
)
#: Noise floor: at least this many baseline samples, else the window's own samples.
MIN_BASELINE_SAMPLES = 5


def _changes(
    t: np.ndarray, series: dict[str, np.ndarray], win: slice, base: slice | None
) -> dict[str, Change]:
    out = {}
    for name, y in series.items():
        yw = y[win]
        if not np.isfinite(yw).any():
            continue
        noise = None
        if base is not None:
            yb = y[base]
            if np.isfinite(yb).sum() >= MIN_BASELINE_SAMPLES:
                noise = noise_sigma(yb)
        out[name] = change(t[win], yw, noise)
    return out


def _ratio(p: ProcessData, i: int | None) -> float | None:
    pss, rss = summaries.at(p.sums.get("pss"), i), summaries.at(p.sums.get("smaps_rss"), i)
    if pss is None or not rss:
        return None
    return pss / rss


#: Below this much unsharing over the recent half of the window, it has stopped for now.
COW_STOPPED_BYTES = 1 << 20


def _cow_rate(
    t: np.ndarray, p: ProcessData, win: slice, remaining: float | None
) -> tuple[float | None, float | None]:
    """Current unsharing rate: Theil–Sen slope of sum PSS minus that of sum smaps Rss over
    the last half of the window (at least 5 samples), and the time until ``remaining`` would
    be unshared at that rate (None when it has stopped)."""
    pss, rss = p.sums.get("pss"), p.sums.get("smaps_rss")
    if pss is None:
        return None, None
    n = win.stop - win.start
    recent = slice(max(win.start, win.stop - max(5, n // 2)), win.stop)
    r_pss = theil_sen(t[recent], pss[recent])
    if r_pss is None:
        return None, None
    r_rss = theil_sen(t[recent], rss[recent]) if rss is not None else None
    rate = r_pss - max(r_rss or 0.0, 0.0)
    span = float(t[recent.stop - 1] - t[recent.start])
    if remaining is None or rate <= 0 or rate * span < COW_STOPPED_BYTES:
        return rate, None
    return rate, remaining / rate


#: A note is added when PSS figures at the window's end are older than the recorder's
#: --pss-max-age (meta ``pss_max_age_s``, else this) plus two intervals: the budget held
#: reads back. Younger figures are current: the recorder re-reads a process that faults.
DEFAULT_PSS_MAX_AGE_S = 15.0


def _pss_staleness(rec: Recording, tick: int, t_end: float) -> float | None:
    """How long the stalest PSS figure among the rows of ``tick`` had gone unconfirmed
    (None if unknown): ``pss_stale_s`` (0 for a figure the recorder still knew to hold, however
    old its read); in recordings made before that column, the age of the oldest read.

    Reads only the row groups whose statistics contain ``tick``: cheap on any size."""
    import pyarrow.parquet as pq

    stalest = None
    for f in rec.files("processes"):
        try:
            names = pq.read_schema(f).names
            stale = "pss_stale_s" in names
            cols = ["tick", "t", "pss_stale_s"] if stale else ["tick", "pss_read_t"]
            tb = pq.read_table(f, columns=cols, filters=[("tick", "=", tick)])
        except (OSError, ValueError, pa.ArrowException):
            continue
        if not tb.num_rows:
            continue
        if stale:
            m = pc.max(tb.column("pss_stale_s")).as_py()
            age = None if m is None else m + max(t_end - pc.max(tb.column("t")).as_py(), 0.0)
        else:
            m = pc.min(tb.column("pss_read_t")).as_py()
            age = None if m is None else max(t_end - m, 0.0)
        if age is not None and (stalest is None or age > stalest):
            stalest = age
    return stalest


def analyze(recording: Recording | str | Path, window: str | None = None,
            limit_horizon: float = container.LIMIT_HORIZON_S) -> Analysis:
    """Explain what happened to memory in ``window`` (default: the observe phase, else the
    whole recording). Raises ``LoadmemError`` for a recording with nothing usable.
    ``limit_horizon``: a container limit predicted within this many seconds is critical."""
    rec = recording if isinstance(recording, Recording) else open_recording(recording)
    system = read_system(rec)
    if len(system.t) < 2:
        raise LoadmemError(
            f"{rec.path} has {len(system.t)} system sample(s): nothing to analyse",
            "record for longer (at least a few intervals)",
        )
    t_first, t_last = float(system.t[0]), float(system.t[-1])
    wins = resolve(rec.phases(), t_first, t_last, window)
    main = wins.main
    win = index_range(system, main.t_start, main.t_end)
    if win.stop - win.start < 2:
        raise LoadmemError(
            f"the {main.name} window ({format_duration(main.t_start)} to "
            f"{format_duration(main.t_end)}) holds fewer than 2 samples",
            "choose a longer --window",
        )
    i_start, i_end = win.start, win.stop - 1
    base = index_range(system, wins.baseline.t_start, wins.baseline.t_end) if wins.baseline \
        else None
    i_base = (base.stop - 1 if base is not None and base.stop > base.start else i_start)
    i_load = None
    if wins.load is not None:
        i_load = int(np.searchsorted(system.t, wins.load.t_end, side="right")) - 1
    checkpoints = {
        "baseline": int(system.tick[i_base]),
        "load_end": int(system.tick[i_load]) if i_load is not None else None,
        "end": int(system.tick[i_end]),
    }
    cp_ticks = [v for v in checkpoints.values() if v is not None]
    cp_ticks.append(int(system.tick[i_start]))
    for w in wins.phases:
        cp_ticks += [tick_at(system, w.t_start), tick_at(system, w.t_end)]
    procs = read_processes(
        rec, system, (int(system.tick[i_start]), int(system.tick[i_end])), cp_ticks
    )
    notes = [*rec.notes, *wins.notes, *procs.notes]
    sys_series = {n: system.get(n) for n in SYSTEM_SERIES}
    sys_ch = _changes(system.t, sys_series, win, base)
    grp_ch = _changes(system.t, procs.sums, win, base)
    lg_series = {k: np.where(procs.loadgen_count > 0, v, np.nan) for k, v in procs.loadgen.items()}
    lg_ch = _changes(system.t, lg_series, win, base)
    if base is None:
        notes.append("no baseline phase: the noise floor was estimated from the window itself")
    mem_total = summaries.at(system.get("MemTotal"), i_end)
    groups = summaries.groups(procs)
    watched_now = procs.count[i_end] if len(procs.count) else 0
    pss_now = procs.pss_count[i_end] if len(procs.pss_count) else 0
    if watched_now and pss_now < watched_now:
        notes.append(
            f"{int(watched_now - pss_now)} of {int(watched_now)} watched processes had no "
            "smaps_rollup figures at the end (never read or not readable): PSS sums leave "
            "them out"
        )
    if procs.rows:
        age = _pss_staleness(rec, checkpoints["end"], float(system.t[i_end]))
        max_age = float(rec.meta.get("pss_max_age_s") or DEFAULT_PSS_MAX_AGE_S)
        interval = float(rec.meta.get("interval_s") or rec.meta.get("interval") or 1.0)
        if age is not None and age > max_age + 2 * interval:
            notes.append(
                f"the stalest PSS figure at the end of the window had gone unconfirmed for "
                f"{format_duration(age)}, beyond --pss-max-age {format_duration(max_age)}: the "
                "recorder's --pss-budget held reads back, so the last PSS changes may be missing"
            )
    if procs.rows == 0:
        notes.append("no per-process samples: only system-wide figures were analysed")
    remaining = None
    pss_end = summaries.at(procs.sums.get("pss"), i_end)
    srss_end = summaries.at(procs.sums.get("smaps_rss"), i_end)
    if pss_end is not None and srss_end is not None:
        remaining = max(srss_end - pss_end, 0.0)
    sharing = {
        "baseline": _ratio(procs, i_base),
        "after_load": _ratio(procs, i_load if i_load is not None else None),
        "end": _ratio(procs, i_end),
    }
    cow_rate, tte = _cow_rate(system.t, procs, win, remaining)
    rec_fig = summaries.recorder_figures(rec)
    ctx = det.Context(
        window=main, system=sys_ch, group=grp_ch, loadgen=lg_ch,
        watched_count=int(watched_now), mem_total=mem_total,
        available_end=summaries.at(system.get("MemAvailable"), i_end),
        procs=summaries.proc_changes(procs, groups), sharing=sharing, remaining=remaining,
        cow_rate=cow_rate, cow_time_to_exhaust=tte,
        recorder=rec_fig, has_baseline=base is not None,
    )
    findings = [f for f in (d(ctx) for d in det.DETECTORS) if f is not None]

    # the remainder of the used-memory change that no meminfo/PSS component accounts for
    def dd(n: str, src: str = "system") -> float:
        return ctx.d(n, src) or 0.0

    d_used = ctx.d("used")
    other = det.other_anon(ctx)
    d_pss = ctx.d("pss", "group")
    shmem_unmapped = dd("Shmem") - max(dd("pss_shmem", "group"), 0.0)
    unexplained = None
    if d_used is not None:
        unexplained = d_used - (
            (d_pss or 0.0) + (other or 0.0) + shmem_unmapped + dd("SUnreclaim")
            + dd("PageTables") + dd("KernelStack")
        )
    drain = headline.drain_finding(ctx, unexplained)
    # the load generator is excluded from the watched figures: say how big it was
    if len(procs.loadgen_count) and procs.loadgen_count.max() > 0:
        drain.evidence["loadgen.count_max"] = float(procs.loadgen_count.max())
        drain.evidence["loadgen.rss_max_bytes"] = float(procs.loadgen["rss"].max())
        n_lg = int(procs.loadgen_count.max())
        notes.append(
            f"the load generator ({n_lg} process{'es' if n_lg != 1 else ''}, up to "
            f"{format_bytes(procs.loadgen['rss'].max())} RSS) is excluded from the watched "
            "figures; it is listed among the processes with role loadgen"
        )
    lg_pss = ctx.loadgen.get("pss")
    drain.evidence["loadgen.pss_delta_bytes"] = lg_pss.delta if lg_pss is not None else None
    findings.insert(0, drain)

    tr = traffic.read_traffic(rec)
    if wins.load is not None:
        load_stats = traffic.summarize(tr, wins.load.t_start, wins.load.t_end)
        load_stats.update(traffic.load_stats_totals(rec))
    elif not tr.empty:
        load_stats = traffic.summarize(tr, -np.inf, np.inf)
        load_stats["rps"] = (load_stats["requests"] / (t_last - t_first)
                             if t_last > t_first else None)
    else:
        load_stats = None

    unshared = det.cow_unshared(ctx)
    workers_end = summaries.workers_at(procs, groups, checkpoints["end"])
    w_pss = sum(r["pss"] for r in workers_end) if workers_end else None
    rss_ch = ctx.group.get("rss")
    figures: dict[str, float | None] = {
        "window.duration_s": main.duration,
        "observe.used_delta_bytes": d_used,
        "observe.used_rate_bytes_per_s": sys_ch["used"].rate if "used" in sys_ch else None,
        "observe.available_delta_bytes": ctx.d("MemAvailable"),
        "observe.free_delta_bytes": ctx.d("MemFree"),
        "watched.rss_delta_bytes": ctx.d("rss", "group"),
        "watched.pss_delta_bytes": d_pss,
        "watched.uss_delta_bytes": ctx.d("uss", "group"),
        "watched.rss_end_bytes": summaries.at(procs.sums.get("rss"), i_end),
        "watched.pss_end_bytes": pss_end,
        "watched.count": float(watched_now),
        "workers.count": float(len(workers_end)),
        "workers.pss_end_bytes": w_pss,
        "workers.pss_per_worker_end_bytes": w_pss / len(workers_end) if workers_end else None,
        "sharing_ratio.baseline": sharing["baseline"],
        "sharing_ratio.after_load": sharing["after_load"],
        "sharing_ratio.end": sharing["end"],
        "cow.unshared_bytes": max(unshared, 0.0) if unshared is not None else None,
        "cow.remaining_bytes": remaining,
        "cow.rate_bytes_per_s": cow_rate,
        "cow.time_to_exhaust_s": tte,
        "rss.growth_rate_bytes_per_s": rss_ch.rate if rss_ch is not None else None,
        "page_cache.delta_bytes": ctx.d("file_cache"),
        "shmem.delta_bytes": ctx.d("Shmem"),
        "slab.delta_bytes": (None if ctx.d("SUnreclaim") is None
                             else dd("SUnreclaim") + dd("SReclaimable")),
        "other_processes.delta_bytes": other,
        "unexplained.delta_bytes": unexplained,
        "requests.total": float(load_stats["requests"]) if load_stats else None,
        "requests.failures": float(load_stats["failures"]) if load_stats else None,
        "requests.failure_ratio": (load_stats["failures"] / load_stats["requests"]
                                   if load_stats and load_stats["requests"] else None),
        "requests.rps": load_stats["rps"] if load_stats else None,
        "latency.p50_ms": load_stats["p50_ms"] if load_stats else None,
        "latency.p95_ms": load_stats["p95_ms"] if load_stats else None,
        "latency.p99_ms": load_stats["p99_ms"] if load_stats else None,
        "recorder.cpu_fraction": rec_fig["cpu_fraction"],
        "recorder.rss_bytes": rec_fig["rss_bytes"],
        "recorder.smaps_max_stall_ms": rec_fig["smaps_max_stall_ms"],
    }
    view = container.container_view(rec, main.t_start, main.t_end)
    if view is not None:
        findings += container.findings(view, findings, ctx.d("rss", "group"),
                                       rss_ch.start if rss_ch is not None else None,
                                       horizon=limit_horizon)
        figures.update(view.figures())
    else:
        figures.update(dict.fromkeys(container.FIGURES))
    figures = {k: (None if v is None or not np.isfinite(v) else float(v))
               for k, v in figures.items()}
    return Analysis(
        recording=str(rec.path),
        label=rec.label,
        window=Window(main.name, main.t_start, main.t_end),
        headline=headline.headline(drain, findings),
        findings=findings,
        figures=figures,
        phases=summaries.phase_rows(wins, system, procs, tr),
        processes=summaries.process_rows(procs, groups, checkpoints),
        meta=dict(rec.meta),
        notes=notes,
        container=view.to_dict() if view is not None else None,
    )
