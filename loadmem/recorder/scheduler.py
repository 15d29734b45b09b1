"""The PSS budget and freshness: which smaps_rollup reads to make this tick.

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

**Freshness without re-reading what did not move.** A process's PSS moves only when a page
it maps is mapped or unmapped, by it or by a process it shares the page with. The cheap
tier sees both every tick: its own faults and RSS, and those of its *sharing group* (the
watched tree it belongs to), and processes joining or leaving the group. From them the
sampler keeps each figure's **drift**: how far its PSS may have moved since it was read.

- Its own faults and RSS: each fault maps at most a page; RSS counts the rest.
- Another member's fault (a copy-on-write break of a page mapped by n processes) moves its
  PSS by a page / (n × (n - 1)); n is the figure's own sharing degree at its last read
  (shared bytes / the PSS of its shared pages). Sixty-four idle workers of one master do not
  need a re-read each time one of them copies a page: each moves by 1/4032 of a page, and
  together by 1/64 of what the copying one gained.
- A member joining (fork) or leaving (exit, exec) moves each sharer by S / (n × (n ± 1)) for
  S shared bytes; a parent that forks shares its private pages with the child and loses
  half of them.

A figure whose drift stays under ``tolerance`` (1 MiB) is *current*: it still holds, as far
as anything the recorder can see. Its ``valid_t`` moves with every tick. A process is
**due** when

- it was never read;
- its figure stopped being current and would pass ``max_age`` unconfirmed by the next tick
  (*overdue*, oldest first);
- its drift passed the tolerance, or the drifts under the tolerance add up to more than
  it (*dirty*, largest drift first: the sum of the figures is what the analysis reads,
  and sixty-four figures each a little off are as far off as one figure a lot off);
- or its last read is older than ``recheck`` (``RECHECK_FACTOR`` × ``max_age``), to catch
  what the cheap tier cannot see: pages shared with processes outside the watched tree,
  KSM merging (*recheck*, oldest first, after the dirty ones).

A due read that does not fit in the budget is skipped: the previous figure is carried
forward and its staleness shows (``pss_stale_s``), never estimated. The budget wins.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

#: A figure whose drift (how far its PSS may have moved since the read, from what the cheap
#: tier saw) passes this is no longer current: re-read it. A stray fault of an idle process
#: is not worth a page walk of its whole address space.
DIRTY_MIN_BYTES = 1 << 20
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
DIRTY_MIN_FAULTS = DIRTY_MIN_BYTES // PAGE_SIZE
#: The pages one read fault on a file mapping maps when they are in the page cache (the
#: kernel's fault-around, ``fault_around_bytes``: 64 KiB by default). Measured here: 471
#: pages of a cached library read through a mapping in 30 faults; a forked child running
#: its parent's code grew RssFile by 111 pages in a few faults. Shmem is not counted so:
#: its first write to a page (how shared memory is filled) takes a fault per page.
FAULT_AROUND_PAGES = 16
#: A figure that stays current is re-read anyway this many ``max_age`` after its last read,
RECHECK_FACTOR = 8
#: with at most this share of the budget: the re-checks of many large idle processes must
#: not make an idle recorder spend its whole budget (64 processes of 512 MiB cost 1.3 s of
#: CPU per round here, 21 ms each); they then come less often, oldest first.
RECHECK_SHARE = 1 / 8


def copies(faults: int, grew: int, file: int = 0) -> int:
    """How many of ``faults`` faults were most likely copy-on-write breaks, which leave the
    RSS as it was. The others mapped new pages: one anonymous or shmem page each (``grew``:
    bytes of their RSS growth, or of all RSS when status gave no split) or, by fault-around,
    up to ``FAULT_AROUND_PAGES`` file pages each (``file``: bytes of RssFile growth).
    Counting a fault per file page took a child that copied its 4096 inherited pages (and
    ran a little code: RssFile +111 pages) for 3985 copies; writes to a shared file mapping
    (one fault a page) are the case it takes for copies."""
    around = -(-max(0, file) // (PAGE_SIZE * FAULT_AROUND_PAGES))
    return max(0, faults - max(0, grew) // PAGE_SIZE - around)


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

    def spend(self, cpu_s: float) -> None:
        """Charge CPU measured by the caller (a bucket that meters one kind of work)."""
        self.balance -= max(0.0, cpu_s)

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
    #: bytes its PSS may have moved since the read by other processes' doing (faults of the
    #: sharing group, members joining or leaving); its own faults and RSS come on top
    drift_others: float = 0.0
    #: the other members that took faults since the read: each may have copied a page this
    #: process shares, so its pages can be shared by that many fewer processes now
    faulters: set = field(default_factory=set)
    #: the signed counterpart of drift_others: what the others' doing most likely did to its
    #: PSS (their copy-on-write breaks raise it, a fork lowers it, an exit raises it)
    change_others: float = 0.0
    #: the processes in its sharing group when faults were last seen there (0: not known)
    members: int = 0
    valid_t: float | None = None  # the last t at which the figure was current
    split_at_read: tuple[int, int, int] | None = None  # RssAnon, RssFile, RssShmem then
    denied: bool = False  # smaps_rollup is not readable: stop trying

    def read(self, t: float, us: int, values: dict[str, int | None], faults: int,
             rss: int | None, split: tuple[int, int, int] | None = None) -> None:
        """A fresh figure: ``values`` read at ``t``, with the counters it goes with (``split``:
        the RSS as anon, file, shmem from status)."""
        self.values, self.read_t, self.read_us = values, t, us
        self.faults_at_read, self.rss_at_read, self.split_at_read = faults, rss, split
        self.drift_others, self.change_others, self.valid_t = 0.0, 0.0, t
        self.faulters = set()

    @property
    def sharers(self) -> float | None:
        """The mean number of processes its shared pages were mapped by at the last read (the
        harmonic mean: shared bytes / the PSS of the shared pages); None when it shared
        nothing."""
        v = self.values
        if not v:
            return None
        shared = (v.get("shared_clean") or 0) + (v.get("shared_dirty") or 0)
        private = (v.get("private_clean") or 0) + (v.get("private_dirty") or 0)
        pss_shared = (v.get("pss") or 0) - private
        if shared <= 0 or pss_shared <= 0:
            return None
        return max(2.0, shared / pss_shared)

    @property
    def shared_bytes(self) -> int:
        v = self.values or {}
        return (v.get("shared_clean") or 0) + (v.get("shared_dirty") or 0)

    @property
    def private_bytes(self) -> int:
        v = self.values or {}
        return (v.get("private_clean") or 0) + (v.get("private_dirty") or 0)

    def drift(self, faults: int, rss: int | None) -> float:
        """How far its PSS may have moved since the read (0 for a figure never read)."""
        if self.read_t is None:
            return 0.0
        own = max(0, faults - self.faults_at_read) * PAGE_SIZE
        if rss is not None and self.rss_at_read is not None:
            own += abs(rss - self.rss_at_read)
        return own + self.drift_others

    @property
    def copied_degree(self) -> float | None:
        """How many processes a page copied in its sharing group was most likely mapped by:
        the group's size (a fork tree shares what its root had at each fork, the master's
        heap mapped by every worker), else its sharing degree; None when it shares nothing.

        Not ``sharers`` alone: that is a harmonic mean over *all* its shared pages, and a few
        pages shared by two or three (library pages only it and one other process touched
        since the fork, heap it wrote between forks) pull it far below the degree of the
        pages being copied. A parent of 15 children measured 8.9 with its 16 MiB shared by
        all 16; 8 children copying them then credited it 1 / (8.9 x 0.9) of a page per copy,
        14.4 MiB instead of 1 MiB."""
        n = self.sharers
        if n is None:
            return None
        return float(self.members) if self.members >= 2 else n

    def _sharers_now(self) -> float | None:
        n = self.copied_degree
        return None if n is None else max(2.0, n - len(self.faulters))

    def estimate(self, faults: int, rss: int | None,
                 split: tuple[int, int, int] | None = None) -> float | None:
        """The most likely PSS now (an estimate, never a figure; None when never read): the
        figure read, plus its RSS change (anonymous pages are its own; file and shmem pages
        count as much as its file and shmem pages did at the read: they are shared with
        whoever maps the same files), plus a page × (1 - 1/n) for each fault beyond its RSS
        growth (a copy-on-write break: the page was 1/n of it, now it is all its own), plus
        what the others most likely did to it."""
        pss = self.values.get("pss") if self.values else None
        if self.read_t is None or pss is None:
            return None
        d_rss = rss - self.rss_at_read if rss is not None and self.rss_at_read is not None else 0
        before, v = self.split_at_read, self.values or {}
        if split is not None and before is not None:
            cow = copies(faults - self.faults_at_read,
                         split[0] - before[0] + split[2] - before[2], split[1] - before[1])
        else:
            cow = copies(faults - self.faults_at_read, d_rss)
        n = self._sharers_now()
        own_cow = cow * PAGE_SIZE * (1 - 1 / n) if n is not None else 0.0
        grown: float = d_rss
        if split is not None and before is not None:
            def share(pss_part: str, rss_part: int) -> float:
                return min(1.0, (v.get(pss_part) or 0) / rss_part) if rss_part > 0 else 1.0

            grown = (split[0] - before[0] + (split[1] - before[1]) * share("pss_file", before[1])
                     + (split[2] - before[2]) * share("pss_shmem", before[2]))
        return pss + grown + own_cow + self.change_others

    def others_faulted(self, faults: int, faulters: Iterable = (),
                       cow: int | None = None) -> None:
        """Other members of its sharing group (``faulters``) took ``faults`` faults
        (copy-on-write breaks of pages it may share): each moves its PSS by a page /
        (n × (n - 1)), n the processes still sharing the page. n was the figure's sharing
        degree at the read, less one for each other member that has faulted since (it may
        have copied the same pages): four of eight copying the same pages double the others'
        share of them."""
        n0 = self.sharers
        if n0 is not None and faults > 0:
            self.faulters.update(faulters)
            k = min(len(self.faulters), n0 - 1)
            n = max(2.0, n0 - k)
            self.drift_others += faults * PAGE_SIZE / (n * (n - 1))
            # the estimate: their faults beyond their RSS growth (copies), and the most
            # common case, k workers copying the same pages, mapped by the whole group
            # (``copied_degree``, not the harmonic n0 above, which bounds the drift): a page
            # goes from 1/g to 1/(g - k) of it in k faults, 1/(g (g - k)) of a page each
            g = self.copied_degree or n0
            kg = min(len(self.faulters), g - 1)
            copies = faults if cow is None else cow
            self.change_others += copies * PAGE_SIZE / (g * max(1.0, g - kg))

    def group_changed(self, joined: bool) -> None:
        """A process joined (fork) or left (exit, exec) its sharing group: every shared page
        gained or lost a sharer, S / (n × (n ± 1)) in all."""
        n = self.sharers
        if n is not None:
            moved = self.shared_bytes / (n * (n + 1 if joined else n - 1))
            self.drift_others += moved
            self.change_others += -moved if joined else moved

    def forked(self) -> None:
        """It forked: its private pages are shared with the child now, half its PSS of them."""
        if self.values is not None:
            self.drift_others += self.private_bytes / 2
            self.change_others -= self.private_bytes / 2


@dataclass
class Candidate:
    key: tuple[int, int]
    state: PssState
    drift: float  # bytes its PSS may have moved since the last read


def update_validity(state: PssState, drift: float, t: float,
                    tolerance: float = DIRTY_MIN_BYTES) -> float:
    """Move the figure's ``valid_t`` to ``t`` while it is current; return how long it has
    gone unconfirmed (0 when current)."""
    if state.read_t is None:
        return 0.0
    if drift < tolerance:
        state.valid_t = t
        return 0.0
    return t - (state.valid_t if state.valid_t is not None else state.read_t)


def due_order(cands: Iterable[Candidate], now_t: float, max_age: float,
              lead: float = 0.0, tolerance: float = DIRTY_MIN_BYTES,
              recheck: float | None = None) -> list[Candidate]:
    """The due processes, most urgent first (see module docstring)."""
    urgent, dirty, rechecks = due_lists(cands, now_t, max_age, lead, tolerance, recheck)
    return urgent + dirty + rechecks


def due_split(cands: Iterable[Candidate], now_t: float, max_age: float,
              lead: float = 0.0, tolerance: float = DIRTY_MIN_BYTES,
              recheck: float | None = None) -> tuple[list[Candidate], list[Candidate]]:
    """The due processes as ``(urgent, rest)``: ``due_lists`` with the dirty ones and the
    re-checks together (a pending mapping snapshot is read between the two parts)."""
    urgent, dirty, rechecks = due_lists(cands, now_t, max_age, lead, tolerance, recheck)
    return urgent, dirty + rechecks


def due_lists(cands: Iterable[Candidate], now_t: float, max_age: float,
              lead: float = 0.0, tolerance: float = DIRTY_MIN_BYTES, recheck: float | None = None,
              ) -> tuple[list[Candidate], list[Candidate], list[Candidate]]:
    """The due processes as ``(urgent, dirty, rechecks)``: never read, then overdue (oldest
    first); dirty (largest drift first); the re-checks (oldest read first).

    ``lead`` (the tick interval): a figure that would pass ``max_age`` unconfirmed before
    the next tick is overdue now. Tick times jitter by a few ms, so "would pass" allows a
    tenth of a tick. ``recheck``: a current figure is re-read when its last read is that old
    (default ``RECHECK_FACTOR × max_age``)."""
    recheck = RECHECK_FACTOR * max_age if recheck is None else recheck
    limit = max(max_age - 0.9 * lead, 0.0) if lead < max_age else max_age
    again = max(recheck - 0.9 * lead, 0.0) if lead < recheck else recheck
    never, overdue, dirty, minor, rechecks = [], [], [], [], []
    minor_sum = 0.0
    for c in cands:
        s = c.state
        if s.denied:
            continue
        if s.read_t is None:
            never.append(c)
            continue
        age = now_t - s.read_t
        if c.drift >= tolerance:
            valid = s.valid_t if s.valid_t is not None else s.read_t
            stale = now_t - valid
            if stale >= limit - 1e-9:
                overdue.append((-stale, c))
            else:
                dirty.append((-c.drift, -age, c))
            continue
        if c.drift > 0:
            minor.append((-c.drift, -age, c))
            minor_sum += c.drift
        if age >= again - 1e-9:
            rechecks.append((-age, c))
    if minor_sum >= tolerance:  # small drifts that add up: the sum would be off by that much
        dirty += minor
        taken = {id(c) for _, _, c in minor}
        rechecks = [x for x in rechecks if id(x[1]) not in taken]
    overdue.sort(key=lambda x: x[0])
    dirty.sort(key=lambda x: (x[0], x[1]))
    rechecks.sort(key=lambda x: x[0])
    return (never + [c for _, c in overdue], [c for _, _, c in dirty],
            [c for _, c in rechecks])
