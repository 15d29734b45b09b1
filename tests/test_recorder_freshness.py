"""PSS freshness at small scale, with real processes: a figure is re-read when something
that moves it moved (its own faults, its sharing group's, a fork), not on a timer; an idle
process keeps its figure, confirmed by the cheap tier, and the sum stays right. Checked
against an independent reader of every smaps_rollup (the test itself).

16 processes sharing 16 MiB each time (one parent touched it, then forked 15 children);
each recording a few seconds at ``--interval 0.2s``."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loadmem.analysis import analyze
from loadmem.procfs.reader import ProcFS
from loadmem.procfs.smaps_rollup import parse_smaps_rollup
from loadmem.recorder.sampler import Sampler
from loadmem.recorder.scheduler import TokenBucket
from loadmem.recorder.selection import ProcessSelector, Selection
from loadmem.recording import open_recording

MIB = 1 << 20

#: A parent touches SIZE MiB, forks N - 1 children and prints every pid. A child that gets
#: SIGUSR1 overwrites one byte of every inherited page over about a second (copy-on-write),
#: then prints "done PID"; until then, and after, every process waits in sigwait: no
#: wake-ups, no faults. SIGUSR2 to the parent forks one more child. With a third argument
#: (MiB), the parent writes that much of a scratch buffer after each fork, as a master
#: writes its heap between forks: pages shared by 16, 15, ... 2 of the tree, not all by all.
TREE = r'''
import os, signal, sys, time
size, n = int(sys.argv[1]) << 20, int(sys.argv[2])
step_between = int(sys.argv[3]) << 20 if len(sys.argv) > 3 else 0
buf = bytearray(size)
for i in range(0, size, 4096):
    buf[i] = 1
scratch = bytearray(step_between * n)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGUSR2})
kids = []
for k in range(n - 1):
    for i in range(k * step_between, (k + 1) * step_between, 4096):
        scratch[i] = 1
    pid = os.fork()
    if pid == 0:
        while True:
            signal.sigwait({signal.SIGUSR1})
            step = size // 20
            for part in range(0, size, step):
                for i in range(part, min(part + step, size), 4096):
                    buf[i] = 2
                time.sleep(0.05)
            os.write(1, b"done %d\n" % os.getpid())  # one write: the drainers share the pipe
    kids.append(pid)
print(os.getpid(), *kids, flush=True)
while True:
    if signal.sigwait({signal.SIGUSR1, signal.SIGUSR2}) == signal.SIGUSR2:
        if os.fork() == 0:
            while True:
                signal.sigwait({signal.SIGUSR1})
'''


class _Tree:
    def __init__(self, tmp_path: Path, size_mib: int, n: int, between_mib: int = 0):
        script = tmp_path / "tree.py"
        script.write_text(TREE)
        self.p = subprocess.Popen([sys.executable, str(script), str(size_mib), str(n),
                                   str(between_mib)],
                                  stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert self.p.stdout is not None
        self.pids = [int(x) for x in self.p.stdout.readline().split()]
        assert len(self.pids) == n

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.p.pid, signal.SIGKILL)
        self.p.wait(timeout=10)


def _pss(pids) -> int:
    """The independent reader: every process's smaps_rollup, read now. Pss_Anon: the pages
    these processes share only among themselves. Their Pss_File moves whenever any process
    on the machine maps the same Python binary or libraries, which the recorder cannot see
    and re-checks only every 8 x --pss-max-age."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            total += parse_smaps_rollup(f.read())["Pss_Anon"]
    return total


def _faults(pids) -> list[int]:
    out = []
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(") ", 1)[1].split()
        out.append(int(fields[7]) + int(fields[9]))
    return out


def _quiet(pids, timeout: float = 10.0) -> None:
    """Wait until no process of the set takes a fault for 0.3 s."""
    deadline = time.monotonic() + timeout
    last = _faults(pids)
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = _faults(pids)
        if now == last:
            return
        last = now


