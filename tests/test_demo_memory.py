"""The point of the demo: idle GC in the workers unshares the table, unless it was frozen.

Both variants run in this one test, on the same machine at the same moment, and are
compared with each other rather than with fixed numbers (other tests run concurrently).
Memory figures come straight from /proc/PID/smaps_rollup.
"""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

import pytest

from loadmem.demo.launch import start_demo
from loadmem.procfs.reader import ProcFS
from loadmem.procfs.smaps_rollup import parse_smaps_rollup

TABLE_MB = 24
WORKERS = 2
FIELDS = ("Rss", "Pss", "Private_Dirty", "Shared_Dirty")


def _rollup(pid: int) -> dict[str, float]:
    """smaps_rollup fields in MiB (the recorder's parser, itself tested on fixtures)."""
    fields = parse_smaps_rollup(ProcFS().read_pid(pid, "smaps_rollup"))
    return {k: v / (1 << 20) for k, v in fields.items()}


def _sums(pids: list[int]) -> dict[str, float]:
    rollups = [_rollup(p) for p in pids]
    return {k: sum(r[k] for r in rollups) for k in FIELDS}


def _housekeeping_done(log: Path, workers: int) -> bool:
    """Every worker logged its idle ``gc.collect()`` (the server's log is our only window)."""
    done = set(re.findall(r"worker (\d+) \(pid \d+\): idle housekeeping", log.read_text()))
    return len(done) >= workers


def _drain(variant: str, tmp_path: Path) -> tuple[dict[str, float], dict[str, float], float]:
    """Start, send traffic, wait for every worker's idle GC; return before/after sums."""
    log = tmp_path / f"{variant}.log"
    with start_demo(
        workers=WORKERS,
        table_mb=TABLE_MB,
        variant=variant,
        idle_gc_after=0.3,
        idle_gc_stagger=0.3,
        log_path=log,
    ) as server:
        before = _sums(server.workers)
        # New connection per request: the kernel spreads them over both workers' sockets.
        deadline = time.monotonic() + 40
        while not _housekeeping_done(log, WORKERS):
            assert time.monotonic() < deadline, log.read_text()
            for _ in range(10):
                with urllib.request.urlopen(server.url + "/api/items", timeout=5) as r:
                    r.read()
            time.sleep(1.0)
        after = _sums(server.workers)
        return before, after, server.ready["table_rss_mb"]


@pytest.mark.timeout(90)
def test_idle_gc_unshares_the_table_in_default_but_not_in_frozen(tmp_path: Path) -> None:
    before, after, table_mb = _drain("default", tmp_path)
    grown = after["Private_Dirty"] - before["Private_Dirty"]
    # Each worker copies most of the table: GC headers are on most of its pages.
    assert grown >= 0.5 * WORKERS * table_mb, (before, after)
    assert after["Shared_Dirty"] < before["Shared_Dirty"] - 0.5 * grown
    assert after["Pss"] - before["Pss"] >= 0.3 * grown
    # ...while RSS does not move: the pages were resident before and after.
    assert abs(after["Rss"] - before["Rss"]) <= 0.05 * before["Rss"], (before, after)

    _, f_after, _ = _drain("frozen", tmp_path)
    # Measured from the default variant's start, not the frozen server's own: a broken
    # freeze unshares at the workers' first young collection, before anything is measured.
    frozen_grown = f_after["Private_Dirty"] - before["Private_Dirty"]
    assert frozen_grown < 0.2 * grown, (grown, frozen_grown)


def test_every_worker_does_housekeeping_even_without_a_connection(tmp_path: Path) -> None:
    """One keep-alive connection reaches one worker; the others must still unshare.

    Locust with few users opens few connections, and SO_REUSEPORT may give them all to
    some workers: the idle timer is armed by traffic to any worker (a shared page).
    """
    import http.client

    log = tmp_path / "one-connection.log"
    with start_demo(
        workers=3, table_mb=16, idle_gc_after=0.3, idle_gc_stagger=0.2, log_path=log
    ) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        for _ in range(20):
            conn.request("GET", "/api/items")
            conn.getresponse().read()
        conn.close()
        deadline = time.monotonic() + 30
        while not _housekeeping_done(log, 3) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _housekeeping_done(log, 3), log.read_text()[-2000:]
        for pid in server.workers:
            assert _rollup(pid)["Private_Dirty"] > 8, pid  # most of the 16 MiB table
