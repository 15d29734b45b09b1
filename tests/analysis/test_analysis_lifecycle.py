"""Like with like: fixed sets, lifetimes, PSS coverage, steps and rates, on small recordings
written with the real ``TableWriter`` and schema (pure analysis edge cases; the corpus and
``test_analysis_corpus.py`` provoke the same with real processes).

Each recording is a master and workers sharing memory: a baseline (t 0-5), a load phase
(5-15) and an observe phase (15-30), one tick per 0.5 s, and the case under test written into
the process rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest

from loadmem.analysis import analyze
from loadmem.analysis.figures import format_figure
from loadmem.load.summary import memory_lines
from loadmem.recording import schema
from loadmem.recording.writer import TableWriter, finalize, write_meta

MiB = 1 << 20
INTERVAL = 0.5
N = 60  # ticks: baseline 0-10, load 10-30, observe 30-60
PHASES = (("baseline", 0.0, 5.0), ("load", 5.0, 15.0), ("observe", 15.0, 29.5))
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

Row = dict[str, object]
#: (tick, pid) -> the process's row at that tick, or None when it is not there
Procs = Callable[[int, int], Row | None]


def _write(path: Path, procs: Procs, pids: list[int], used: Callable[[int], float],
           events: list[tuple[float, str, dict]] = ()) -> Path:
    write_meta(path, {"status": "complete", "schema_version": schema.SCHEMA_VERSION,
                      "start_monotonic": 0.0, "interval_s": INTERVAL})
    keys = ["MemTotal", "MemFree", "MemAvailable", "Cached", "Buffers", "Shmem", "AnonPages",
            "SReclaimable", "SUnreclaim", "PageTables", "KernelStack"]
    sysw = TableWriter(path, "system", schema.system_schema(keys))
    pw = TableWriter(path, "processes", schema.PROCESSES)
    for tick in range(N):
        t = tick * INTERVAL
        u = used(tick)
        sysw.append({"ts": T0 + dt.timedelta(seconds=t), "t": t, "tick": tick,
                     "MemTotal": 16384 * MiB, "MemFree": int(12000 * MiB - u),
                     "MemAvailable": int(14000 * MiB - u), "Cached": 1000 * MiB,
                     "Buffers": 10 * MiB, "Shmem": 20 * MiB, "AnonPages": int(800 * MiB + u),
                     "SReclaimable": 100 * MiB, "SUnreclaim": 50 * MiB,
                     "PageTables": 10 * MiB, "KernelStack": 5 * MiB})
        for pid in pids:
            row = procs(tick, pid)
            if row is None:
                continue
            base: Row = {"ts": T0 + dt.timedelta(seconds=t), "t": t, "tick": tick, "pid": pid,
                         "start_time": 1000 + pid, "ppid": 1 if pid == 100 else 100,
                         "name": "srv", "role": "target", "depth": 0 if pid == 100 else 1}
            pw.append({**base, **row})
    ev = TableWriter(path, "events", schema.EVENTS)
    for name, a, b in PHASES:
        for kind, tt in (("phase_start", a), ("phase_end", b)):
            ev.append({"ts": T0 + dt.timedelta(seconds=tt), "t": tt, "kind": kind,
                       "phase": name, "message": None, "data": None})
    import json

    for tt, kind, data in events:
        ev.append({"ts": T0 + dt.timedelta(seconds=tt), "t": tt, "kind": kind, "phase": None,
                   "message": None, "data": json.dumps(data)})
    for w in (sysw, pw, ev):
        w.close()
    finalize(path)
    return path


def _proc(rss: float, anon: float, pss: float | None, uss: float | None = None,
          shared: float | None = None, shmem: float = 0.0, read_t: float = 0.0,
          fresh: bool = True) -> Row:
    row: Row = {"rss": int(rss), "rss_anon": int(anon), "rss_file": int(rss - anon - shmem),
                "rss_shmem": int(shmem)}
    if pss is not None:
        uss = uss if uss is not None else 0.0
        shared = shared if shared is not None else rss - uss
        row.update({"pss": int(pss), "smaps_rss": int(rss), "pss_anon": int(pss),
                    "pss_file": 0, "pss_shmem": 0, "private_clean": 0,
                    "private_dirty": int(uss), "shared_clean": 0,
                    "shared_dirty": int(shared), "pss_fresh": fresh, "pss_read_t": read_t})
    return row


def test_pss_coverage_growing_invents_no_change(tmp_path: Path) -> None:
    """11 idle processes sharing 100 MiB: only 6 have a PSS figure at first, all from 3 s on.
    Summing whoever has a figure would climb by the late ones' PSS; like with like, nothing
    moved (issue item 6)."""
    pids = [100, *range(101, 111)]

    def procs(tick: int, pid: int) -> Row:
        share = 100 * MiB / 11
        read = pid <= 105 or tick >= 6
        return _proc(110 * MiB, 100 * MiB, share + MiB if read else None, uss=MiB,
                     read_t=0.0 if tick < 6 else 3.0)

    rec = _write(tmp_path / "rec", procs, pids, used=lambda i: 0.0)
    a = analyze(rec, window="whole")
    f = a.figures
    assert abs(f["watched.pss_delta_bytes"]) < 1 * MiB, f["watched.pss_delta_bytes"]
    assert a.finding("cow-unsharing") is None and a.finding("rss-growth") is None
    assert "PSS figures covered 6 of 11 processes when the window opened" in a.headline
    # and the over-count is said: 11 x 110 MiB of RSS, about 111 MiB of PSS
    assert "Summing RSS counts each shared page once per process" in a.headline


def test_leak_during_load_then_flat_is_found_and_named(tmp_path: Path) -> None:
    """A step: +60 MiB of new anonymous memory during the load, flat after. Its slope over
    the window is 0 once flat; its level change is not."""

    def step(tick: int) -> float:  # the load is ticks 10-30; the leak ticks 10-24
        return min(max(tick - 10, 0), 14) / 14

    def procs(tick: int, pid: int) -> Row:
        grown = step(tick) * 60 * MiB
        return _proc(100 * MiB + grown, 80 * MiB + grown, 100 * MiB + grown, uss=20 * MiB + grown)

    rec = _write(tmp_path / "rec", procs, [100], used=lambda i: step(i) * 60 * MiB)
    a = analyze(rec)
    g = a.finding("rss-growth")
    assert a.window.name == "load+observe"
    assert g is not None and g.severity == "warning", a.headline
    assert 55 * MiB < g.explained_bytes < 65 * MiB
    assert "during load +" in g.statement and "after load 0 B" in g.statement, g.statement
    whole = analyze(rec, window="whole").finding("rss-growth")
    assert whole is not None and whole.explained_bytes > 55 * MiB
    # a rate printed next to an amount is the amount over its time, with the amount's sign
    rate = a.figures["window.used_rate_bytes_per_s"]
    assert rate == pytest.approx(a.figures["window.used_delta_bytes"] / a.window.duration)
    assert format_figure("window.used_rate_bytes_per_s", rate).startswith("+")


def test_forked_workers_are_new_not_growth(tmp_path: Path) -> None:
    """A master holding 100 MiB forks 8 workers during the load: sum RSS rises by 8 x 100 MiB,
    real memory (PSS) barely; the workers appeared, nothing grew."""
    pids = [100, *range(101, 109)]

    def procs(tick: int, pid: int) -> Row | None:
        born = 12 + (pid - 101) * 2  # one worker every second from t = 6 s
        if pid != 100 and tick < born:
            return None
        n = 1 + sum(1 for p in range(101, 109) if tick >= 12 + (p - 101) * 2)
        share = 100 * MiB / n
        return _proc(100 * MiB, 100 * MiB, share + (MiB if pid != 100 else 0),
                     uss=MiB if pid != 100 else 0.0, read_t=tick * INTERVAL)

    rec = _write(tmp_path / "rec", procs, pids, used=lambda i: 0.0)
    a = analyze(rec)
    f = a.figures
    assert f["processes.appeared_count"] == 8 and f["watched.same_count"] == 1
    assert a.finding("rss-growth") is None and a.finding("cow-unsharing") is None, a.headline
    assert "8 processes appeared" in a.headline and "new, not growth" in a.headline
    assert "Summing RSS counts each shared page once per process" in a.headline
    lines = "\n".join(memory_lines(a))
    assert "8 appeared" in lines


def test_an_exiting_worker_takes_its_memory_with_it(tmp_path: Path) -> None:
    """A worker copies its whole heap while it exits at the load/observe boundary (an
    interpreter tearing down), then the last worker unshares 40 MiB after the load: the
    exit is accounted apart and the unsharing found (issue item 4)."""
    pids = [100, 101, 102]

    def procs(tick: int, pid: int) -> Row | None:
        if pid == 101:  # copies 80 MiB in its last ticks, exits at tick 30
            if tick > 30:
                return None
            copied = 80 * MiB if tick >= 28 else 0.0
            return _proc(100 * MiB, 100 * MiB, 100 * MiB / 3 + copied * 2 / 3, uss=copied,
                         read_t=tick * INTERVAL)
        alive = 3 if tick <= 30 else 2
        copied = min(max(tick - 36, 0), 10) / 10 * 40 * MiB  # by 102; the master's originals
        pss = 100 * MiB / alive + copied / 2  # turn private too: each carries half
        return _proc(100 * MiB, 100 * MiB, pss, uss=copied if pid == 102 else 0.0,
                     read_t=tick * INTERVAL)

    events = [(15.5, "process_exit", {"pid": 101, "start_time": 1101, "role": "target"})]
    rec = _write(tmp_path / "rec", procs, pids, used=lambda i: 0.0, events=events)
    a = analyze(rec)
    cow = a.finding("cow-unsharing")
    assert cow is not None, a.headline
    assert 30 * MiB < cow.explained_bytes < 50 * MiB, cow.statement
    assert a.figures["processes.exited_count"] == 1
    assert "1 process exited" in a.headline
    # the process table gives the exited worker's figures when it was last seen
    gone = next(p for p in a.processes if p["pid"] == 101)
    assert gone["rss_end_bytes"] == 100 * MiB and gone["last_s"] == pytest.approx(15.0)


def test_gaps_in_the_samples_are_said(tmp_path: Path) -> None:
    events = [(20.0, "gap", {"missed": 4, "from_t": 18.0, "to_t": 20.0, "cause": "host"})]
    rec = _write(tmp_path / "rec", lambda tick, pid: _proc(50 * MiB, 40 * MiB, 20 * MiB),
                 [100], used=lambda i: 0.0, events=events)
    a = analyze(rec)
    assert any("4 recorder tick(s) were missed" in n for n in a.notes), a.notes
