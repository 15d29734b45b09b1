"""One tick at a time on a fixture /proc: pid reuse, zombies, exits, carried-forward PSS.
(Real-process behaviour is covered by test_recorder_e2e.py; these cases are hard to
provoke on demand with real processes.)"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from loadmem.procfs.reader import ProcFS
from loadmem.recorder.sampler import Sampler
from loadmem.recorder.scheduler import DIRTY_MIN_FAULTS, TokenBucket
from loadmem.recorder.selection import ProcessSelector, Selection

FIX = Path(__file__).parent / "fixtures" / "proc"
STAT = FIX.joinpath("pid_stat").read_text()


def _stat(pid: int, ppid: int, start: int, state: str = "S", minflt: int = 100) -> str:
    f = STAT[STAT.rindex(")") + 2 :].split()
    f[0], f[1], f[7], f[19] = state, str(ppid), str(minflt), str(start)
    return f"{pid} (worker) " + " ".join(f) + "\n"


@pytest.fixture
def fake(tmp_path):
    root = tmp_path / "proc"
    root.mkdir()
    shutil.copy(FIX / "meminfo", root / "meminfo")

    def put(pid, ppid, start, state="S", minflt=100):
        d = root / str(pid)
        d.mkdir(exist_ok=True)
        (d / "stat").write_text(_stat(pid, ppid, start, state, minflt))
        if state == "Z":
            for name in ("status", "smaps_rollup"):
                (d / name).unlink(missing_ok=True)
            shutil.copy(FIX / "zombie_status", d / "status")
        else:
            shutil.copy(FIX / "pid_status", d / "status")
            shutil.copy(FIX / "pid_smaps_rollup", d / "smaps_rollup")
        (d / "cmdline").write_bytes(b"worker\0--token=s3cret\0")

    put(100, 1, 5000)
    put(101, 100, 5001)
    fs = ProcFS(str(root))
    sel = ProcessSelector(Selection(pids=[100]), fs, clk_tck=100)
    sel.check_initial()
    sampler = Sampler(sel, TokenBucket(1.0), fs, max_age=60.0, interval=1.0,
                      redact=lambda argv: [a.split("=")[0] + "=***" if "=" in a else a
                                           for a in argv],
                      clk_tck=100, read_cgroups=False)
    return root, put, sampler


def _tick(sampler, n):
    return sampler.tick(n, float(n), dt.datetime.now(dt.UTC))


def test_pid_reuse_zombie_and_exit(fake):
    root, put, sampler = fake
    r0 = _tick(sampler, 0)
    assert {(r["pid"], r["depth"]) for r in r0.processes} == {(100, 0), (101, 1)}
    assert all(r["pss_fresh"] and r["pss"] > 0 for r in r0.processes)
    assert r0.processes[0]["cmdline"] == "worker --token=***"  # redacted
    assert [e["kind"] for e in r0.events].count("process_start") == 2

    # quiet tick: PSS carried forward, with the time it was read
    r1 = _tick(sampler, 1)
    assert all(not r["pss_fresh"] and r["pss_read_t"] == 0.0 and r["pss"] > 0
               for r in r1.processes)

    # the child copies 64 MiB: it is dirty and re-read; its parent, which shares those
    # pages, drifts by a page / (n (n - 1)) per copy (n = 5.7 sharers here): 2.4 MiB, and
    # is re-read too
    put(101, 100, 5001, minflt=100 + 64 * DIRTY_MIN_FAULTS)
    r2 = _tick(sampler, 2)
    assert {r["pid"]: r["pss_fresh"] for r in r2.processes} == {100: True, 101: True}

    # the root exits and a new process reuses its pid: not the process we were asked for
    put(100, 1, 9999)
    r3 = _tick(sampler, 3)
    assert [r["pid"] for r in r3.processes] == [101]
    exits = [e for e in r3.events if e["kind"] == "process_exit"]
    assert len(exits) == 1 and '"start_time": 5000' in exits[0]["data"]
    r4 = _tick(sampler, 4)
    assert [r["pid"] for r in r4.processes] == [101]  # the reused pid is not watched

    # the orphaned child becomes a zombie: a row with nulls and the reason, no PSS
    put(101, 1, 5001, state="Z")
    r5 = _tick(sampler, 5)
    (row,) = r5.processes
    assert row["state"] == "Z" and row["error"] == "zombie"
    assert row["rss"] is None and row["pss"] is None and row["pss_read_t"] is None
    warnings = [e for e in r5.events if e["kind"] == "warning"]
    assert len(warnings) == 1
    assert not [e for e in _tick(sampler, 6).events if e["kind"] == "warning"]  # once only

    # reaped: gone
    shutil.rmtree(root / "101")
    r7 = _tick(sampler, 7)
    assert r7.processes == []
    assert [e["kind"] for e in r7.events] == ["process_exit"]
    assert sampler.failures == {"zombie": 2}


def test_system_row_has_every_meminfo_field(fake):
    _, _, sampler = fake
    r = _tick(sampler, 0)
    meminfo_lines = [ln for ln in (FIX / "meminfo").read_text().splitlines() if ln.strip()]
    assert len(r.system) == 3 + len(meminfo_lines)  # ts, t, tick + every field
    assert r.system["Active_anon"] > 0 and r.system["HugePages_Total"] >= 0
    assert r.sum_rss > 0 and r.sum_pss > 0 and r.target_processes == 2


def test_cgroup_v2_rows_in_long_format(fake, tmp_path):
    """A v2 host: the watched processes' cgroup gives a `usage` row (memory.current) and one
    row per memory.stat key, every tick; a cgroup that becomes unreadable gives an error
    row every tick and one warning. (Limits, events, pressure: test_containers_recording.)"""
    root, _, _ = fake
    mount = tmp_path / "cg2"
    (mount / "app.slice").mkdir(parents=True)
    (mount / "app.slice" / "memory.current").write_text("123456789\n")
    shutil.copy(FIX / "memory_v2.stat", mount / "app.slice" / "memory.stat")
    (root / "self").mkdir()
    (root / "self" / "mountinfo").write_text(
        f"24 29 0:22 / {mount} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
    )
    for pid in (100, 101):
        (root / str(pid) / "cgroup").write_text("0::/app.slice\n")
    fs = ProcFS(str(root))
    sel = ProcessSelector(Selection(pids=[100]), fs, clk_tck=100)
    sampler = Sampler(sel, TokenBucket(1.0), fs, clk_tck=100, read_cgroups=True)
    rows = _tick(sampler, 0).cgroup
    stat_keys = [ln.split()[0] for ln in (FIX / "memory_v2.stat").read_text().splitlines()]
    assert [r["key"] for r in rows] == ["usage", *stat_keys]  # one cgroup, both processes
    assert rows[0]["value"] == 123456789 and {r["version"] for r in rows} == {2}
    assert {r["cgroup"] for r in rows} == {"/app.slice"} and {r["error"] for r in rows} == {None}
    assert len(_tick(sampler, 1).cgroup) == len(rows)

    (mount / "app.slice" / "memory.current").unlink()  # unreadable: an error row, warned once
    r2 = _tick(sampler, 2)
    r3 = _tick(sampler, 3)
    for r in (r2, r3):
        errors = [x for x in r.cgroup if x["error"] is not None]
        assert [(x["key"], x["value"], x["error"]) for x in errors] == [
            ("usage", None, "memory.current:gone")]
        assert [x["key"] for x in r.cgroup if x["error"] is None] == stat_keys
    warnings = [e for e in r2.events + r3.events if e["kind"] == "warning"]
    assert len(warnings) == 1 and '"cgroup:unreadable"' in warnings[0]["data"]


def test_cgroup_of_this_host(tmp_path):
    """On the real host: the cgroup rows match what the kernel reports for the process's
    memory cgroup (v1 here; v2 elsewhere), or a warning says why there are none."""
    import subprocess
    import sys

    from loadmem.procfs.cgroup import (
        parse_memory_stat,
        parse_mountinfo_cgroups,
        parse_proc_cgroup,
        usage_file,
    )

    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        fs = ProcFS()
        mounts = parse_mountinfo_cgroups(fs.read("self/mountinfo"))
        ref = parse_proc_cgroup(fs.read_pid(p.pid, "cgroup"), mounts)
        sel = ProcessSelector(Selection(pids=[p.pid]), fs)
        sampler = Sampler(sel, TokenBucket(1.0), fs)
        res = _tick(sampler, 0)
    finally:
        p.kill()
        p.wait()
    if ref is None:
        assert res.cgroup == []
        return
    base = (mounts.v1_memory if ref.version == 1 else mounts.v2) + ref.path.rstrip("/")
    try:
        Path(base, usage_file(ref.version)).read_text()
        keys = list(parse_memory_stat(Path(base, "memory.stat").read_text()))
    except OSError:
        assert res.cgroup == []
        assert any('"cgroup:unreadable"' in (e["data"] or "") for e in res.events)
        return
    got = [r["key"] for r in res.cgroup]
    assert got[0] == "usage" and got[-len(keys):] == keys
    assert {(r["cgroup"], r["version"]) for r in res.cgroup} == {(ref.path, ref.version)}
    assert res.cgroup[0]["value"] > 0 and {r["error"] for r in res.cgroup} == {None}


def test_unchanged_stat_and_status_are_not_parsed_again(fake, monkeypatch):
    """An idle process's files read the same every tick: parsed once, then compared."""
    import loadmem.recorder.sampler as sampler_module

    _root, put, sampler = fake
    calls: list[str] = []
    for name in ("parse_stat", "parse_status"):
        real = getattr(sampler_module, name)
        monkeypatch.setattr(sampler_module, name,
                            lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))
    first = {r["pid"]: r for r in _tick(sampler, 0).processes}
    assert sorted(calls) == ["parse_stat"] * 2 + ["parse_status"] * 2
    calls.clear()
    second = {r["pid"]: r for r in _tick(sampler, 1).processes}
    assert calls == []
    cheap = ("ppid", "name", "state", "threads", "rss", "rss_anon", "rss_file", "rss_shmem",
             "vm_size", "swap", "minflt", "majflt", "utime", "stime")
    for pid in (100, 101):
        assert first[pid]["rss"] is not None
        assert [second[pid][k] for k in cheap] == [first[pid][k] for k in cheap]
    put(101, 100, 5001, minflt=100 + DIRTY_MIN_FAULTS)  # its stat text changes
    third = {r["pid"]: r for r in _tick(sampler, 2).processes}
    assert calls == ["parse_stat"]
    assert third[101]["minflt"] == 100 + DIRTY_MIN_FAULTS and third[100]["minflt"] == 100


