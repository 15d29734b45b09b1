"""The PSS budget: the token bucket, the order of due reads, and the budget holding on a
real recording."""

from __future__ import annotations

import subprocess
import sys

import pytest

from loadmem.recorder.recorder import Recorder, RecordOptions
from loadmem.recorder.scheduler import (
    DIRTY_MIN_FAULTS,
    Candidate,
    PssState,
    TokenBucket,
    due_order,
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


def _c(name, read_t=None, faults=0, faults_at=0, rss=100, rss_at=100, g=0, g_at=0,
       denied=False):
    s = PssState(read_t=read_t, faults_at_read=faults_at, rss_at_read=rss_at,
                 group_faults_at_read=g_at, denied=denied)
    return Candidate((name, 0), s, faults, rss, g)


def test_due_order():
    n = DIRTY_MIN_FAULTS  # faults worth 1 MiB
    cands = [
        _c(1, read_t=9.0),  # fresh and quiet: not due
        _c(2, read_t=9.0, faults=10 + 5 * n, faults_at=10, g=10 + 5 * n, g_at=10),  # busy
        _c(3, read_t=9.0, faults=10 + n, faults_at=10, g=10 + n, g_at=10),  # a little
        _c(4, read_t=0.0),  # overdue (10 s old)
        _c(5),  # never read
        _c(6, read_t=2.0),  # overdue (8 s old)
        _c(7, read_t=9.0, g=n, g_at=0),  # siblings faulted: its PSS moved too
        _c(8, read_t=9.0, rss=100 + (1 << 20)),  # RSS moved by 1 MiB
        _c(9, denied=True),  # smaps_rollup not readable: never retried
        _c(10, read_t=9.0, faults=n - 1, g=n - 1, rss=100 + 4096),  # a stray fault: quiet
    ]
    order = [c.key[0] for c in due_order(cands, now_t=10.0, max_age=5.0)]
    assert order[:3] == [5, 4, 6]
    assert order[3] == 2 and set(order[4:]) == {3, 7, 8}
    assert 1 not in order and 9 not in order and 10 not in order
    # with a 1 s tick, a figure 4.2 s old would be 5.2 s old at the next tick: overdue now
    lead = [c.key[0] for c in due_order([_c(1, read_t=5.8)], now_t=10.0, max_age=5.0, lead=1.0)]
    assert lead == [1]
    assert due_order([_c(1, read_t=6.5)], now_t=10.0, max_age=5.0, lead=1.0) == []
    # one 4.0 s old (give or take the jitter of tick times) is exactly 5 s old at the next
    # tick, not older: it waits for that tick
    for jitter in (-0.003, 0.0, 0.003):
        read_t = 6.0 - jitter
        assert due_order([_c(1, read_t=read_t)], now_t=10.0, max_age=5.0, lead=1.0) == []
        later = due_order([_c(1, read_t=read_t)], now_t=11.0, max_age=5.0, lead=1.0)
        assert [c.key[0] for c in later] == [1]


ALLOC = "import time; b = bytearray(48 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\n" \
        "print('ready', flush=True)\nwhile True:\n    for i in range(0, len(b), 1 << 16): " \
        "b[i] = 2\n    time.sleep(0.01)\n"


def test_budget_limits_reads_and_staleness_is_visible(tmp_path):
    """Three busy 48 MiB processes, always dirty, read at a tiny budget: the page walks stay
    within the budget (plus the initial cap and one read) and stale figures say so."""
    procs = [subprocess.Popen([sys.executable, "-c", ALLOC], stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        budget = 0.005
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
    wall = own[-1]["t"] - own[0]["t"]
    reads = [r for r in rec.table("processes").to_pylist() if r["pss_fresh"]]
    smaps_s = sum(r["smaps_us"] for r in own) / 1e6
    max_read = max(r["smaps_max_us"] for r in own) / 1e6
    allowed = budget * wall + budget * 5.0 + max_read  # refill + the starting cap + overshoot
    assert smaps_s <= 1.5 * allowed, (smaps_s, allowed)
    assert len(reads) >= 3  # every process was read at least once
    ticks = len(own)
    assert len(reads) < 3 * ticks / 2  # but far from every tick
    assert max(r["pss_oldest_s"] or 0 for r in own) > opts.pss_max_age  # staleness recorded
    assert min(r["budget_s"] for r in own) <= 0.0 + max_read
    stale = [r for r in rec.table("processes").to_pylist() if not r["pss_fresh"]]
    assert stale and all(r["pss"] is not None and r["pss_read_t"] < r["t"] for r in stale)
    warned = [e for e in rec.events("warning") if e["data"]["reason"] == "budget-exhausted"]
    assert len(warned) == 1  # said once, not every tick
