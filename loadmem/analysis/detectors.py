"""One small function per mechanism: the window's changes in, a ``Finding`` or None out.

Each rule follows the signatures in the project's rulebook (deltas over the window, levels
taken as medians of the first/last samples, a noise floor from the baseline phase). The
thresholds are module constants, documented in ``docs/analysis.md``; keep them in step.

Severity policy: ``info`` is a fact worth knowing that needs no action (the page cache,
another process, the recorder); ``warning`` is memory the service (or the kernel on its
behalf) keeps taking; ``critical`` is a drain big enough to matter on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loadmem.analysis.model import Finding, Severity, Window
from loadmem.analysis.trend import Change
from loadmem.units import format_bytes, format_duration

MiB = 1 << 20
GiB = 1 << 30

# --- thresholds (bytes unless stated); see docs/analysis.md -------------------------------
#: A change must also exceed NOISE_K × the baseline noise (robust sigma of one sample).
NOISE_K = 4.0
DRAIN_MIN = 32 * MiB  # used memory moved: the headline says so
COW_INFO = 8 * MiB  # unshared bytes
COW_WARNING = 32 * MiB
COW_WARNING_SHARE = 0.25  # ... or >= 16 MiB and this share of the used-memory rise
COW_CRITICAL = 1 * GiB
COW_CRITICAL_MEMTOTAL = 0.10  # ... or this share of MemTotal, or remaining >= MemAvailable
RSS_INFO = 8 * MiB
RSS_WARNING = 32 * MiB
RSS_CRITICAL = 1 * GiB
PAGE_CACHE_MIN = 32 * MiB
SHMEM_INFO = 16 * MiB
SHMEM_WARNING = 128 * MiB
SLAB_UNRECL_INFO = 32 * MiB
SLAB_UNRECL_WARNING = 256 * MiB
SLAB_RECL_INFO = 64 * MiB
PAGE_TABLES_INFO = 16 * MiB
PAGE_TABLES_WARNING = 256 * MiB
SWAP_WARNING = 16 * MiB
HUGE_INFO = 32 * MiB
OTHER_MIN = 64 * MiB
OTHER_SHARE = 0.10  # of |ΔAnonPages|
OTHER_WARNING_MEMTOTAL = 0.25
RECORDER_CPU_INFO = 0.05  # fraction of one core
RECORDER_RSS_INFO = 256 * MiB
RECORDER_STALL_INFO_MS = 100.0


@dataclass
class ProcChange:
    """One process over the window (first and last row inside it)."""

    pid: int
    name: str
    group: str  # master | worker | process
    role: str
    rss_start: float | None
    rss_end: float | None
    pss_start: float | None
    pss_end: float | None
    smaps_rss_start: float | None
    smaps_rss_end: float | None
    t_start: float
    t_end: float

    @property
    def unshared(self) -> float:
        """PSS growth not explained by RSS growth: pages this process stopped sharing."""
        if self.pss_start is None or self.pss_end is None:
            return 0.0
        rs, re_ = self.smaps_rss_start, self.smaps_rss_end
        if rs is None or re_ is None:
            rs, re_ = self.rss_start, self.rss_end
        d_rss = (re_ - rs) if rs is not None and re_ is not None else 0.0
        return (self.pss_end - self.pss_start) - max(d_rss, 0.0)

    @property
    def rss_delta(self) -> float:
        if self.rss_start is None or self.rss_end is None:
            return 0.0
        return self.rss_end - self.rss_start

    @property
    def label(self) -> str:
        return f"{self.name or '?'} {self.pid}"


@dataclass
class Context:
    """Everything the detectors look at, computed once by ``analyze``."""

    window: Window
    system: dict[str, Change]  # used, MemAvailable, MemFree, file_cache, Shmem, ...
    group: dict[str, Change]  # sums over the watched processes
    loadgen: dict[str, Change]
    watched_count: int
    mem_total: float | None
    available_end: float | None
    procs: list[ProcChange]
    sharing: dict[str, float | None]  # baseline, after_load, end
    remaining: float | None  # sum(Rss - Pss) of the group at the end
    cow_rate: float | None = None  # current unsharing rate (last half of the window)
    cow_time_to_exhaust: float | None = None  # remaining / cow_rate while it goes on
    recorder: dict[str, float | None] = field(default_factory=dict)
    has_baseline: bool = False

    def d(self, name: str, source: str = "system") -> float | None:
        c = (self.system if source == "system" else self.group).get(name)
        return None if c is None else c.delta

    def sig(self, name: str, floor: float, source: str = "system") -> bool:
        c = (self.system if source == "system" else self.group).get(name)
        return c is not None and c.significant(floor, NOISE_K)


def _mb(n: float | None, signed: bool = True) -> str:
    return format_bytes(n, signed=signed)


def _pct(part: float | None, whole: float | None) -> str:
    if part is None or not whole:
        return "n/a"
    return f"{100.0 * part / whole:+.1f}%"


def _over(ctx: Context) -> str:
    return f"over {format_duration(ctx.window.duration)}"


def evidence(ctx: Context, *names: str, source: str = "system") -> dict[str, Any]:
    out: dict[str, Any] = {}
    changes = ctx.system if source == "system" else ctx.group
    prefix = "" if source == "system" else "watched."
    for n in names:
        c = changes.get(n)
        if c is None:
            continue
        out[f"{prefix}{n}.start_bytes"] = c.start
        out[f"{prefix}{n}.end_bytes"] = c.end
        out[f"{prefix}{n}.delta_bytes"] = c.delta
        out[f"{prefix}{n}.rate_bytes_per_s"] = c.rate
        out[f"{prefix}{n}.noise_bytes"] = c.noise
    return out


# --- attribution: what the watched processes did --------------------------------------------


def cow_unshared(ctx: Context) -> float | None:
    """Bytes of copy-on-write unsharing: Δ sum PSS not explained by Δ sum RSS."""
    d_pss = ctx.d("pss", "group")
    if d_pss is None:
        return None
    d_rss = ctx.d("smaps_rss", "group")
    if d_rss is None:
        d_rss = ctx.d("rss", "group") or 0.0
    return d_pss - max(d_rss, 0.0)


def cow_unsharing(ctx: Context) -> Finding | None:
    """Sum PSS up, shared pages down by about as much, RSS (nearly) flat."""
    unshared = cow_unshared(ctx)
    pss = ctx.group.get("pss")
    if unshared is None or pss is None:
        return None
    d_shared = ctx.d("shared", "group")
    floor = max(COW_INFO, NOISE_K * pss.noise)
    if unshared < floor or d_shared is None or d_shared > -0.5 * unshared:
        return None
    d_used = ctx.d("used")
    if unshared >= COW_CRITICAL or (
        ctx.mem_total and unshared >= COW_CRITICAL_MEMTOTAL * ctx.mem_total
    ) or (ctx.remaining and ctx.available_end and ctx.remaining >= ctx.available_end):
        sev: Severity = "critical"
    elif unshared >= COW_WARNING or (
        unshared >= 16 * MiB and d_used and d_used > 0 and unshared >= COW_WARNING_SHARE * d_used
    ):
        sev = "warning"
    else:
        sev = "info"
    rss = ctx.group.get("rss")
    by = sorted(ctx.procs, key=lambda p: -p.unshared)
    parts = []
    for grp in ("worker", "master", "process"):
        members = [p for p in by if p.group == grp and p.role != "loadgen"]
        if not members:
            continue
        shown = ", ".join(f"{p.pid} {_mb(p.unshared)}" for p in members[:4])
        more = f" and {len(members) - 4} more" if len(members) > 4 else ""
        noun = {"worker": "workers", "master": "master", "process": "processes"}[grp]
        parts.append(f"{noun} {shown}{more}")
    sh = ctx.sharing
    labels = {"baseline": "before load" if sh.get("after_load") is not None else "at the start",
              "after_load": "after load", "end": "at the end"}
    ratios = ", ".join(
        f"{sh[k]:.2f} {labels[k]}" for k in ("baseline", "after_load", "end")
        if sh.get(k) is not None
    )
    cow_rate, tte = ctx.cow_rate, ctx.cow_time_to_exhaust
    if ctx.remaining is not None and tte is not None and cow_rate:
        predict = (
            f"at the current rate ({_mb(cow_rate, False)}/s) the remaining "
            f"{_mb(ctx.remaining, False)} still shared would be unshared in about "
            f"{format_duration(tte)}"
        )
    elif ctx.remaining is not None:
        predict = (
            f"the unsharing has stopped for now, but up to {_mb(ctx.remaining, False)} still "
            "shared could be unshared later"
        )
    else:
        predict = ""
    statement = (
        f"Copy-on-write unsharing: the watched processes' PSS grew {_mb(unshared, False)} "
        f"{_over(ctx)} "
        f"while their RSS moved {_pct(rss.delta if rss else None, rss.start if rss else None)} "
        f"and their shared pages fell {_mb(-d_shared, False)} (PSS growth by {'; '.join(parts)}); "
        f"sharing ratio PSS/RSS {ratios}"
        + (f"; {predict}." if predict else ".")
    )
    ev = evidence(ctx, "pss", "rss", "smaps_rss", "shared", "private_dirty", "pss_anon",
                   source="group")
    ev.update(evidence(ctx, "AnonPages", "used"))
    ev["unshared_bytes"] = unshared
    ev["remaining_bytes"] = ctx.remaining
    ev["rate_bytes_per_s"] = cow_rate
    ev["time_to_exhaust_s"] = tte
    ev["per_process_unshared_bytes"] = {f"{p.group} {p.label}": p.unshared for p in by[:20]}
    return Finding(
        id="cow-unsharing",
        severity=sev,
        statement=statement,
        explained_bytes=unshared,
        t_start=ctx.window.t_start,
        t_end=ctx.window.t_end,
        evidence=ev,
        series=["processes.pss", "processes.smaps_rss", "processes.shared_dirty",
                "processes.shared_clean", "processes.private_dirty", "system.AnonPages"],
    )


def rss_growth(ctx: Context) -> Finding | None:
    """RSS itself grows: memory the processes allocate and keep (a leak or a cache)."""
    rss = ctx.group.get("rss")
    if rss is None or rss.delta is None or rss.rate is None:
        return None
    if not rss.significant(RSS_INFO, NOISE_K) or rss.delta <= 0 or rss.rate <= 0:
        return None
    d = rss.delta
    sev: Severity = "critical" if d >= RSS_CRITICAL else "warning" if d >= RSS_WARNING else "info"
    growers = sorted((p for p in ctx.procs if p.rss_delta > 0), key=lambda p: -p.rss_delta)
    shown = ", ".join(
        f"{p.group} {p.label} {_mb(p.rss_delta)} "
        f"({_mb(p.rss_delta / max(p.t_end - p.t_start, 1e-9), False)}/s)"
        for p in growers[:4]
    )
    more = f" and {len(growers) - 4} more" if len(growers) > 4 else ""
    d_pss = ctx.d("pss", "group")
    statement = (
        f"RSS growth: the watched processes' RSS grew {_mb(d, False)} {_over(ctx)} "
        f"({_pct(d, rss.start)}, {_mb(rss.rate, False)}/s) and their PSS {_mb(d_pss)}"
        + (f": {shown}{more}." if shown else ".")
    )
    ev = evidence(ctx, "rss", "pss", "uss", source="group")
    ev.update(evidence(ctx, "AnonPages", "Committed_AS"))
    ev["per_process_rss_delta_bytes"] = {f"{p.group} {p.label}": p.rss_delta for p in growers[:20]}
    explained = min(d, d_pss) if d_pss is not None and d_pss > 0 else d
    return Finding("rss-growth", sev, statement, explained, ctx.window.t_start,
                   ctx.window.t_end, ev, ["processes.rss", "processes.pss"])


# --- attribution: the kernel and the rest of the machine -----------------------------------


def page_cache(ctx: Context) -> Finding | None:
    """Cached (minus Shmem) + Buffers up with MemAvailable barely moving: benign."""
    fc = ctx.system.get("file_cache")
    if fc is None or fc.delta is None or fc.delta <= 0 or not fc.significant(
        PAGE_CACHE_MIN, NOISE_K
    ):
        return None
    d_av, d_free = ctx.d("MemAvailable"), ctx.d("MemFree")
    statement = (
        f"Page cache: file data cached by the kernel grew {_mb(fc.delta, False)} {_over(ctx)} "
        f"(free memory {_mb(d_free)}, available memory {_mb(d_av)}); the kernel is using idle "
        "RAM for files and gives it back on demand, so this is not a leak."
    )
    ev = evidence(ctx, "file_cache", "Cached", "Buffers", "MemFree", "MemAvailable")
    return Finding("page-cache", "info", statement, fc.delta, ctx.window.t_start,
                   ctx.window.t_end, ev, ["system.Cached", "system.Buffers", "system.Shmem",
                                          "system.MemFree"])


def shmem(ctx: Context) -> Finding | None:
    """Shmem (tmpfs, shared memory segments, memfd) up: not reclaimable, not in any RSS."""
    c = ctx.system.get("Shmem")
    if c is None or c.delta is None or c.delta <= 0 or not c.significant(SHMEM_INFO, NOISE_K):
        return None
    sev: Severity = "warning" if c.delta >= SHMEM_WARNING else "info"
    mapped = ctx.d("pss_shmem", "group")
    statement = (
        f"Shared memory: Shmem (tmpfs files, shared memory segments, memfd) grew "
        f"{_mb(c.delta, False)} {_over(ctx)} (available memory {_mb(ctx.d('MemAvailable'))}; "
        f"mapped by the watched processes: {_mb(mapped)}); it is not reclaimable until the "
        "files or segments are removed."
    )
    ev = evidence(ctx, "Shmem", "Cached", "MemAvailable")
    ev.update(evidence(ctx, "pss_shmem", source="group"))
    explained = c.delta - max(mapped or 0.0, 0.0)
    return Finding("shmem", sev, statement, explained, ctx.window.t_start, ctx.window.t_end,
                   ev, ["system.Shmem", "processes.pss_shmem"])


def kernel_slab(ctx: Context) -> Finding | None:
    """Slab caches: SUnreclaim is kernel memory kept; SReclaimable mostly comes back."""
    un, re_ = ctx.system.get("SUnreclaim"), ctx.system.get("SReclaimable")
    d_un = un.delta if un is not None and un.significant(SLAB_UNRECL_INFO, NOISE_K) else None
    d_re = re_.delta if re_ is not None and re_.significant(SLAB_RECL_INFO, NOISE_K) else None
    if (d_un is None or d_un <= 0) and (d_re is None or d_re <= 0):
        return None
    sev: Severity = "info"
    if d_un is not None and d_un >= SLAB_UNRECL_WARNING:
        sev = "warning"
    statement = (
        f"Kernel slab: unreclaimable slab {_mb(ctx.d('SUnreclaim'))} and reclaimable slab "
        f"{_mb(ctx.d('SReclaimable'))} {_over(ctx)} (kernel objects: sockets, dentries, "
        "inodes; the reclaimable part comes back under pressure)."
    )
    ev = evidence(ctx, "SUnreclaim", "SReclaimable")
    return Finding("kernel-slab", sev, statement, max(d_un or 0.0, 0.0), ctx.window.t_start,
                   ctx.window.t_end, ev, ["system.SUnreclaim", "system.SReclaimable"])


def page_tables(ctx: Context) -> Finding | None:
    """Page tables and kernel stacks: many processes, threads or large mappings."""
    pt, ks = ctx.d("PageTables"), ctx.d("KernelStack")
    total = (pt or 0.0) + (ks or 0.0)
    noise = max((ctx.system[n].noise for n in ("PageTables", "KernelStack")
                 if n in ctx.system), default=0.0)
    if total < max(PAGE_TABLES_INFO, NOISE_K * noise):
        return None
    sev: Severity = "warning" if total >= PAGE_TABLES_WARNING else "info"
    statement = (
        f"Page tables and kernel stacks grew {_mb(total, False)} {_over(ctx)} (PageTables "
        f"{_mb(pt)}, KernelStack {_mb(ks)}: about {max(ks or 0, 0) / 16384:.0f} more threads "
        "at 16 KB each)."
    )
    return Finding("page-tables", sev, statement, total, ctx.window.t_start, ctx.window.t_end,
                   evidence(ctx, "PageTables", "KernelStack"),
                   ["system.PageTables", "system.KernelStack"])


def swap(ctx: Context) -> Finding | None:
    """Swap used changed: pages pushed out (memory pressure) or read back in."""
    c = ctx.system.get("swap_used")
    if c is None or c.delta is None or not c.significant(SWAP_WARNING, NOISE_K):
        return None
    d_rss = ctx.d("rss", "group")
    if c.delta > 0:
        sev: Severity = "warning"
        statement = (
            f"Swap: {_mb(c.delta, False)} were swapped out {_over(ctx)} (watched RSS "
            f"{_mb(d_rss)}): the machine is short of memory and RSS under-states what the "
            "processes hold."
        )
    else:
        sev = "info"
        statement = (
            f"Swap: {_mb(-c.delta, False)} were swapped back in {_over(ctx)}, which uses "
            "memory without any allocation."
        )
    ev = evidence(ctx, "swap_used", "MemAvailable")
    ev.update(evidence(ctx, "swap", source="group"))
    return Finding("swap", sev, statement, -c.delta if c.delta < 0 else None,
                   ctx.window.t_start, ctx.window.t_end, ev,
                   ["system.SwapFree", "processes.swap"])


def huge_pages(ctx: Context) -> Finding | None:
    """Transparent huge pages: AnonHugePages up (khugepaged collapsing, or THP faults)."""
    c = ctx.system.get("AnonHugePages")
    if c is None or c.delta is None or c.delta <= 0 or not c.significant(HUGE_INFO, NOISE_K):
        return None
    w = ctx.d("anon_huge_pages", "group")
    statement = (
        f"Transparent huge pages: AnonHugePages grew {_mb(c.delta, False)} {_over(ctx)} "
        f"(of which in the watched processes {_mb(w)}); a huge page makes a whole 2 MB "
        "resident at once."
    )
    ev = evidence(ctx, "AnonHugePages")
    ev.update(evidence(ctx, "anon_huge_pages", source="group"))
    return Finding("huge-pages", "info", statement, None, ctx.window.t_start, ctx.window.t_end,
                   ev, ["system.AnonHugePages", "processes.anon_huge_pages"])


def other_anon(ctx: Context) -> float | None:
    """ΔAnonPages not accounted for by the watched processes' (or the load generator's)
    anonymous PSS."""
    d_anon = ctx.d("AnonPages")
    if d_anon is None:
        return None
    watched = ctx.d("pss_anon", "group")
    if watched is None:
        watched = ctx.d("pss", "group") or 0.0
    lg = ctx.loadgen.get("pss_anon")
    lg_d = lg.delta if lg is not None and lg.delta is not None else 0.0
    return d_anon - watched - lg_d


def other_processes(ctx: Context) -> Finding | None:
    """Anonymous memory moving in processes nobody watched."""
    x = other_anon(ctx)
    anon = ctx.system.get("AnonPages")
    if x is None or anon is None or anon.delta is None:
        return None
    floor = max(OTHER_MIN, OTHER_SHARE * abs(anon.delta), NOISE_K * anon.noise)
    if abs(x) < floor:
        return None
    watched = ctx.d("pss_anon", "group")
    if x > 0:
        sev: Severity = "info"
        if ctx.mem_total and x >= OTHER_WARNING_MEMTOTAL * ctx.mem_total:
            sev = "warning"
        statement = (
            f"Other processes: anonymous memory outside the watched processes grew {_mb(x, False)} "
            f"{_over(ctx)} (AnonPages {_mb(anon.delta)}, watched processes' anonymous PSS "
            f"{_mb(watched)}); this was not the watched service."
        )
        explained: float | None = x
    else:
        sev = "info"
        statement = (
            f"Other processes: processes outside the watched ones released {_mb(-x, False)} "
            f"of anonymous memory {_over(ctx)}, which hides part of any drain in "
            "system-wide figures."
        )
        explained = x
    ev = evidence(ctx, "AnonPages", "used")
    ev.update(evidence(ctx, "pss_anon", source="group"))
    ev["other_anon_delta_bytes"] = x
    lg = ctx.loadgen.get("pss_anon")
    ev["loadgen.pss_anon.delta_bytes"] = None if lg is None else lg.delta
    return Finding("other-processes", sev, statement, explained, ctx.window.t_start,
                   ctx.window.t_end, ev, ["system.AnonPages", "processes.pss_anon"])


def recorder_footprint(ctx: Context) -> Finding | None:
    """The recorder's own cost, so it is never mistaken for the target's."""
    r = ctx.recorder
    cpu, rss, stall = r.get("cpu_fraction"), r.get("rss_bytes"), r.get("smaps_max_stall_ms")
    if cpu is None and rss is None:
        return None
    sev: Severity = "ok"
    if (cpu or 0) >= RECORDER_CPU_INFO or (rss or 0) >= RECORDER_RSS_INFO or (
        stall or 0
    ) >= RECORDER_STALL_INFO_MS:
        sev = "info"
    stall_txt = "n/a" if stall is None else f"{stall:.1f} ms"
    cpu_txt = "n/a" if cpu is None else f"{100 * cpu:.2f}%"
    statement = (
        f"Recorder: it used {cpu_txt} of one CPU core and {_mb(rss, False)} RSS, and its "
        f"longest smaps_rollup read stalled a watched process {stall_txt}; it is excluded from "
        "the watched figures."
    )
    return Finding("recorder-footprint", sev, statement, None, None, None,
                   {k: v for k, v in r.items()},
                   ["recorder.cpu_user", "recorder.cpu_system", "recorder.rss",
                    "recorder.smaps_max_us"])


#: The attribution detectors, in report order.
DETECTORS = (
    cow_unsharing,
    rss_growth,
    page_cache,
    shmem,
    kernel_slab,
    page_tables,
    swap,
    huge_pages,
    other_processes,
    recorder_footprint,
)
