"""Recording what a container's memory cgroup is charged: usage, limits (and the effective
limit of an ancestor), peak, events and pressure, v2 from a recorded 6.x hierarchy
(``tests/fixtures/proc/cgroup_v2``: this machine's memory controller is v1) and v1 for real,
in cgroups made under this test's own memory cgroup."""

from __future__ import annotations

import datetime as dt
import shutil
import time
from pathlib import Path

import pytest
from _netns_support import docker_id, memory_cgroup, spawn, stop, system_python

from loadmem.procfs.cgroup import CgroupMounts, CgroupRef, parse_limit, parse_pressure
from loadmem.procfs.reader import KeptOpenProcFS, ProcFS
from loadmem.recorder.cgroup_rows import CgroupRows
from loadmem.recorder.sampler import Sampler
from loadmem.recorder.scheduler import TokenBucket
from loadmem.recorder.selection import ProcessSelector, Selection

FIX = Path(__file__).parent / "fixtures" / "proc" / "cgroup_v2"
CID = "4f3a0123456789abcdef0123456789abcdef0123456789abcdefcafebabe1234"
SCOPE = f"/system.slice/docker-{CID}.scope"
MiB = 1 << 20
COMMON = {"ts": dt.datetime.now(dt.UTC), "t": 0.0, "tick": 0}


def test_limit_and_pressure_parsers():
    assert parse_limit("max\n") is None
    assert parse_limit("536870912\n") == 512 * MiB
    assert parse_limit("9223372036854771712\n") is None  # v1: PAGE_COUNTER_MAX pages
    with pytest.raises(ValueError):
        parse_limit("lots")
    assert parse_pressure((FIX / SCOPE.lstrip("/") / "memory.pressure").read_text()) == {
        "some_avg10": 417, "some_total_us": 8812345, "full_avg10": 150,
        "full_total_us": 2201001}
    assert parse_pressure("") == {}


def _rows(root: Path, warnings: list | None = None, procfs: ProcFS | None = None):
    warns = warnings if warnings is not None else []
    rows = CgroupRows(procfs or ProcFS(), CgroupMounts(v2=str(root)),
                      lambda *a: warns.append(a))
    return lambda: rows.rows([CgroupRef(2, SCOPE)], COMMON)


def _values(rows) -> dict:
    return {r["key"]: r["value"] for r in rows if r["error"] is None}


@pytest.mark.parametrize("kept_open", [False, True])
def test_v2_usage_limits_events_pressure(kept_open):
    fs = KeptOpenProcFS() if kept_open else ProcFS()
    try:
        rows = _rows(FIX, procfs=fs)()
        v = _values(rows)
    finally:
        fs.close()
    assert v["usage"] == 314572800 and v["limit"] == 1 << 30
    assert "high" not in v  # memory.high is "max": no limit, no row
    assert v["effective_limit"] == 512 * MiB  # /system.slice's memory.max is smaller
    assert v["peak"] == 352321536
    assert (v["events.max"], v["events.oom"], v["events.oom_kill"]) == (17, 1, 1)
    assert v["events.low"] == 0 and v["events.oom_group_kill"] == 0
    assert v["pressure.some_avg10"] == 417 and v["pressure.full_total_us"] == 2201001
    stat = (FIX / SCOPE.lstrip("/") / "memory.stat").read_text().split()
    assert {k: v[k] for k in stat[::2]} == {k: int(x) for k, x in zip(stat[::2], stat[1::2],
                                                                     strict=True)}
    assert {r["version"] for r in rows} == {2} and {r["cgroup"] for r in rows} == {SCOPE}


