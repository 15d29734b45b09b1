"""One small function per mechanism: a window's measured changes in, a ``Finding`` or None out.

Each rule follows the signatures in the project's rulebook and judges the quantity that
measures its mechanism, never a sum that mixes shared and private pages:

- copy-on-write unsharing: the watched processes' PSS (like with like, processes that
  appeared or exited accounted apart) grows while their shared pages fall, beyond what new
  anonymous memory (RssAnon) and file / shared memory pages (Pss_File, Pss_Shmem) explain;
- growth: what the processes hold alone, new anonymous memory (RssAnon of the same processes
  at both ends, no more than their USS grew when every one of them has smaps figures); RSS
  that grows through shared file or shmem pages is the page cache's or shmem's, sized by
  Cached and Shmem; processes that appeared are new, not growth;
- page cache, shmem, slab, page tables, swap, huge pages: the kernel's own counters;
- other processes: anonymous memory (AnonPages) the watched processes' Pss_Anon does not
  account for.

A change counts when it is a level change (end minus start, medians of the edge samples)
beyond ``NOISE_K`` times the baseline's noise and an absolute floor: a leak during the load
followed by a flat stretch is a step, found as well as a slope. The thresholds are module
constants, documented in ``docs/analysis.md``; keep them in step.

Severity policy: ``info`` is a fact worth knowing that needs no action (the page cache,
another process, the recorder); ``warning`` is memory the service (or the kernel on its
behalf) keeps taking; ``critical`` is a drain big enough to matter on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loadmem.analysis.context import Context, ProcChange, where
from loadmem.analysis.figures import format_figure
from loadmem.analysis.model import Finding, Severity
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
GROWTH_INFO = 8 * MiB
GROWTH_WARNING = 32 * MiB
GROWTH_CRITICAL = 1 * GiB
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
#: "Summing RSS over-counts": sum RSS at least this many times sum PSS (or more than used
#: memory), and by this much, at either end of the window.
OVERCOUNT_FACTOR = 1.5
OVERCOUNT_MIN = 32 * MiB
#: RSS that moved through shared pages is mentioned from this size.
RSS_SHARED_MIN = 16 * MiB


def _mb(n: float | None, signed: bool = True) -> str:
    return format_bytes(n, signed=signed)


def _pct(part: float | None, whole: float | None) -> str:
    if part is None or not whole:
        return "n/a"
    return f"{100.0 * part / whole:+.1f}%"


def _over(ctx: Context) -> str:
    return f"{where(ctx.window)} (over {format_duration(ctx.window.duration)})"


def _rate(amount: float, seconds: float) -> str:
    """The mean rate of an amount over a span: consistent with the amount by construction."""
    return f"{_mb(amount / max(seconds, 1e-9))}/s"


def evidence(ctx: Context, *names: str, source: str = "system") -> dict[str, Any]:
    out: dict[str, Any] = {}
    changes = ctx._changes(source)
    prefix = {"system": "", "group": "watched.", "everyone": "watched.all.",
              "loadgen": "loadgen."}[source]
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


def by_phase(ctx: Context, measure: Callable[[Context], float | None],
             processes: bool = True) -> str:
    """``during load +114 MB, after load +0.2 MB``: a measure over each part of the window
    (empty when the window is not split). A measure of the processes is split only when each
    part compares the same processes as the whole window (none appeared, exited or was first
    read inside it): otherwise the parts would not add up to the whole."""
    if processes and any(p.appeared or p.exited or p.late
                         for c in (ctx, *ctx.parts) for p in c.procs):
        return ""
    bits = []
    for part in ctx.parts:
        v = measure(part)
        if v is not None:
            bits.append(f"{where(part.window)} {_mb(v)}")
    return ", ".join(bits)


def _split(ctx: Context, measure: Callable[[Context], float | None],
           processes: bool = True) -> str:
    text = by_phase(ctx, measure, processes)
    return f" ({text})" if text else ""


# --- copy-on-write unsharing -----------------------------------------------------------------


def birth_private(ctx: Context) -> dict[int, float]:
    """What each process that appeared held alone when it started (identity key -> bytes).

    A forked process starts sharing nearly everything. Its first smaps read can come some
    ticks later, after it already copied pages; so it is taken as the least private memory
    (USS) any process forked alongside it (same parent and name) had when first read, or its
    own if that was less. Private memory beyond that, without new anonymous memory
    (RssAnon), is what it copied."""
    first_uss: dict[tuple[Any, Any], list[float]] = {}
    for p in ctx.appeared:
        u = p.value("uss", "first_smaps")
        if u is not None:
            first_uss.setdefault((p.first.get("ppid"), p.name), []).append(u)
    out = {}
    for p in ctx.appeared:
        u = p.value("uss", "first_smaps")
        if u is not None:
            out[p.key] = min(u, *first_uss[(p.first.get("ppid"), p.name)])
    return out


def cow_unshared(ctx: Context) -> float | None:
    """Bytes the watched processes stopped sharing (copy-on-write) over the window.

    Anonymous PSS (Pss_Anon; PSS on kernels before 5.8), like with like: the change of the
    processes with smaps figures at both ends; for a process first read inside the window,
    its change since that read; for a process that appeared, its anonymous PSS at the end
    less what it held alone when it started (``birth_private``: its share of the pages it
    shares came from the others, not new memory); less, for a process that exited, its
    share of shared pages when the window opened (handed back to the others when it went:
    not new memory either, and what it copied before it went left with it). Less new
    anonymous memory (RssAnon growth: allocation, not unsharing).
    """
    anon = (ctx.d("pss_anon", "group") is not None
            or any(p.value("pss_anon", "last") is not None for p in ctx.procs))
    col = "pss_anon" if anon else "pss"
    d = ctx.d(col, "group")
    read = [p for p in (*ctx.late, *ctx.appeared) if p.first_smaps is not None]
    if d is None and not read:
        return None
    amount = d or 0.0
    amount += sum(p.delta(col) or 0.0 for p in ctx.late)
    births = birth_private(ctx)
    amount += sum((p.value(col, "last") or 0.0) - births[p.key]
                  for p in ctx.appeared if p.key in births)
    amount -= sum(p.share("first" if p.first.get("pss") is not None else "first_smaps",
                          anon=anon)
                  for p in ctx.exited if p.first_smaps is not None or p.first.get("pss"))
    if not anon:  # kernels before 5.8: PSS includes file pages; PSS matched by RSS is not
        amount -= max(ctx.d("smaps_rss", "group") or 0.0, 0.0)  # unsharing either
    amount -= max(ctx.d("rss_anon", "group") or 0.0, 0.0)
    amount -= sum(max(p.delta("rss_anon") or 0.0, 0.0) for p in ctx.late)
    amount -= sum(max((p.value("rss_anon", "last") or 0.0)
                      - (p.value("rss_anon", "first") or 0.0), 0.0)
                  for p in ctx.appeared if p.key in births)
    return amount


def shared_delta(ctx: Context) -> float | None:
    """Change of shared pages (Shared_Clean + Shared_Dirty): the same processes, plus the
    ones first read or started inside the window, from their first read."""
    d = ctx.d("shared", "group")
    read = [p for p in (*ctx.late, *ctx.appeared) if p.first_smaps is not None]
    if d is None and not read:
        return None
    return (d or 0.0) + sum(p.delta("shared") or 0.0 for p in read)


def _groups_text(procs: list[ProcChange], amount: Callable[[ProcChange], float]) -> str:
    parts = []
    for grp in ("worker", "master", "process"):
        members = sorted((p for p in procs if p.group == grp), key=lambda p: -amount(p))
        if not members:
            continue
        shown = ", ".join(f"{p.pid} {_mb(amount(p))}" for p in members[:4])
        more = f" and {len(members) - 4} more" if len(members) > 4 else ""
        noun = {"worker": "workers", "master": "master", "process": "processes"}[grp]
        parts.append(f"{noun} {shown}{more}")
    return "; ".join(parts)


def sharing_text(ctx: Context) -> str:
    """``0.33 before load, 0.33 after load, 0.75 at the end`` (only the points the
    recording has)."""
    sh = ctx.sharing
    labels = {"baseline": "before load" if ctx.has_load else "at the start",
              "after_load": "after load", "end": "at the end"}
    return ", ".join(f"{sh[k]:.2f} {labels[k]}" for k in ("baseline", "after_load", "end")
                     if sh.get(k) is not None)


def cow_unsharing(ctx: Context) -> Finding | None:
    """Sum PSS up, shared pages down by about as much, RSS (nearly) flat."""
    unshared = cow_unshared(ctx)
    d_shared = shared_delta(ctx)
    if unshared is None or d_shared is None:
        return None
    pss = ctx.group.get("pss") or ctx.everyone.get("pss")
    floor = max(COW_INFO, NOISE_K * (pss.noise if pss is not None else 0.0))
    if unshared < floor or d_shared > -0.5 * unshared:
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
    procs = [p for p in ctx.procs if not p.exited and p.first_smaps is not None]
    growers = _groups_text(procs, lambda p: p.unshared)
    ratios = sharing_text(ctx)
    rate, tte = ctx.cow_rate, ctx.cow_time_to_exhaust
    if ctx.remaining is not None and tte is not None and rate:
        predict = (
            f"at the current rate ({_mb(rate, False)}/s) the remaining "
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
        f"Copy-on-write unsharing: the watched processes copied {_mb(unshared, False)} of "
        f"pages they shared {_over(ctx)}{_split(ctx, cow_unshared)}: their PSS grew while "
        f"their RSS moved {_pct(rss.delta if rss else None, rss.start if rss else None)} and "
        f"their shared pages fell {_mb(-d_shared, False)}"
        + (f" (PSS growth by {growers})" if growers else "")
        + (f"; sharing ratio PSS/RSS {ratios}" if ratios else "")
        + (f"; {predict}." if predict else ".")
    )
    ev = evidence(ctx, "pss", "rss", "rss_anon", "smaps_rss", "shared", "private_dirty",
                  "pss_anon", "pss_file", "pss_shmem", source="group")
    ev.update(evidence(ctx, "AnonPages", "used"))
    ev["unshared_bytes"] = unshared
    ev["remaining_bytes"] = ctx.remaining
    ev["rate_bytes_per_s"] = rate
    ev["time_to_exhaust_s"] = tte
    ev["per_process_unshared_bytes"] = {
        f"{p.group} {p.label}": p.unshared for p in sorted(procs, key=lambda p: -p.unshared)[:20]
    }
    ev.update(_phase_evidence(ctx, "unshared_bytes", cow_unshared))
    return Finding(
        id="cow-unsharing", severity=sev, statement=statement, explained_bytes=unshared,
        t_start=ctx.window.t_start, t_end=ctx.window.t_end, evidence=ev,
        series=["processes.pss", "processes.shared_dirty", "processes.shared_clean",
                "processes.private_dirty", "processes.rss_anon", "system.AnonPages"],
    )


def _phase_evidence(ctx: Context, key: str,
                    measure: Callable[[Context], float | None]) -> dict[str, Any]:
    return {f"{p.window.name}.{key}": measure(p) for p in ctx.parts}


# --- growth: what the processes hold alone ---------------------------------------------------


def anon_delta(ctx: Context) -> float | None:
    """New anonymous memory of the processes present at both ends (RssAnon; VmRSS less file
    and shmem pages on recordings without it)."""
    d = ctx.d("rss_anon", "group")
    if d is not None:
        return d
    rss = ctx.d("rss", "group")
    if rss is None:
        return None
    return rss - (ctx.d("rss_file", "group") or 0.0) - (ctx.d("rss_shmem", "group") or 0.0)


def growth(ctx: Context) -> float | None:
    """What the watched processes hold alone grew by: their new anonymous memory, and no
    more than their USS grew when every one of them has smaps figures at both ends (copy-on-
    write unsharing raises USS but not RssAnon; shared memory and file pages raise neither)."""
    alloc = anon_delta(ctx)
    if alloc is None:
        return None
    uss = ctx.d("uss", "group")
    if uss is not None and ctx.same_smaps_count == ctx.same_count > 0:
        return min(alloc, uss)
    return alloc


def rss_growth(ctx: Context) -> Finding | None:
    """The processes allocate and keep memory (a leak, a cache): a level change, step or
    slope, of what they hold alone."""
    g = growth(ctx)
    if g is None or g <= 0:
        return None
    c = ctx.group.get("rss_anon") or ctx.group.get("rss")
    noise = c.noise if c is not None else 0.0
    if g < max(GROWTH_INFO, NOISE_K * noise):
        return None
    sev: Severity = ("critical" if g >= GROWTH_CRITICAL else "warning" if g >= GROWTH_WARNING
                     else "info")
    growers = sorted((p for p in ctx.procs if not p.appeared and not p.exited
                      and (p.delta("rss_anon") or 0) > 0),
                     key=lambda p: -(p.delta("rss_anon") or 0.0))
    shown = ", ".join(
        f"{p.group} {p.label} {_mb(p.delta('rss_anon'))} "
        f"({_rate(p.delta('rss_anon') or 0.0, p.span)})"
        for p in growers[:4]
    )
    more = f" and {len(growers) - 4} more" if len(growers) > 4 else ""
    d_uss, d_pss, d_rss = ctx.d("uss", "group"), ctx.d("pss", "group"), ctx.d("rss", "group")
    n = ctx.same_count
    statement = (
        f"Memory growth: what the {n} watched process{'es' if n != 1 else ''} present "
        f"throughout hold{'s' if n == 1 else ''} alone grew {_mb(g, False)} {_over(ctx)}"
        f"{_split(ctx, growth)}, "
        f"{_rate(g, ctx.window.duration)} on average (new anonymous memory "
        f"{_mb(anon_delta(ctx))}, USS {_mb(d_uss)}, PSS {_mb(d_pss)}, RSS {_mb(d_rss)})"
        + (f": {shown}{more}." if shown else ".")
    )
    ev = evidence(ctx, "rss", "rss_anon", "pss", "uss", "pss_anon", source="group")
    ev.update(evidence(ctx, "AnonPages", "Committed_AS"))
    ev["growth_bytes"] = g
    ev["per_process_anon_delta_bytes"] = {f"{p.group} {p.label}": p.delta("rss_anon")
                                          for p in growers[:20]}
    ev.update(_phase_evidence(ctx, "growth_bytes", growth))
    return Finding("rss-growth", sev, statement, g, ctx.window.t_start, ctx.window.t_end, ev,
                   ["processes.rss_anon", "processes.private_clean", "processes.private_dirty",
                    "processes.pss"])


# --- the kernel and the rest of the machine --------------------------------------------------


def _d_file(ctx: Context) -> float | None:
    return ctx.d("file_cache")


def page_cache(ctx: Context) -> Finding | None:
    """Cached (minus Shmem) + Buffers up with MemAvailable barely moving: benign."""
    fc = ctx.system.get("file_cache")
    if fc is None or fc.delta is None or fc.delta <= 0 or not fc.significant(
        PAGE_CACHE_MIN, NOISE_K
    ):
        return None
    d_av, d_free = ctx.d("MemAvailable"), ctx.d("MemFree")
    d_rss_file = ctx.d("rss_file", "group")
    mapped = ""
    if d_rss_file is not None and d_rss_file >= RSS_SHARED_MIN:
        mapped = (f"; the watched processes' RSS rose {_mb(d_rss_file, False)} through these "
                  "file pages (RssFile), counted once per process that maps them")
    statement = (
        f"Page cache: file data cached by the kernel grew {_mb(fc.delta, False)} {_over(ctx)}"
        f"{_split(ctx, _d_file, processes=False)} (free memory {_mb(d_free)}, available "
        f"memory {_mb(d_av)})"
        f"{mapped}; the kernel is using idle RAM for files and gives it back on demand, so "
        "this is not a leak."
    )
    ev = evidence(ctx, "file_cache", "Cached", "Buffers", "MemFree", "MemAvailable")
    ev.update(evidence(ctx, "rss_file", source="group"))
    return Finding("page-cache", "info", statement, fc.delta, ctx.window.t_start,
                   ctx.window.t_end, ev, ["system.Cached", "system.Buffers", "system.Shmem",
                                          "system.MemFree", "processes.rss_file"])


def _d_shmem(ctx: Context) -> float | None:
    return ctx.d("Shmem")


def shmem_mapped(ctx: Context) -> float | None:
    """Shared memory the watched processes map more of: the change of their Pss_Shmem (every
    watched process, like with like), each page counted once however many map it."""
    return ctx.total_delta("pss_shmem")


def shmem_theirs(ctx: Context) -> float | None:
    """The part of the Shmem growth that is the watched processes': what they map more of,
    no more than Shmem grew (mapping pages that already existed takes no new memory)."""
    mapped, d = shmem_mapped(ctx), ctx.d("Shmem")
    if mapped is None or d is None or mapped <= 0 or d <= 0:
        return None
    return min(mapped, d)


def shmem(ctx: Context) -> Finding | None:
    """Shmem (tmpfs, shared memory segments, memfd) up: not reclaimable. Sized by Shmem, the
    part the watched processes map by their Pss_Shmem (however many map it: each one's RSS
    counts it again), the rest said to be elsewhere on the machine."""
    c = ctx.system.get("Shmem")
    if c is None or c.delta is None or c.delta <= 0 or not c.significant(SHMEM_INFO, NOISE_K):
        return None
    theirs = shmem_theirs(ctx)
    d_rss_shmem = ctx.d("rss_shmem", "group")
    n = ctx.same_count
    if theirs is not None and theirs >= SHMEM_INFO:
        size = theirs
        sev: Severity = "warning" if theirs >= SHMEM_WARNING else "info"
        rss = ""
        if d_rss_shmem is not None and d_rss_shmem >= RSS_SHARED_MIN:
            rss = (f"; their RSS rose {_mb(d_rss_shmem, False)} through these pages "
                   "(RssShmem, counted once per process that maps them)")
        rest = c.delta - theirs
        elsewhere = (f"; Shmem grew {_mb(c.delta, False)} in all, {_mb(rest, False)} of it "
                     "not mapped by them (tmpfs files or segments of other processes)"
                     if rest >= SHMEM_INFO else "")
        statement = (
            f"Shared memory: the {n} watched process{'es' if n != 1 else ''} mapped "
            f"{_mb(theirs, False)} more of shared memory segments or tmpfs files (their PSS "
            f"of it) {_over(ctx)}{_split(ctx, shmem_theirs)}{rss}{elsewhere}; it is not "
            "reclaimable until the segments or files are removed."
        )
    else:  # tmpfs files (which no process maps) or segments the watched processes do not map
        size = c.delta
        sev = "warning" if c.delta >= SHMEM_WARNING else "info"
        statement = (
            f"Shared memory: Shmem (tmpfs files, shared memory segments, memfd) grew "
            f"{_mb(c.delta, False)} {_over(ctx)}{_split(ctx, _d_shmem, False)} (available "
            f"memory {_mb(ctx.d('MemAvailable'))}), not mapped by the watched processes "
            f"(their PSS of shared memory {_mb(shmem_mapped(ctx))}): tmpfs files, or segments "
            "of other processes; it is not reclaimable until they are removed."
        )
    ev = evidence(ctx, "Shmem", "Cached", "MemAvailable")
    ev.update(evidence(ctx, "pss_shmem", "rss_shmem", source="group"))
    ev["watched.pss_shmem.total_delta_bytes"] = shmem_mapped(ctx)
    ev["shmem.theirs_bytes"] = theirs
    return Finding("shmem", sev, statement, size, ctx.window.t_start, ctx.window.t_end,
                   ev, ["system.Shmem", "processes.rss_shmem", "processes.pss_shmem"])


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
    """ΔAnonPages not accounted for by the watched processes' anonymous PSS (every one with
    figures at each end: the same ones, plus what appeared, minus what exited) or the load
    generator's."""
    d_anon = ctx.d("AnonPages")
    if d_anon is None:
        return None
    watched = ctx.total_delta("pss_anon")
    if watched is None:
        watched = ctx.total_delta("pss") or 0.0
    return d_anon - watched - (ctx.d("pss_anon", "loadgen") or 0.0)


