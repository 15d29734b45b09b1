"""The headline: what used memory did over the window, and the verdict sentence.

The drain statement says how used memory moved (the window's level change, with the mean
rate of that change and its split by phase), against the RSS and PSS of the watched
processes present throughout; then, when they apply, one sentence each for the processes
that appeared or exited, the PSS coverage, RSS that moved through shared pages, and the
over-count of summing RSS (the first answer to "free memory drops while RSS is flat").
"""

from __future__ import annotations

from typing import Any

from loadmem.analysis import detectors as det
from loadmem.analysis.context import Context, where
from loadmem.analysis.model import Finding, Severity, severity_rank
from loadmem.units import format_bytes, format_duration


def _plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 'es')}"


def _used_split(ctx: Context) -> str:
    return det.by_phase(ctx, lambda c: c.d("used"), processes=False)


def _rss_text(ctx: Context) -> str:
    rss = ctx.group.get("rss")
    n = ctx.same_count
    if rss is None or rss.delta is None or not rss.start:
        return "no watched process was recorded" if n == 0 else (
            f"the {_plural(n, 'watched process')} had no RSS figures")
    rel = rss.delta / rss.start
    how = ("stayed flat" if abs(rel) < 0.01 else "barely moved" if abs(rel) < 0.05
           else "grew" if rel > 0 else "fell")
    who = (f"the {_plural(n, 'watched process')}" if not ctx.appeared and not ctx.exited
           else f"the {_plural(n, 'watched process')} present throughout")
    text = f"the RSS of {who} {how} ({100 * rel:+.1f}%, {format_bytes(rss.delta, signed=True)})"
    pss = ctx.group.get("pss")
    if pss is not None and pss.delta is not None:
        m = ctx.same_smaps_count
        whose = (("their" if n != 1 else "its") + " PSS" if m == n
                 else f"the PSS of the {m} with figures at both ends")
        text += f" and {whose} moved {format_bytes(pss.delta, signed=True)}"
    return text


def _lifecycle_part(ctx: Context, count: int, which: str, when: str) -> str:
    """"N processes appeared (RSS x, PSS y at the end: ...)" for ``which`` appeared/exited."""
    pss = ctx.lifecycle_total("pss", which)
    return (f"{_plural(count, 'process')} {which} (RSS "
            f"{format_bytes(ctx.lifecycle_total('rss', which))}"
            + (f", PSS {format_bytes(pss)}" if pss else "") + f" {when})")


def lifecycle_sentence(ctx: Context) -> str:
    """Processes that appeared or exited inside the window, accounted apart."""
    parts = []
    new = [p for p in ctx.appeared if not p.exited]
    gone = [p for p in ctx.exited if not p.appeared]
    both = [p for p in ctx.appeared if p.exited]
    if new:
        parts.append(_lifecycle_part(ctx, len(new), "appeared",
                                     "at the end: new, not growth"))
    if gone:
        parts.append(_lifecycle_part(ctx, len(gone), "exited",
                                     "when the window opened: their memory went with them"))
    if both:
        parts.append(f"{_plural(len(both), 'process')} came and went inside the window")
    if not parts:
        return ""
    together, life = ctx.everyone.get("pss"), ctx.life
    if (together is not None and together.start is not None and together.end is not None
            and life is not None and life.smaps_start >= life.present_start > 0
            and life.smaps_end >= life.present_end > 0):
        parts.append("the PSS of every watched process together went "
                     f"{format_bytes(together.start)} -> {format_bytes(together.end)}")
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def coverage_sentence(ctx: Context) -> str:
    """When some processes present at both ends lacked PSS figures at one of them."""
    life = ctx.life
    if life is None or life.present_start == 0:
        return ""
    n, m = ctx.same_count, ctx.same_smaps_count
    if m >= n:
        return ""
    return (
        f"PSS figures covered {life.smaps_start} of {life.present_start} processes when the "
        f"window opened and {life.smaps_end} of {life.present_end} at its end: PSS changes are "
        f"over the {m} with figures at both ends."
    )


def shared_rss_sentence(ctx: Context) -> str:
    """RSS of the same processes that rose through shared memory or file pages."""
    bits = []
    for col, what in (("rss_shmem", "shared memory pages (RssShmem)"),
                      ("rss_file", "file pages (RssFile)")):
        d = ctx.d(col, "group")
        if d is not None and d >= det.RSS_SHARED_MIN:
            bits.append(f"{format_bytes(d, signed=True)} through {what}")
    if not bits:
        return ""
    return ("Their RSS moved " + " and ".join(bits) + ", which sum RSS counts once per "
            "process that maps them: not memory they hold alone.")