def test_an_idle_process_row_is_the_last_one_with_the_new_time(fake):
    """Between its PSS reads an idle process's row is a copy of the previous one with the
    tick's time; the rows already handed out are never changed, and anything that moves
    (a fault, a fresh PSS read) gives a row built anew."""
    _root, put, sampler = fake
    rows = [{r["pid"]: r for r in _tick(sampler, n).processes} for n in range(3)]
    assert rows[0][101]["pss_fresh"] and not rows[1][101]["pss_fresh"]
    kept = dict(rows[1][101])
    time_keys = {"ts", "t", "tick"}
    for pid in (100, 101):
        assert rows[2][pid] is not rows[1][pid]
        assert rows[2][pid]["tick"] == 2 and rows[2][pid]["t"] == 2.0
        assert {k: v for k, v in rows[2][pid].items() if k not in time_keys} == {
            k: v for k, v in rows[1][pid].items() if k not in time_keys}
    assert rows[1][101] == kept  # the copy did not write through
    put(101, 100, 5001, minflt=100 + DIRTY_MIN_FAULTS)  # it faults: dirty, read again
    third = {r["pid"]: r for r in _tick(sampler, 3).processes}
    assert third[101]["minflt"] == 100 + DIRTY_MIN_FAULTS and third[101]["pss_fresh"]
    assert third[100]["minflt"] == 100
    fourth = {r["pid"]: r for r in _tick(sampler, 4).processes}
    assert not fourth[101]["pss_fresh"] and fourth[101]["pss_read_t"] == 3.0
    assert fourth[101]["minflt"] == 100 + DIRTY_MIN_FAULTS