def other_processes(ctx: Context) -> Finding | None:
    """Anonymous memory moving in processes nobody watched."""
    x = other_anon(ctx)
    anon = ctx.system.get("AnonPages")
    if x is None or anon is None or anon.delta is None:
        return None
    floor = max(OTHER_MIN, OTHER_SHARE * abs(anon.delta), NOISE_K * anon.noise)
    if abs(x) < floor:
        return None
    watched = ctx.total_delta("pss_anon")
    if x > 0:
        sev: Severity = "info"
        if ctx.mem_total and x >= OTHER_WARNING_MEMTOTAL * ctx.mem_total:
            sev = "warning"
        statement = (
            f"Other processes: anonymous memory outside the watched processes grew "
            f"{_mb(x, False)} {_over(ctx)} (AnonPages {_mb(anon.delta)}, watched processes' "
            f"anonymous PSS {_mb(watched)}); this was not the watched service."
        )
    else:
        sev = "info"
        statement = (
            f"Other processes: processes outside the watched ones released {_mb(-x, False)} "
            f"of anonymous memory {_over(ctx)}, which hides part of any drain in "
            "system-wide figures."
        )
    ev = evidence(ctx, "AnonPages", "used")
    ev.update(evidence(ctx, "pss_anon", source="group"))
    ev["other_anon_delta_bytes"] = x
    ev["loadgen.pss_anon.delta_bytes"] = ctx.d("pss_anon", "loadgen")
    return Finding("other-processes", sev, statement, x, ctx.window.t_start,
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
    stall_txt = format_figure("recorder.smaps_max_stall_ms", stall)
    cpu_txt = format_figure("recorder.cpu_fraction", cpu)
    statement = (
        f"Recorder: it used {cpu_txt} of one CPU core and {_mb(rss, False)} RSS, and its "
        f"longest smaps_rollup read stalled a watched process {stall_txt}; it is excluded from "
        "the watched figures."
    )
    return Finding("recorder-footprint", sev, statement, None, None, None, dict(r.items()),
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
