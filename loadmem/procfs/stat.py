"""``/proc/PID/stat``: identity (pid, start time), parentage, state, faults, CPU times.

The second field (``comm``) is in parentheses and may itself hold spaces and parentheses,
so the record is split at the *last* ``)``. Field numbers below are those of proc(5).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProcStat:
    pid: int
    comm: str
    state: str  # R, S, D, Z, T, t, X, I, ...
    ppid: int
    minflt: int  # cumulative minor faults (every copy-on-write break is one)
    majflt: int
    utime: float  # seconds
    stime: float  # seconds
    num_threads: int
    starttime: int  # clock ticks since boot: with pid, the process identity
    rss_pages: int  # field 24; /proc/PID/status VmRSS is the same figure in kB


def parse_stat(text: str, clk_tck: int = 100) -> ProcStat:
    """Parse one ``/proc/PID/stat`` line; ``clk_tck`` converts utime/stime to seconds."""
    open_paren = text.index("(")
    close_paren = text.rindex(")")
    pid = int(text[:open_paren])
    comm = text[open_paren + 1 : close_paren]
    f = text[close_paren + 2 :].split()
    # f[0] is field 3 (state): field N is f[N - 3]
    return ProcStat(
        pid=pid,
        comm=comm,
        state=f[0],
        ppid=int(f[1]),
        minflt=int(f[7]),
        majflt=int(f[9]),
        utime=int(f[11]) / clk_tck,
        stime=int(f[12]) / clk_tck,
        num_threads=int(f[17]),
        starttime=int(f[19]),
        rss_pages=int(f[21]),
    )


def parse_stat_identity(text: str) -> tuple[int, int, str, str]:
    """``(ppid, starttime, comm, state)``: the cheapest parse, for process discovery."""
    close_paren = text.rindex(")")
    comm = text[text.index("(") + 1 : close_paren]
    f = text[close_paren + 2 :].split(maxsplit=20)
    return int(f[1]), int(f[19]), comm, f[0]
