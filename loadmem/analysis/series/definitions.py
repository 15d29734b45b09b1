"""The definitions every memory figure is built from, declared once.

Everything that turns recorded columns into a figure (used memory, the page cache, USS, the
watched set, a process's identity, its group) is defined here; the rest of loadmem imports
these names instead of writing ``MemTotal - MemAvailable`` again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

# --- roles: which processes a figure is about ------------------------------------------------

#: Role of the selected processes and their descendants: the service, "watched".
ROLE_TARGET = "target"
#: Role of the load generator's processes (Locust): recorded, summed apart, never watched.
ROLE_LOADGEN = "loadgen"
#: Role of a userland proxy in front of the server (docker-proxy, a port forwarder): it is
#: recorded but is not the service, and left out of every sum (like the recorder).
ROLE_PROXY = "proxy"
#: The recorder itself is excluded from every sum (its pid is in the ``recorder`` table).

# --- system figures (from /proc/meminfo columns) ----------------------------------------------

Columns = Mapping[str, np.ndarray]


def _col(c: Columns, name: str, n: int) -> np.ndarray:
    v = c.get(name)
    return v if v is not None else np.full(n, np.nan)


def _len(c: Columns) -> int:
    return len(next(iter(c.values()))) if c else 0


def used(c: Columns) -> np.ndarray:
    """Used memory = MemTotal - MemAvailable: what ``free``/``top`` (procps-ng >= 4.0.1) call
    used; what the machine cannot hand out without swapping."""
    n = _len(c)
    return _col(c, "MemTotal", n) - _col(c, "MemAvailable", n)


def file_cache(c: Columns) -> np.ndarray:
    """The page cache proper = Cached - Shmem + Buffers (Cached includes tmpfs and shared
    memory, which cannot be reclaimed; Buffers is the block-device cache)."""
    n = _len(c)
    return _col(c, "Cached", n) - _col(c, "Shmem", n) + np.nan_to_num(_col(c, "Buffers", n))


def swap_used(c: Columns) -> np.ndarray:
    """Swap in use = SwapTotal - SwapFree."""
    n = _len(c)
    return _col(c, "SwapTotal", n) - _col(c, "SwapFree", n)


def slab(c: Columns) -> np.ndarray:
    """Kernel slab = SReclaimable + SUnreclaim."""
    n = _len(c)
    return _col(c, "SReclaimable", n) + _col(c, "SUnreclaim", n)


#: Derived system series: name -> (meminfo columns it needs, definition).
SYSTEM_DERIVED: dict[str, tuple[tuple[str, ...], Callable[[Columns], np.ndarray]]] = {
    "used": (("MemTotal", "MemAvailable"), used),
    "file_cache": (("Cached", "Shmem", "Buffers"), file_cache),
    "swap_used": (("SwapTotal", "SwapFree"), swap_used),
    "slab": (("SReclaimable", "SUnreclaim"), slab),
}

#: meminfo columns the analysis reads (missing ones become NaN).
SYSTEM_COLUMNS = (
    "MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached", "Shmem", "SReclaimable",
    "SUnreclaim", "AnonPages", "Mapped", "PageTables", "KernelStack", "SwapTotal", "SwapFree",
    "AnonHugePages", "Committed_AS",
)  # fmt: skip


def system_columns_for(names: tuple[str, ...]) -> list[str]:
    """The meminfo columns needed to build ``names`` (raw or derived series)."""
    out: list[str] = []
    for n in names:
        out += list(SYSTEM_DERIVED[n][0]) if n in SYSTEM_DERIVED else [n]
    return list(dict.fromkeys(out))


# --- per-process figures (from the processes table) -------------------------------------------

#: Per-tick sums over a set of processes: series name -> the columns added together.
#: Cheap tier (``/proc/PID/status``, every tick) ...
CHEAP_SUMS: dict[str, tuple[str, ...]] = {
    "rss": ("rss",),  # VmRSS: counts every shared page once per process
    "rss_anon": ("rss_anon",),  # RssAnon: anonymous pages mapped (new allocations raise it)
    "rss_file": ("rss_file",),  # RssFile: file pages mapped (page cache)
    "rss_shmem": ("rss_shmem",),  # RssShmem: shared memory / tmpfs pages mapped
    "swap": ("swap",),
}
#: ... and the smaps_rollup tier (budgeted, carried forward between reads).
SMAPS_SUMS: dict[str, tuple[str, ...]] = {
    "smaps_rss": ("smaps_rss",),
    "pss": ("pss",),  # each page divided by the processes mapping it: sums to real memory
    "pss_anon": ("pss_anon",),
    "pss_shmem": ("pss_shmem",),
    "uss": ("private_clean", "private_dirty"),  # what the process holds alone
    "private_dirty": ("private_dirty",),
    "shared": ("shared_clean", "shared_dirty"),
    "shared_dirty": ("shared_dirty",),
    "anon_huge_pages": ("anon_huge_pages",),
}
PROCESS_SUMS: dict[str, tuple[str, ...]] = {**CHEAP_SUMS, **SMAPS_SUMS}
#: A row has smaps figures when this column is not null (they come from one read).
SMAPS_MARKER = "pss"

#: Columns kept in the small per-process tables (one row per process and point in time).
PROCESS_VALUES: tuple[str, ...] = tuple(
    dict.fromkeys(c for cols in PROCESS_SUMS.values() for c in cols)
)


def process_value(row: Mapping[str, object], name: str) -> float | None:
    """One per-process figure (a ``PROCESS_SUMS`` name) from a row of the small tables;
    None when the row lacks it (smaps figures never read, an older recording)."""
    cols = PROCESS_SUMS.get(name, (name,))
    vals = [row.get(c) for c in cols]
    if all(v is None for v in vals):
        return None
    return float(sum(v for v in vals if isinstance(v, (int, float))))


def identity(pid: np.ndarray, start_time: np.ndarray) -> np.ndarray:
    """One int64 per process identity: start_time (clock ticks) above a 22-bit pid. A pid
    reused by another process is another identity."""
    return (start_time.astype(np.int64) << 22) | (pid.astype(np.int64) & ((1 << 22) - 1))


# --- groups -----------------------------------------------------------------------------------

#: A watched process at depth 0 with watched descendants is the ``master``; depth >= 1 a
#: ``worker``; anything else (a lone selected process, the load generator) a ``process``.
GROUPS = ("master", "worker", "process")