def test_v2_file_this_kernel_lacks_vs_file_that_fails_later(tmp_path):
    root = tmp_path / "cg2"
    shutil.copytree(FIX, root)
    scope = root / SCOPE.lstrip("/")
    (scope / "memory.peak").unlink()  # a 5.15 kernel: no memory.peak
    warnings: list = []
    tick = _rows(root, warnings)
    first = tick()
    assert "peak" not in _values(first) and all(r["error"] is None for r in first)
    (scope / "memory.events").unlink()  # read before, gone now: an error row, every tick
    for _ in range(2):
        rows = tick()
        errors = [(r["key"], r["value"], r["error"]) for r in rows if r["error"]]
        assert errors == [("events", None, "memory.events:gone")]
        assert _values(rows)["usage"] == 314572800  # nothing else is lost
    assert len({w[0] for w in warnings}) == 1 and warnings[0][1] == "cgroup:unreadable"
    shutil.rmtree(scope)  # the container is gone: usage and stat fail
    errors = {r["key"]: r["error"] for r in tick() if r["error"]}
    assert errors["usage"] == "memory.current:gone" and errors["stat"] == "memory.stat:gone"


def test_v1_cgroup_recorded_for_real(tmp_path):
    """A process in a v1 cgroup with a 64 MiB limit touches 24 MiB: usage, limit, effective
    limit, peak, failcnt and oom_kill as the kernel keeps them; the selected cgroup (the
    parent of the process's) is recorded too."""
    cid = docker_id()
    with memory_cgroup(f"docker/{cid}", limit="64M") as group, \
            memory_cgroup(f"docker/{cid}/inner") as inner:
        p = spawn([system_python(), "-c", "import sys, time\nb = bytearray(24 << 20)\n"
                   "print('ok', flush=True)\ntime.sleep(60)"], cgroup=inner)
        try:
            assert p.stdout.readline().strip() == "ok"
            fs = KeptOpenProcFS()
            sel = ProcessSelector(Selection(cgroups=[group.path]), fs)
            sel.check_initial()
            sampler = Sampler(sel, TokenBucket(1.0), fs)
            res = sampler.tick(0, 0.0, dt.datetime.now(dt.UTC))
            by = {}
            for r in res.cgroup:
                by.setdefault(r["cgroup"], {})[r["key"]] = r["value"]
            assert set(by) == {group.path, inner.path}
            own = by[inner.path]
            assert own["usage"] >= 24 * MiB and own["rss"] >= 20 * MiB
            assert "limit" not in own  # no limit of its own
            assert own["effective_limit"] == 64 * MiB  # the parent's, hierarchical
            assert own["peak"] >= own["usage"] - MiB
            assert own["events.max"] == 0 and own["events.oom_kill"] == 0
            assert own["under_oom"] == 0
            top = by[group.path]
            assert top["limit"] == 64 * MiB and top["effective_limit"] == 64 * MiB
            assert top["usage"] >= own["usage"] - MiB
            assert {r["error"] for r in res.cgroup} == {None}
            assert {r["version"] for r in res.cgroup} == {1}
            fs.close()
        finally:
            stop(p)


def test_v1_oom_kill_and_failcnt_are_counted(tmp_path):
    """Filling past a 32 MiB limit: failcnt (events.max) rises and the OOM killer kills it
    (events.oom_kill 1)."""
    with memory_cgroup(f"docker/{docker_id()}", limit="32M") as group:
        p = spawn([system_python(), "-c", "import time\nchunks = []\nwhile True:\n"
                   "    chunks.append(bytearray(4 << 20))\n    time.sleep(0.01)"],
                  cgroup=group)
        try:
            p.wait(timeout=30)
            deadline = time.monotonic() + 5
            rows = CgroupRows(ProcFS(), CgroupMounts(v1_memory="/sys/fs/cgroup/memory"),
                              lambda *a: None)
            v: dict = {}
            while time.monotonic() < deadline:
                v = _values(rows.rows([CgroupRef(1, group.path)], COMMON))
                if v.get("events.oom_kill"):
                    break
                time.sleep(0.05)
            assert v["events.oom_kill"] == 1 and v["events.max"] > 0
            assert v["peak"] >= 30 * MiB and v["limit"] == 32 * MiB
        finally:
            stop(p)
