"""The PSS budget: which smaps_rollup reads to make this tick, within a CPU budget.

Reading ``/proc/PID/smaps_rollup`` walks the target's page tables (about 14 µs per resident
MiB, holding its mmap lock), so the recorder cannot read every process every tick. It keeps
its *total* CPU (cheap tier, discovery, writing and the page walks, all measured with
``time.process_time()``, which includes the kernel time of the walks) under ``budget`` (a
fraction of one core) with a token bucket:

- the bucket refills at ``budget × elapsed wall time`` and is capped at ``cap_s`` seconds
  of refill, so an idle stretch does not buy an unbounded burst;
- it is charged the real CPU the recorder used, including each read as it happens;
- a read starts only while the balance is positive, so one large read may drive it
  negative; then reads wait until the refill brings it back above zero.

A process is *due* when it was never read, when its figure would be older than ``max_age``
by the next tick, or when it is *dirty*: its faults or RSS moved (by 1 MiB worth or more)
since its last read, or processes of its sharing group (the same tree: copy-on-write in one
changes its siblings' and parent's PSS) faulted that much. Due processes are read in this
order: never read, then overdue (oldest first), then dirty (most fault activity first). A
due read that does not fit is skipped: the previous figure is carried forward and marked
stale, never estimated.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

#: A process is dirty when at least this much moved since its last read: faults worth
#: 1 MiB of pages (each copy-on-write break is one fault) or 1 MiB of RSS. A stray fault
#: of an idle process is not worth a page walk of its whole address space; smaller changes
#: are caught by the max-age re-read.
DIRTY_MIN_BYTES = 1 << 20
DIRTY_MIN_FAULTS = DIRTY_MIN_BYTES // os.sysconf("SC_PAGE_SIZE")


class TokenBucket:
    """CPU-seconds budget. ``refill(wall_now)`` then ``charge(cpu_now)`` as time passes."""

    def __init__(self, budget: float, cap_s: float = 5.0, wall_now: float | None = None,
                 cpu_now: float | None = None):
        self.budget = budget
        self.cap = budget * cap_s
        self.balance = self.cap  # start full: the first round of reads is the baseline
        self.debt = 0.0  # CPU charged with charge_spread, not yet repaid
        self._wall = time.monotonic() if wall_now is None else wall_now
        self._cpu = time.process_time() if cpu_now is None else cpu_now

    def refill(self, wall_now: float | None = None) -> None:
        wall_now = time.monotonic() if wall_now is None else wall_now
        add = self.budget * max(0.0, wall_now - self._wall)
        new = self.balance + add
        if self.debt > 0:  # repaid from what the cap would waste, and from half the refill
            repay = min(self.debt, max(add / 2, new - self.cap))
            self.debt -= repay
            new -= repay
        self.balance = min(self.cap, new)
        self._wall = wall_now

    def charge_spread(self, cpu_s: float) -> None:
        """Charge CPU used outside this process's clock (a compaction child) as a debt,
        repaid from at most half of each refill (and from any refill the cap would waste),
        so that one large bill defers reads for a while instead of stopping them."""
        self.debt += max(0.0, cpu_s)

    def charge(self, cpu_now: float | None = None) -> float:
        """Charge the CPU used since the last charge; return it."""
        cpu_now = time.process_time() if cpu_now is None else cpu_now
        used = max(0.0, cpu_now - self._cpu)
        self._cpu = cpu_now
        self.balance -= used
        return used

    @property
    def allows(self) -> bool:
        return self.balance > 0


@dataclass
class PssState:
    """What the scheduler knows of one process's smaps_rollup figures."""

    read_t: float | None = None  # t of the last successful read
    read_us: int | None = None
    values: dict[str, int | None] | None = None
    faults_at_read: int = 0  # own minflt + majflt at the last read
    rss_at_read: int | None = None
    group_faults_at_read: int = 0  # the sharing group's fault counter at the last read
    denied: bool = False  # smaps_rollup is not readable: stop trying


@dataclass
class Candidate:
    key: tuple[int, int]
    state: PssState
    faults: int  # own cumulative minflt + majflt now
    rss: int | None
    group_faults: int  # the group's cumulative fault counter now


def due_order(cands: Iterable[Candidate], now_t: float, max_age: float,
              lead: float = 0.0, min_faults: int = DIRTY_MIN_FAULTS,
              min_rss: int = DIRTY_MIN_BYTES) -> list[Candidate]:
    """The due processes, most urgent first (see module docstring)."""
    urgent, dirty = due_split(cands, now_t, max_age, lead, min_faults, min_rss)
    return urgent + dirty


def due_split(cands: Iterable[Candidate], now_t: float, max_age: float,
              lead: float = 0.0, min_faults: int = DIRTY_MIN_FAULTS,
              min_rss: int = DIRTY_MIN_BYTES) -> tuple[list[Candidate], list[Candidate]]:
    """The due processes as ``(urgent, dirty)``: never read, then overdue (oldest first);
    and dirty (most fault activity first). A pending mapping snapshot is read in between.

    ``lead`` (the tick interval): a figure that would pass ``max_age`` before the next tick
    is overdue now. Tick times jitter by a few ms, so "would pass" allows a tenth of a tick:
    with 1-s ticks and 15 s, a figure read on tick N is read again on tick N + 15 (never
    older than 14 s in a row) rather than on N + 14 or N + 15 by the jitter, which saves a
    fifteenth of the page walks. A read the budget pushes back by one tick is still in
    time, give or take that jitter. ``min_faults``/``min_rss``: how much must move to make
    a process dirty."""
    limit = max(max_age - 0.9 * lead, 0.0) if lead < max_age else max_age
    never, overdue, dirty = [], [], []
    for c in cands:
        s = c.state
        if s.denied:
            continue
        if s.read_t is None:
            never.append(c)
            continue
        age = now_t - s.read_t
        if age >= limit - 1e-9:
            overdue.append((-age, c))
            continue
        own = c.faults - s.faults_at_read
        group = c.group_faults - s.group_faults_at_read
        rss_moved = (c.rss is not None and s.rss_at_read is not None
                     and abs(c.rss - s.rss_at_read) >= min_rss)
        if own >= min_faults or group >= min_faults or rss_moved:
            dirty.append((-(own + group), -age, c))
    overdue.sort(key=lambda x: x[0])
    dirty.sort(key=lambda x: (x[0], x[1]))
    return never + [c for _, c in overdue], [c for _, _, c in dirty]