def _record(out: Path, root: int, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "loadmem", "record", "--out", str(out), "--pid", str(root),
         "--interval", "0.2s", "--status-stdout", "--no-mappings", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _fork_after_ticks(proc: subprocess.Popen, parent: int, ticks: int) -> None:
    """Let the recorder report ``ticks`` ticks, then make the parent fork one more child."""
    assert proc.stdout is not None
    for _ in range(ticks):
        proc.stdout.readline()
    os.kill(parent, signal.SIGUSR2)


def _read_once_then_spent(root: int, n: int) -> Sampler:
    """A Sampler of the tree under ``root`` whose first tick read all ``n`` processes, its
    budget spent after it: no ordinary tick reads a figure again."""
    fs = ProcFS()
    sel = ProcessSelector(Selection(pids=[root]), fs)
    sel.check_initial()
    bucket = TokenBucket(1.0, cap_s=10.0)  # room for the first reads of all of them
    sampler = Sampler(sel, bucket, fs, max_age=60.0, interval=1.0, read_cgroups=False)
    first = sampler.tick(0, 0.0, dt.datetime.now(dt.UTC)).processes
    assert all(r["pss_fresh"] for r in first) and len(first) == n
    bucket.budget, bucket.balance = 1e-9, -1.0  # spent
    return sampler


def _finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def _last_tick_pss(rec) -> dict[int, int]:
    rows = rec.table("processes", ["tick", "pid", "pss_anon"]).to_pylist()
    last = max(r["tick"] for r in rows)
    return {r["pid"]: r["pss_anon"] for r in rows if r["tick"] == last}


def test_idle_processes_are_not_read_again_and_their_sum_holds(tmp_path):
    """Nothing moves: each process is read once, its figure confirmed on every tick after
    (it used to be read again every --pss-max-age), and the sum is what a reader sees."""
    tree = _Tree(tmp_path, 16, 16)
    try:
        out = tmp_path / "rec"
        proc = _record(out, tree.pids[0], "--pss-max-age", "1s", "--duration", "5s")
        _finish(proc)
        independent = _pss(tree.pids)
    finally:
        tree.kill()
    rec = open_recording(out)
    reads = [r for r in rec.table("processes").to_pylist() if r["pss_fresh"]]
    # read once each; a 1 s max age re-read them 4 or 5 times each before
    assert sorted(r["pid"] for r in reads) == sorted(tree.pids)
    own = rec.table("recorder").to_pylist()
    assert len(own) >= 20
    assert max(r["pss_stale_s"] for r in own) == 0.0 and max(r["pss_drift"] for r in own) == 0
    assert max(r["pss_oldest_s"] for r in own) > 4.0  # the reads are old; the figures are not
    recorded = sum(_last_tick_pss(rec).values())
    assert abs(recorded - independent) <= 0.01 * independent, (recorded, independent)
    # and the analysis does not call the 5-s-old reads stale: the figures were current
    notes = analyze(rec, window="whole").notes
    assert not [n for n in notes if "PSS figure" in n], notes


def test_copy_on_write_in_half_of_them_is_followed(tmp_path):
    """Eight of sixteen processes copy their 16 MiB: they are read again as they fault, the
    eight idle ones when their small drifts add up, and the recorded sum ends within 5 % of
    the drain of an independent reading, with no figure unconfirmed beyond --pss-max-age."""
    tree = _Tree(tmp_path, 16, 16)
    drainers = tree.pids[1:9]
    try:
        out = tmp_path / "rec"
        proc = _record(out, tree.pids[0], "--pss-max-age", "2s", "--duration", "7s",
                       "--pss-budget", "5%")  # room for the reads: freshness must hold
        assert proc.stdout is not None
        for _ in range(5):
            proc.stdout.readline()
        before = _pss(tree.pids)
        go = time.monotonic()
        for pid in drainers:
            os.kill(pid, signal.SIGUSR1)
        lines = [tree.p.stdout.readline() for _ in drainers]
        assert {int(x.split()[1]) for x in lines if x.startswith("done ")} == set(drainers), lines
        _finish(proc)
        after = _pss(tree.pids)
    finally:
        tree.kill()
    drain = after - before
    assert drain >= 0.8 * 8 * 16 * MIB, (before, after)  # the copies really happened
    rec = open_recording(out)
    t_go = go - rec.meta["start_monotonic"]
    rows = rec.table("processes").to_pylist()
    reread = {r["pid"] for r in rows if r["pss_fresh"] and r["t"] > t_go}
    assert set(drainers) <= reread
    recorded = sum(_last_tick_pss(rec).values())
    assert abs(recorded - after) <= 0.05 * drain, (recorded, after, drain)
    own = rec.table("recorder").to_pylist()
    assert max(r["pss_stale_s"] for r in own) <= 2.0 + 1e-6  # never beyond --pss-max-age
    assert not [e for e in rec.events("warning")
                if e["data"].get("reason") == "budget-exhausted"]


def test_a_fork_moves_the_parent_and_it_is_read_again(tmp_path):
    """A parent with 16 MiB of its own forks a child: half of those pages are the child's
    share now, with no fault anywhere. The recorder sees the new member and re-reads."""
    tree = _Tree(tmp_path, 16, 1)  # the parent alone
    parent = tree.pids[0]
    try:
        out = tmp_path / "rec"
        proc = _record(out, parent, "--pss-max-age", "30s", "--duration", "3s")
        _fork_after_ticks(proc, parent, 4)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            line = json.loads(proc.stdout.readline())
            if line["processes"] == 2:
                break
        _finish(proc)
        alone = _pss([parent])
    finally:
        tree.kill()
    rec = open_recording(out)
    rows = [r for r in rec.table("processes").to_pylist() if r["pid"] == parent]
    reads = [r for r in rows if r["pss_fresh"]]
    assert len(reads) == 2, [(r["t"], r["pss"]) for r in reads]  # at the start, after the fork
    assert reads[1]["pss"] < 0.7 * reads[0]["pss"]  # it halved its 16 MiB
    assert abs(rows[-1]["pss_anon"] - alone) <= 0.05 * alone


def test_a_process_born_during_the_recording_is_read_on_its_first_tick(tmp_path):
    """Even with the budget spent: a new worker's first figure is the baseline of all that
    follows (it may copy megabytes within a second of its birth)."""
    tree = _Tree(tmp_path, 16, 1)
    parent = tree.pids[0]
    try:
        out = tmp_path / "rec"
        # 0.01 % of a core: the first read of the parent empties the bucket for minutes
        proc = _record(out, parent, "--pss-budget", "0.01%", "--duration", "3s")
        _fork_after_ticks(proc, parent, 4)
        _finish(proc)
    finally:
        tree.kill()
    rec = open_recording(out)
    rows = rec.table("processes").to_pylist()
    child = [r for r in rows if r["pid"] != parent]
    assert child, "the child was not watched"
    assert child[0]["pss_fresh"] and child[0]["pss"] > 0  # read on its first tick
    own = rec.table("recorder").to_pylist()
    births = [r for r in own if r["t"] == child[0]["t"]]
    assert births[0]["budget_s"] < 0  # the budget was spent, and the read was made anyway


def test_the_estimate_follows_a_drain_the_budget_cannot_read(tmp_path):
    """Figures are never estimated; ``pss_est`` is, next to them. With every process read
    once and the budget then spent, 8 of 16 copy their 16 MiB: no figure is read again, the
    summed ``pss`` stays where it was, the summed ``pss_est`` lands within 5 % of the
    drain of an independent reader, and ``pss_drift`` covers the figures' error.

    The parent wrote 1 MiB between forks, as CI's parent did without being asked (its few
    pages shared by two or three pulled its harmonic sharing degree to ~9 though its 16 MiB
    were shared by all 16): the 8 copies of a page then moved it by 1/16 of a page, not by
    1/9 of a page each (it was credited 14.4 MiB for the 1 MiB it gained)."""
    tree = _Tree(tmp_path, 16, 16, between_mib=1)
    try:
        _quiet(tree.pids)  # the parent copies some of its heap right after forking
        before = _pss(tree.pids)
        sampler = _read_once_then_spent(tree.pids[0], 16)
        for pid in tree.pids[1:9]:
            os.kill(pid, signal.SIGUSR1)
        for _ in range(8):
            assert tree.p.stdout.readline().startswith("done")
        after = _pss(tree.pids)
        rows = sampler.tick(1, 1.0, dt.datetime.now(dt.UTC)).processes
    finally:
        tree.kill()
    drain = after - before
    assert drain > 0.8 * 8 * 16 * MIB
    assert not any(r["pss_fresh"] for r in rows)
    figures = sum(r["pss_anon"] for r in rows)
    assert abs(figures - before) < 0.05 * drain  # the figures: as read, before the drain
    pss = sum(r["pss"] for r in rows)
    est = sum(r["pss_est"] for r in rows)
    assert abs(est - (pss + drain)) <= 0.05 * drain, (est - pss, drain, [
        (r["pid"], round((r["pss_est"] - r["pss"]) / MIB, 2), r["minflt"], r["rss"]) for r in rows])
    assert sum(r["pss_drift"] for r in rows) >= 0.9 * drain  # the figures say how far off


def test_the_closing_tick_reads_what_moved_whatever_the_budget(tmp_path):
    """The last tick of a recording is a closing one: the figures that moved since their read
    are read beyond the budget (the end level every verdict compares with); an ordinary tick
    carries them forward."""
    tree = _Tree(tmp_path, 16, 4)
    try:
        _quiet(tree.pids)
        sampler = _read_once_then_spent(tree.pids[0], 4)
        os.kill(tree.pids[1], signal.SIGUSR1)
        assert tree.p.stdout.readline().startswith("done")
        after = _pss(tree.pids)
        ordinary = sampler.tick(1, 1.0, dt.datetime.now(dt.UTC)).processes
        closing = sampler.tick(2, 2.0, dt.datetime.now(dt.UTC), closing=True).processes
    finally:
        tree.kill()
    assert not any(r["pss_fresh"] for r in ordinary)
    fresh = {r["pid"] for r in closing if r["pss_fresh"]}
    assert tree.pids[1] in fresh  # the copier, and the others its copies moved
    assert all(r["pss_drift"] == 0 for r in closing)
    recorded = sum(r["pss_anon"] for r in closing)
    assert abs(recorded - after) <= 0.02 * after, (recorded, after)


@pytest.mark.parametrize("stop", ["sigterm", "duration"])
def test_a_copy_just_before_the_stop_is_in_the_last_figures(tmp_path, stop):
    """``loadmem record`` with a budget too small for any read after the first: a worker
    copies 16 MiB, then the recording ends (SIGTERM, or the last slot of --duration). Its last
    tick reads the moved figures: they match an independent reader, though no ordinary tick
    could read them (their drift shows on the ticks between)."""
    tree = _Tree(tmp_path, 16, 2)
    try:
        _quiet(tree.pids)
        out = tmp_path / "rec"
        # with --duration, ticks of 0.1 s: the whole window's end level is made of 3 samples,
        # the closing one and two held back (the note must not count those)
        timing = (["--duration", "3s", "--interval", "0.1s"] if stop == "duration"
                  else ["--duration", "60s"])
        proc = _record(out, tree.pids[0], "--pss-budget", "0.1%", "--pss-max-age", "60s",
                       *timing)
        assert proc.stdout is not None
        for _ in range(2):  # two ticks: the first figures are in
            assert proc.stdout.readline()
        os.kill(tree.pids[1], signal.SIGUSR1)
        assert tree.p.stdout is not None and tree.p.stdout.readline().startswith("done")
        if stop == "sigterm":
            proc.send_signal(signal.SIGTERM)
        else:
            assert proc.poll() is None, "the copy outlasted the recording: nothing to check"
        _finish(proc)
        independent = _pss(tree.pids)
    finally:
        tree.kill()
    rec = open_recording(out)
    rows = rec.table("processes", ["tick", "pid", "pss_fresh", "pss_drift"]).to_pylist()
    last = max(r["tick"] for r in rows)
    assert any((r["pss_drift"] or 0) >= 8 * MIB for r in rows if r["tick"] < last), \
        "the budget let an ordinary tick read the copy: the test proves nothing"
    assert all(r["pss_fresh"] for r in rows if r["tick"] == last)
    recorded = sum(_last_tick_pss(rec).values())
    assert abs(recorded - independent) <= 0.02 * independent, (recorded, independent)
    own = rec.table("recorder", ["tick", "t", "pss_drift"]).to_pylist()
    assert own[-1]["pss_drift"] == 0
    # analysed up to the tick before the closing one, the figures are held back: said so
    before = next(r for r in own if r["tick"] == last - 1)
    assert before["pss_drift"] >= 8 * MIB
    held = analyze(rec, window=f"0s:{before['t'] + 0.05:.3f}s").notes
    assert [n for n in held if "may be short by up to" in n and "--pss-budget" in n], held
    # the whole recording ends with the closing tick: its level is that read, no note
    whole = analyze(rec, window="whole").notes
    assert not [n for n in whole if "may be short" in n], whole
