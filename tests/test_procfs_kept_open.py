"""``KeptOpenProcFS`` on real processes: re-reads through a kept descriptor are fresh, a
process that is gone is reported gone and its descriptors are closed, the cap holds, and
nothing is left open by ``close()``, by a recording, or for processes nobody reads every
tick. Each test forks a few small Python processes and touches tens of MiB at most."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from _proc_support import TREE, ask, end, python

from loadmem.errors import ProcessGone, ZombieProcess
from loadmem.procfs.reader import KeptOpenProcFS, ProcFS
from loadmem.procfs.stat import parse_stat
from loadmem.procfs.status import parse_status
from loadmem.recorder.recorder import Recorder, RecordOptions
from loadmem.recorder.sampler import Sampler
from loadmem.recorder.scheduler import TokenBucket
from loadmem.recorder.selection import ProcessSelector, Selection
from loadmem.recording import open_recording

MIB = 1 << 20

#: Allocates (and touches) 24 MiB when told to on stdin; exits at end of input.
GROWER = r'''
import sys
print("ready", flush=True)
sys.stdin.readline()
buf = b"\x01" * (24 << 20)
print("grown", flush=True)
sys.stdin.readline()
'''

def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _kept_pids(fs: KeptOpenProcFS) -> set[int]:
    """The pids that have at least one file kept open."""
    out = set()
    for path in fs._fds:
        part = path[len(fs.root) + 1 :].split("/", 1)[0]
        if path.startswith(fs.root + "/") and part.isdigit():
            out.add(int(part))
    return out


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_kept_status_is_read_fresh():
    p = python(GROWER)
    fs = KeptOpenProcFS()
    try:
        assert p.stdout.readline().strip() == "ready"
        path = fs.path(p.pid, "status")
        before = parse_status(fs.read_pid(p.pid, "status"))
        fd = fs._fds[path]  # kept open by the first read
        assert ask(p, "grow") == "grown"
        after = parse_status(fs.read_pid(p.pid, "status"))
        assert fs._fds[path] == fd, "read again through the same descriptor"
        assert after.rss - before.rss >= 20 * MIB
        assert after.rss_anon - before.rss_anon >= 20 * MIB
        # the same figures a fresh open of the file gives (the child is idle now)
        plain = parse_status(ProcFS().read_pid(p.pid, "status"))
        assert abs(plain.rss - after.rss) < 4 * MIB and plain.vm_size == after.vm_size
    finally:
        fs.close()
        end(p)


def test_gone_process_raises_and_its_descriptors_are_closed():
    p = _sleeper()
    fs = KeptOpenProcFS()
    try:
        base = _open_fds()
        assert parse_stat(fs.read_pid(p.pid, "stat")).pid == p.pid
        fs.read_pid(p.pid, "status")
        fs.read_pid(p.pid, "statm")
        fs.read("meminfo")
        assert _kept_pids(fs) == {p.pid}
        assert _open_fds() == base + 4
        p.kill()
        p.wait()  # reaped: the kept descriptors now fail with ESRCH
        with pytest.raises(ProcessGone) as ei:
            fs.read_pid(p.pid, "stat")
        assert not isinstance(ei.value, ZombieProcess)
        assert _kept_pids(fs) == set(), "every file of that pid is closed, not only stat"
        assert set(fs._fds) == {f"{fs.root}/meminfo"}  # a system file stays open
        assert _open_fds() == base + 1
        with pytest.raises(ProcessGone):  # and again, now by path
            fs.read_pid(p.pid, "status")
        assert _open_fds() == base + 1
    finally:
        fs.close()
        with contextlib.suppress(ProcessLookupError):
            p.kill()
        p.wait()


def test_kept_zombie_reads_until_reaped():
    fs = KeptOpenProcFS()
    pid = os.fork()
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    try:
        assert parse_stat(fs.read_pid(pid, "stat")).state != "Z"  # opened while alive
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while parse_stat(fs.read_pid(pid, "stat")).state != "Z":  # the kept fd sees it die
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert fs.path(pid, "stat") in fs._fds
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    with pytest.raises(ProcessGone):
        fs.read_pid(pid, "stat")
    assert pid not in _kept_pids(fs)
    fs.close()


def test_max_open_is_a_cap_and_reads_stay_correct():
    procs = [_sleeper() for _ in range(3)]
    fs = KeptOpenProcFS(max_open=2)
    plain = ProcFS()
    try:
        for _ in range(2):  # the second round reads the two kept files with pread
            for p in procs:
                assert parse_stat(fs.read_pid(p.pid, "stat")).pid == p.pid
                status = fs.read_pid(p.pid, "status")
                assert f"\nPid:\t{p.pid}\n" in status
                assert status.split("\n", 1)[0] == plain.read_pid(p.pid, "status").split("\n")[0]
                assert len(fs._fds) <= 2
        assert len(fs._fds) == 2
    finally:
        fs.close()
        for p in procs:
            p.kill()
            p.wait()


def test_smaps_rollup_and_other_files_are_never_kept():
    fs = KeptOpenProcFS()
    me = os.getpid()
    base = _open_fds()
    for _ in range(2):
        assert "Pss:" in fs.read_pid(me, "smaps_rollup")
        fs.read_pid_bytes(me, "cmdline")
        fs.read_pid(me, "cgroup")
    assert fs._fds == {}
    assert _open_fds() == base
    fs.read_pid(me, "stat")
    assert list(fs._fds) == [fs.path(me, "stat")]
    fs.close()


def test_close_closes_every_kept_descriptor():
    fs = KeptOpenProcFS()
    me = os.getpid()
    base = _open_fds()
    for name in ("stat", "status", "statm"):
        fs.read_pid(me, name)
    fs.read("meminfo")
    fs.read("loadavg")
    assert len(fs._fds) == 5 and _open_fds() == base + 5
    fs.close()
    assert fs._fds == {} and _open_fds() == base
    fs.close()  # twice is harmless
    assert "VmRSS" in fs.read_pid(me, "status")  # still usable: opens again
    fs.close()
    assert _open_fds() == base


def test_a_released_descriptor_number_reused_by_another_file_is_not_read():
    """``read_pid`` finds kept files by (pid, name); after a release or a close, the
    descriptor number may belong to any file this process opens next."""
    fs = KeptOpenProcFS()
    me = os.getpid()
    for let_go in (lambda: fs.release(me), fs.close):
        fs.read_pid(me, "stat")
        let_go()
        with open("/proc/meminfo") as other:  # likely takes the number just freed
            assert parse_stat(fs.read_pid(me, "stat")).pid == me
            assert other.read().startswith("MemTotal:")
        fs.close()


def test_recorder_closes_its_kept_files(tmp_path: Path):
    child = _sleeper()
    try:
        opts = RecordOptions(out=tmp_path / "rec", selection=Selection(pids=[child.pid]),
                             interval=0.2, duration=2.0, flush=0.5, handle_signals=False,
                             read_cgroups=True)
        base = _open_fds()
        rec = Recorder(opts)
        assert isinstance(rec.procfs, KeptOpenProcFS)
        kept: list[int] = []
        done = threading.Event()

        def watch() -> None:  # how many files the recorder keeps open while it runs
            while not done.is_set():
                kept.append(len(rec.procfs._fds))
                time.sleep(0.05)

        th = threading.Thread(target=watch, daemon=True)
        th.start()
        try:
            result = rec.run()
        finally:
            done.set()
            th.join(5)
    finally:
        child.kill()
        child.wait()
    assert result.status == "complete" and result.ticks >= 3
    assert max(kept) >= 3, "the recording kept files open (stat, status, meminfo...)"
    assert rec.procfs._fds == {}
    assert _open_fds() <= base, "no descriptor left open by the recording"
    rows = open_recording(tmp_path / "rec").table("processes").to_pylist()
    assert {r["pid"] for r in rows} == {child.pid}


def test_discovery_keeps_no_files_of_unwatched_processes():
    """The selector reads the ``stat`` of every new pid on the machine once; only files of
    watched processes (read every tick) are kept open."""
    others = [_sleeper() for _ in range(2)]  # on this machine, never watched
    child = _sleeper()
    fs = KeptOpenProcFS()
    try:
        sel = ProcessSelector(Selection(pids=[child.pid]), fs, exclude_pids={os.getpid()})
        sel.check_initial()
        sel.update()
        assert set(sel.watched) == {child.pid}
        assert len(fs.pids()) > 3  # there was more to discover than the watched child
        assert _kept_pids(fs) <= {child.pid}
        assert not _kept_pids(fs) & {p.pid for p in others}
    finally:
        fs.close()
        for p in [*others, child]:
            p.kill()
            p.wait()


def test_exited_watched_process_leaves_nothing_kept():
    """A worker read every tick, then killed and reaped: once the selector reports it gone,
    none of its files stays open (a long recording of respawned workers would otherwise
    pile up descriptors of dead processes until the cap)."""
    tree = python(TREE)
    fs = KeptOpenProcFS()
    try:
        root = int(tree.stdout.readline())
        sel = ProcessSelector(Selection(pids=[root]), fs, exclude_pids={os.getpid()})
        sel.check_initial()
        sampler = Sampler(sel, TokenBucket(1.0), fs, max_age=60.0, interval=0.1)
        tick = 0

        def run_tick():
            nonlocal tick
            tick += 1
            return sampler.tick(tick, float(tick), dt.datetime.now(dt.UTC))

        worker = int(ask(tree, "fork"))
        deadline = time.monotonic() + 10
        while worker not in {r["pid"] for r in run_tick().processes}:
            assert time.monotonic() < deadline
        run_tick()
        assert worker in _kept_pids(fs), "its stat and status are read every tick"
        assert ask(tree, "reap") == "reaped"
        exits: list[int] = []
        deadline = time.monotonic() + 10
        while not exits:
            assert time.monotonic() < deadline
            res = run_tick()
            exits = [e for e in res.events if e["kind"] == "process_exit"
                     and f'"pid": {worker}' in (e["data"] or "")]
        run_tick()
        assert worker not in _kept_pids(fs)
        assert root in _kept_pids(fs)  # the live root keeps its files
    finally:
        fs.close()
        end(tree)