def overcount_sentence(ctx: Context) -> str:
    """Summing RSS counts each shared page once per process: say it with the numbers when
    sum RSS exceeds sum PSS (or used memory) by a wide margin, at either end of the window,
    whether or not anything drained."""
    rss, pss = ctx.everyone.get("rss"), ctx.everyone.get("pss")
    used = ctx.system.get("used")
    n = ctx.watched_count
    life = ctx.life
    if rss is None or rss.end is None or n < 2:
        return ""

    def wide(a: float | None, b: float | None) -> bool:
        return bool(a and b and a >= det.OVERCOUNT_FACTOR * b
                    and a - b >= det.OVERCOUNT_MIN)

    ends = []  # (which end, processes there, sum RSS, sum PSS) where every one had PSS
    if pss is not None and life is not None:
        if life.present_start and life.smaps_start >= life.present_start:
            ends.append(("start", life.present_start, rss.start, pss.start))
        if life.present_end and life.smaps_end >= life.present_end:
            ends.append(("end", life.present_end, rss.end, pss.end))
    wide_ends = [e for e in ends if wide(e[2], e[3])]
    if wide_ends:
        opened = ("before load" if ctx.window.name == "load+observe"
                  else "when the window opened")
        parts = [
            f"{opened} the {_plural(k, 'watched process')}' {format_bytes(r)} of RSS was "
            f"{format_bytes(p)} of real memory (PSS)" if which == "start" else
            f"at the end the {_plural(k, 'watched process')}' {format_bytes(r)} of RSS is "
            f"{format_bytes(p)} of real memory (PSS)"
            for which, k, r, p in wide_ends
        ]
        return ("Summing RSS counts each shared page once per process: "
                + "; ".join(parts) + ".")
    if used is not None and used.end and rss.end > used.end + det.OVERCOUNT_MIN:
        return (
            f"Summing RSS counts each shared page once per process: the {n} watched "
            f"processes' RSS adds up to {format_bytes(rss.end)}, more than the "
            f"{format_bytes(used.end)} of used memory of the whole machine."
        )
    return ""


def drain_finding(ctx: Context, unexplained: float | None) -> Finding:
    """The headline: used and free memory against the watched processes' RSS and PSS."""
    used = ctx.system.get("used")
    d_used = used.delta if used else None
    dur = ctx.window.duration
    sev: Severity = "ok"
    if d_used is None:
        statement = "Used memory could not be measured (no MemTotal/MemAvailable samples)."
    elif used is not None and used.significant(det.DRAIN_MIN, det.NOISE_K):
        verb = "rose" if d_used > 0 else "fell"
        split = _used_split(ctx)
        statement = (
            f"Used memory {verb} {format_bytes(abs(d_used))} {where(ctx.window)} (over "
            f"{format_duration(dur)}, {format_bytes(d_used / max(dur, 1e-9), signed=True)}/s "
            f"on average" + (f"; {split}" if split else "")
            + f"; free memory {format_bytes(ctx.d('MemFree'), signed=True)}) while "
            f"{_rss_text(ctx)}."
        )
        if d_used > 0:
            sev = "info"
            big = max(512 * det.MiB, 0.10 * (ctx.mem_total or 0))
            if unexplained is not None and unexplained >= big:
                sev = "warning"
    else:
        statement = (
            f"Used memory stayed flat {where(ctx.window)} (over {format_duration(dur)}, "
            f"{format_bytes(d_used, signed=True)}, within noise) while {_rss_text(ctx)}."
        )
    extra = [s for s in (lifecycle_sentence(ctx), coverage_sentence(ctx),
                         shared_rss_sentence(ctx), overcount_sentence(ctx)) if s]
    if extra:
        statement += " " + " ".join(extra)
    ev: dict[str, Any] = {
        "used.delta_bytes": d_used,
        "used.rate_bytes_per_s": d_used / max(dur, 1e-9) if d_used is not None else None,
        "used.noise_bytes": used.noise if used else None,
        "unexplained.delta_bytes": unexplained,
    }
    ev.update(det.evidence(ctx, "MemAvailable", "MemFree"))
    ev.update(det.evidence(ctx, "rss", "pss", source="group"))
    ev.update(det.evidence(ctx, "rss", "pss", source="everyone"))
    return Finding("memory-drain", sev, statement, None, ctx.window.t_start, ctx.window.t_end,
                   ev, ["system.MemTotal", "system.MemAvailable", "system.MemFree",
                        "processes.rss", "processes.pss"])


def headline(drain: Finding, findings: list[Finding]) -> str:
    causes = [
        f for f in findings
        if f.id not in ("memory-drain", "recorder-footprint") and f.severity != "ok"
    ]
    causes.sort(key=lambda f: (-severity_rank(f.severity), -(abs(f.explained_bytes or 0))))
    if not causes:
        return drain.statement + " No memory mechanism stood out above the noise."
    named = ", ".join(
        f"{f.id} ({f.severity}"
        + (f", {format_bytes(f.explained_bytes, signed=True)}" if f.explained_bytes else "")
        + ")"
        for f in causes[:3]
    )
    rest = drain.evidence.get("unexplained.delta_bytes")
    tail = ""
    if drain.severity != "ok" and rest is not None and abs(rest) >= det.DRAIN_MIN:
        tail = f"; unexplained remainder {format_bytes(rest, signed=True)}"
    return f"{drain.statement} Findings: {named}{tail}."
