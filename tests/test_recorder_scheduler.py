"""The PSS budget: the token bucket, the order of due reads, and the budget holding on a
real recording."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pytest

from loadmem.recorder.recorder import Recorder, RecordOptions
from loadmem.recorder.scheduler import (
    DIRTY_MIN_BYTES,
    PAGE_SIZE,
    Candidate,
    PssState,
    TokenBucket,
    copies,
    due_order,
    due_split,
    update_validity,
)
from loadmem.recorder.selection import Selection
from loadmem.recording import open_recording


def test_token_bucket_refills_charges_and_caps():
    b = TokenBucket(0.02, cap_s=5.0, wall_now=0.0, cpu_now=0.0)
    assert b.balance == pytest.approx(0.1) and b.allows
    b.charge(cpu_now=0.25)  # one large read: may go negative
    assert b.balance == pytest.approx(-0.15) and not b.allows
    b.refill(wall_now=5.0)  # +0.1
    assert b.balance == pytest.approx(-0.05) and not b.allows
    b.refill(wall_now=10.0)
    assert b.balance == pytest.approx(0.05) and b.allows
    b.refill(wall_now=1000.0)  # an idle hour buys at most the cap
    assert b.balance == pytest.approx(0.1)
    assert b.charge(cpu_now=0.25) == 0.0  # nothing used since the last charge
    b.refill(wall_now=999.0)  # clocks never run backwards into a refill
    assert b.balance == pytest.approx(0.1)


MIB = 1 << 20


def _values(pss: int, shared: int, private: int) -> dict[str, int | None]:
    return {"pss": pss, "shared_clean": 0, "shared_dirty": shared, "private_clean": 0,
            "private_dirty": private}


def _c(name, read_t=None, drift=0.0, valid_t=None, denied=False):
    s = PssState(read_t=read_t, valid_t=valid_t if valid_t is not None else read_t,
                 values=_values(10 * MIB, 0, 10 * MIB) if read_t is not None else None,
                 denied=denied)
    return Candidate((name, 0), s, drift)


def test_due_order():
    tol = DIRTY_MIN_BYTES
    cands = [
        _c(1, read_t=9.0),  # read and quiet: current, not due
        _c(2, read_t=9.0, drift=5 * tol, valid_t=9.0),  # moved a lot: dirty
        _c(3, read_t=9.0, drift=tol, valid_t=9.0),  # moved a little: dirty
        _c(4, read_t=0.0, drift=tol, valid_t=0.0),  # unconfirmed for 10 s: overdue
        _c(5),  # never read
        _c(6, read_t=1.0, drift=tol, valid_t=2.0),  # unconfirmed for 8 s: overdue
        _c(7, read_t=0.5),  # quiet, read 9.5 s ago: current, so not due before the recheck
        _c(9, denied=True),  # smaps_rollup not readable: never retried
        _c(10, read_t=9.0, drift=tol - 1),  # a stray fault: still current
        _c(11, read_t=-41.0),  # quiet, but its last read is 51 s old: re-checked, last
    ]
    urgent, rest = due_split(cands, now_t=10.0, max_age=5.0)  # recheck 8 x 5 = 40 s
    assert [c.key[0] for c in urgent] == [5, 4, 6]
    assert [c.key[0] for c in rest] == [2, 3, 11]
    assert due_order(cands, now_t=10.0, max_age=5.0) == urgent + rest
    assert [c.key[0] for c in due_split(cands, 10.0, 5.0, recheck=9.0)[1]] == [2, 3, 11, 7]
    # with a 1 s tick, a figure unconfirmed for 4.2 s would be 5.2 s at the next tick:
    # overdue now; one unconfirmed for 3.5 s waits
    late = _c(1, read_t=5.8, drift=tol)
    assert due_split([late], now_t=10.0, max_age=5.0, lead=1.0)[0] == [late]
    early = _c(1, read_t=6.5, drift=tol)
    assert due_split([early], now_t=10.0, max_age=5.0, lead=1.0) == ([], [early])
    # a figure that stays current is never overdue, however old its read (until recheck)
    assert due_split([_c(1, read_t=-20.0)], now_t=10.0, max_age=5.0, lead=1.0) == ([], [])
    # small drifts are read once they add up to the tolerance, largest first
    small = [_c(n, read_t=9.0, drift=tol * d) for n, d in ((1, 0.3), (2, 0.5), (3, 0.0))]
    assert due_split(small[:2], now_t=10.0, max_age=5.0) == ([], [])
    small.append(_c(4, read_t=9.0, drift=tol * 0.25))
    assert [c.key[0] for c in due_split(small, now_t=10.0, max_age=5.0)[1]] == [2, 1, 4]


def test_drift_from_own_and_group_activity():
    """How far a figure may have moved: its own faults and RSS, a page / (n (n - 1)) per
    fault of the others, S / (n (n +- 1)) when a member joins or leaves, half its private
    pages when it forks."""
    page = PAGE_SIZE
    s = PssState()
    assert s.drift(faults=10**6, rss=1) == 0.0  # never read: nothing to drift from
    # read: 40 MiB shared by 4 on average (PSS of the shared part 10 MiB), 8 MiB private
    s.read(t=1.0, us=100, values=_values(18 * MIB, 40 * MIB, 8 * MIB), faults=1000,
           rss=48 * MIB)
    assert s.sharers == pytest.approx(4.0)
    assert s.drift(faults=1000, rss=48 * MIB) == 0.0
    assert s.drift(faults=1010, rss=48 * MIB) == 10 * page  # ten of its own faults
    assert s.drift(faults=1000, rss=50 * MIB) == 2 * MIB  # its RSS moved
    s.others_faulted(1200)  # siblings copied 1200 pages: 1200 / 12 of a page here
    assert s.drift(faults=1000, rss=48 * MIB) == pytest.approx(100 * page)
    s.group_changed(joined=True)  # one more sharer: 40 MiB / (4 x 5)
    assert s.drift_others == pytest.approx(100 * page + 2 * MIB)
    s.group_changed(joined=False)  # one fewer: 40 MiB / (4 x 3)
    s.forked()  # it forked: half its private pages are the child's share now
    assert s.drift_others == pytest.approx(100 * page + 2 * MIB + 40 * MIB / 12 + 4 * MIB)
    # two other members faulted since the read: they may have copied the same pages, so
    # those are shared by 4 - 2 = 2 now, and each further fault moves it by half a page
    t = PssState()
    t.read(t=1.0, us=1, values=_values(18 * MIB, 40 * MIB, 8 * MIB), faults=0, rss=48 * MIB)
    t.others_faulted(10, faulters={("a", 1)})  # n = 3: a sixth of a page each
    t.others_faulted(12, faulters={("b", 1), ("a", 1)})  # n = 2: half a page each
    assert t.drift_others == pytest.approx(10 * page / 6 + 12 * page / 2)
    t.read(t=2.0, us=1, values=_values(18 * MIB, 40 * MIB, 8 * MIB), faults=0, rss=48 * MIB)
    assert t.faulters == set() and t.drift_others == 0.0
    s.read(t=2.0, us=100, values=_values(8 * MIB, 0, 8 * MIB), faults=2000, rss=8 * MIB)
    assert s.drift_others == 0.0 and s.sharers is None  # shares nothing
    s.others_faulted(10**6)
    s.group_changed(joined=False)
    assert s.drift(faults=2000, rss=8 * MIB) == 0.0  # nobody else can move its PSS


def test_estimate_of_the_pss_now():
    """pss_est: the figure read, its RSS change, (1 - 1/n) of a page per fault beyond its RSS
    growth, and the others' copies at 1 / (n0 (n0 - k)) of a page each (k workers copying
    the same pages); a fork takes half its private pages away."""
    page = PAGE_SIZE
    s = PssState()
    assert s.estimate(faults=5, rss=1) is None
    s.read(t=1.0, us=1, values=_values(18 * MIB, 40 * MIB, 8 * MIB), faults=1000,
           rss=48 * MIB)  # shared by 4 on average
    assert s.estimate(1000, 48 * MIB) == 18 * MIB
    # 256 faults, 64 of them new pages (RSS +64 pages): 192 copies at 3/4 of a page
    assert s.estimate(1256, 48 * MIB + 64 * page) == pytest.approx(
        18 * MIB + 64 * page + 192 * page * 3 / 4)
    s.others_faulted(120, faulters={("a", 1), ("b", 1)}, cow=120)  # 1 / (4 x 2) each
    assert s.estimate(1000, 48 * MIB) == pytest.approx(18 * MIB + 15 * page)
    s.forked()
    assert s.estimate(1000, 48 * MIB) == pytest.approx(18 * MIB + 15 * page - 4 * MIB)
    # with status's split: file pages count as much as its file pages did (a quarter here)
    f = PssState()
    f.read(t=1.0, us=1, values={**_values(10 * MIB, 8 * MIB, 8 * MIB), "pss_file": MIB,
                                "pss_shmem": 0}, faults=0, rss=16 * MIB,
           split=(12 * MIB, 4 * MIB, 0))
    # 2 MiB more of the library mapped (32 faults, 16 pages each, RSS +2 MiB): half a MiB
    assert f.estimate(32, 18 * MIB, (12 * MIB, 6 * MIB, 0)) == pytest.approx(10.5 * MIB)
    assert f.estimate(32, 18 * MIB) == pytest.approx(12 * MIB)  # no split: all its own
    # the same 32 faults and 2 MiB of file, and 256 more faults: copies, 3/4 of a page each
    assert f.estimate(288, 18 * MIB, (12 * MIB, 6 * MIB, 0)) == pytest.approx(
        10.5 * MIB + 256 * page * 3 / 4)
    # 2 MiB of shmem written (a fault a page): no copies
    assert f.estimate(512, 18 * MIB, (12 * MIB, 4 * MIB, 2 * MIB)) == pytest.approx(12 * MIB)


def test_copies_among_the_faults():
    """A fault beyond the RSS growth is a copy-on-write break; a new anonymous or shmem page
    takes a fault, file pages come up to 16 a fault (fault-around)."""
    page = PAGE_SIZE
    assert copies(100, 0) == 100
    assert copies(100, 40 * page) == 60  # 40 new anonymous pages
    assert copies(100, 0, 160 * page) == 90  # 160 file pages: 10 faults
    assert copies(100, 0, 161 * page) == 89  # 161: 11 faults
    assert copies(100, 120 * page) == 0  # never negative (a huge page: one fault, 512 pages)
    assert copies(100, -50 * page, -50 * page) == 100  # RSS that fell takes no fault


def test_the_others_copies_are_judged_by_the_group_size_not_the_harmonic_mean():
    """CI's failure: a parent whose shared pages are mostly its 16 MiB shared by all 16 of
    its tree, but whose few pages shared by two or three (library pages, heap written
    between forks) pull its harmonic sharing degree to ~9. When 8 children copy the 16 MiB,
    it gains 1 MiB (1/16 -> 1/8 of each page), not 1/(9 x 1) of a page per copy."""
    s = PssState()
    # 18 MiB shared, PSS of the shared part 2 MiB: harmonic mean 9
    s.read(t=1.0, us=1, values=_values(2 * MIB, 18 * MIB, 0), faults=0, rss=18 * MIB)
    assert s.sharers == pytest.approx(9.0)
    eight = {("c", i) for i in range(8)}
    s.members = 16
    s.others_faulted(8 * 4096, faulters=eight, cow=8 * 4096)
    assert s.copied_degree == 16.0
    assert s.estimate(0, 18 * MIB) == pytest.approx(2 * MIB + MIB)
    # the drift stays an upper bound: pages shared by fewer move more per copy
    assert s.drift(0, 18 * MIB) >= MIB
    # without the group's size: the harmonic mean, as before
    t = PssState()
    t.read(t=1.0, us=1, values=_values(2 * MIB, 18 * MIB, 0), faults=0, rss=18 * MIB)
    t.others_faulted(8 * 4096, faulters=eight, cow=8 * 4096)
    assert t.copied_degree == pytest.approx(9.0)
    # and a copier in that group: 1 - 1/(16 - 7) of a page for each of its own copies,
    # plus the other 7's at 1/(16 x 9): 15/16 of a page per page in all, as measured
    c = PssState()
    c.read(t=1.0, us=1, values=_values(MIB, 16 * MIB, 0), faults=0, rss=16 * MIB)
    c.members = 16
    c.others_faulted(7 * 4096, faulters={("c", i) for i in range(1, 8)}, cow=7 * 4096)
    assert c.estimate(4096, 16 * MIB) == pytest.approx(MIB + 15 * MIB)


def test_validity_follows_the_drift():
    s = PssState()
    assert update_validity(s, 0.0, t=1.0) == 0.0 and s.valid_t is None  # never read
    s.read(t=1.0, us=1, values=_values(MIB, 0, MIB), faults=0, rss=MIB)
    assert update_validity(s, 0.0, t=5.0) == 0.0 and s.valid_t == 5.0  # confirmed
    assert update_validity(s, DIRTY_MIN_BYTES, t=6.0) == pytest.approx(1.0)  # moved
    assert update_validity(s, DIRTY_MIN_BYTES, t=9.0) == pytest.approx(4.0)
    assert s.valid_t == 5.0


#: 48 MiB resident, and 4 MiB touched then dropped (MADV_DONTNEED) every 10 ms: faults
#: and RSS move all the time, so its PSS figure never stays current
ALLOC = "import mmap, time; b = bytearray(48 << 20)\nfor i in range(0, len(b), 4096): " \
        "b[i] = 1\nc = mmap.mmap(-1, 4 << 20)\nprint('ready', flush=True)\nwhile True:\n" \
        "    for i in range(0, len(c), 4096): c[i] = 1\n" \
        "    c.madvise(mmap.MADV_DONTNEED)\n    time.sleep(0.01)\n"


def test_budget_limits_reads_and_staleness_is_visible(tmp_path):
    """Three busy 48 MiB processes, always dirty, read at a tiny budget: the page walks stay
    within the budget (plus the initial cap and one read) and stale figures say so, in
    the rows (pss_stale_s) and in the recorder table."""
    procs = [subprocess.Popen([sys.executable, "-c", ALLOC], stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        budget = 0.02  # the first tick reads all three; then the cheap tier at 50 ms eats it
        pa.array([0])  # pyarrow's first conversion imports pandas: not inside the recording
        opts = RecordOptions(out=tmp_path / "rec", interval=0.05, duration=3.0, flush=1.0,
                             pss_budget=budget, pss_max_age=0.1,
                             selection=Selection(pids=[p.pid for p in procs]),
                             handle_signals=False)
        result = Recorder(opts).run()
    finally:
        for p in procs:
            p.kill()
            p.wait()
    rec = open_recording(result.path)
    own = rec.table("recorder").to_pylist()
    reads = [r for r in rec.table("processes").to_pylist() if r["pss_fresh"]]
    max_read = max(r["smaps_max_us"] for r in own) / 1e6
    # a read starts only while the balance is positive: every tick with reads followed a
    # balance that the refill since brought above zero. The refill is made when the tick's
    # reads begin, some time after its t (and, on a busy host, after a preemption): bound
    # that time by the next tick's start, not by the tick's own t, so a late start under
    # load is not taken for a read beyond the budget (the margin is one interval's refill)
    rows = rec.table("processes").to_pylist()
    first = {}  # pid -> the tick of its first read
    for r in rows:
        if r["pss_fresh"]:
            first.setdefault(r["pid"], r["tick"])
    for prev, row, nxt in zip(own, own[1:], own[2:], strict=False):
        if row["smaps_reads"] and row["tick"] not in first.values():
            assert prev["budget_s"] + budget * (nxt["t"] - prev["t"]) > 0, (prev, row)
    assert len(reads) >= 3  # every process was read at least once
    # far from every tick: counted against the tick slots of the run (ticks that happened
    # plus those a busy host made it miss), since the budget refills with the wall clock
    slots = len(own) + sum(r["missed_ticks"] or 0 for r in own)
    assert len(reads) < 3 * slots / 2, (len(reads), slots)
    assert max(r["pss_oldest_s"] or 0 for r in own) > opts.pss_max_age  # staleness recorded
    assert max(r["pss_stale_s"] for r in own) > opts.pss_max_age  # freshness gave way
    assert max(r["pss_stale_s"] or 0 for r in rows) == max(r["pss_stale_s"] for r in own)
    assert all(r["pss_drift"] == 0 and r["pss_stale_s"] == 0 for r in rows if r["pss_fresh"])
    assert min(r["budget_s"] for r in own) <= 0.0 + max_read
    # a figure not read this tick is the last one read, never a guess; before a process's
    # first read (the first tick's setup may spend the initial balance on a busy host: it is
    # then read on the next tick, as a new process is) there is no figure at all
    assert sorted(first) == sorted(p.pid for p in procs) and max(first.values()) <= 1, first
    stale = [r for r in rows if not r["pss_fresh"]]
    assert stale and all(
        (r["pss"] is not None and r["pss_read_t"] < r["t"]) if r["tick"] > first[r["pid"]]
        else (r["pss"] is None and r["pss_read_t"] is None) for r in stale)
    warned = [e for e in rec.events("warning") if e["data"]["reason"] == "budget-exhausted"]
    assert len(warned) == 1  # said once, not every tick
