"""Faults of ``loadmem record`` itself, on real processes: SIGKILL at random points loses at
most one ``--flush`` of samples; compaction runs beside sampling without holding a tick
back or leaving the recorder bigger; a gap in sampling (a stopped recorder) is recorded as
one; the compaction child never outlives the recorder and is never watched.

Every test is a few seconds of ``--interval 0.1s`` recording of small idle processes.
Allowances are stated as multiples of the interval, never as absolute times."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from loadmem.recorder.compactor import BackgroundCompactor
from loadmem.recording import open_recording

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20

#: Idle processes holding a little memory; their command line carries a tag to --match.
IDLE = "import sys, time; b = bytearray({mib} << 20); b[::4096] = b'x' * len(b[::4096]); " \
       "print('ready', flush=True); time.sleep(120)"


def _idle(n: int, tag: str, mib: int = 2) -> list[subprocess.Popen]:
    procs = [subprocess.Popen([sys.executable, "-c", IDLE.format(mib=mib), tag],
                              stdout=subprocess.PIPE, text=True) for _ in range(n)]
    for p in procs:  # started and settled: their start-up CPU is not in the recording
        assert p.stdout.readline().strip() == "ready"
    return procs


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            p.kill()
        p.wait(timeout=10)


def _record(out: Path, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "loadmem", "record", "--out", str(out), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _segment_ticks(seg_dir: Path) -> list[list[int]]:
    """The ticks of each segment of one table, in segment order."""
    return [pq.read_table(p, columns=["tick"]).column("tick").to_pylist()
            for p in sorted(seg_dir.glob("rec-*.parquet"))]


# --- 1. SIGKILL at random points: at most one --flush lost ------------------------------
def test_sigkill_at_random_points_loses_at_most_one_flush(tmp_path):
    interval, flush = 0.1, 1.0
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    targets = _idle(2, "loadmem-fault-target")
    losses = []
    try:
        for run in range(3):
            out = tmp_path / f"rec{run}"
            proc = _record(out, "--pid", str(targets[0].pid), "--pid", str(targets[1].pid),
                           "--interval", f"{interval}s", "--flush", f"{flush}s",
                           "--status-stdout")
            try:
                assert json.loads(proc.stdout.readline())["tick"] == 0
                time.sleep(rng.uniform(1.2, 3.4))  # anywhere within the second to fourth flush
                killed_at = time.monotonic()
                proc.kill()
                proc.wait(timeout=10)
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.communicate(timeout=10)
            rec = open_recording(out)
            assert rec.meta["status"] == "recording"
            ticks = rec.table("system", ["tick", "t"])
            assert ticks.column("tick").to_pylist() == list(range(ticks.num_rows))
            last_t = max(ticks.column("t").to_pylist())
            loss = killed_at - rec.meta["start_monotonic"] - last_t
            losses.append(round(loss, 3))
            # written on the wall-clock schedule: each segment after the first holds the ticks
            # of one --flush, not one more (a flush timed from the end of the previous one
            # drifts by a tick each time: 6 s between segments at --flush 5s)
            per_segment = _segment_ticks(out / "system")
            assert len(per_segment) >= 1
            _assert_system_ticks_whole(rec, 2)
            assert all(len(s) <= round(flush / interval) for s in per_segment[1:]), per_segment
            assert len(per_segment[0]) <= round(flush / interval) + 1
    finally:
        _stop(targets)
    # the samples lost are those after the last flush: at most --flush of them, plus the
    # write of the flush the kill interrupted and a late tick (one interval allowed)
    assert all(0 <= x <= flush + interval for x in losses), f"losses {losses} (seed {seed})"


def _assert_system_ticks_whole(rec, per_tick: int, flush_ticks: int = 10) -> None:
    """Every tick of the system table has its rows in the processes and recorder tables;
    those may hold one more flush (a kill between two renames), never less."""
    ticks = rec.table("system", ["tick"]).column("tick").to_pylist()
    own = rec.table("recorder", ["tick"]).column("tick").to_pylist()
    procs = rec.table("processes", ["tick"]).column("tick").to_pylist()
    for name, got, n in (("recorder", own, 1), ("processes", procs, per_tick)):
        counts = {x: got.count(x) for x in set(got)}
        assert all(counts.get(x) == n for x in ticks), (name, ticks, counts)
        extra = sorted(set(got) - set(ticks))
        assert extra == list(range(len(ticks), len(ticks) + len(extra))), (name, extra)
        assert len(extra) <= flush_ticks + 1, (name, extra)


#: ``loadmem record`` with its segment renames watched: the recorder SIGKILLs itself right
#: after it renamed the processes table's third segment into place, between two tables'
#: renames of one flush (the window a kill must hit to leave the tables uneven).
KILL_BETWEEN_RENAMES = """
import os, signal, sys
from loadmem.recording import writer
real = os.replace
def replace(src, dst):
    real(src, dst)
    if str(dst).endswith(os.path.join("processes", "rec-000003.parquet")):
        os.kill(os.getpid(), signal.SIGKILL)
writer.os = type(os)("os_watched")
writer.os.__dict__.update(os.__dict__)
writer.os.replace = replace
from loadmem.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_kill_between_two_tables_renames_leaves_every_system_tick_whole(tmp_path):
    """The worst point for a kill: one table's segment of a flush renamed into place, the
    others not. The system table is renamed last, so every tick in it is whole."""
    targets = _idle(2, "loadmem-fault-target")
    out = tmp_path / "rec"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", KILL_BETWEEN_RENAMES, "record", "--out", str(out),
             "--pid", str(targets[0].pid), "--pid", str(targets[1].pid),
             "--interval", "0.1s", "--flush", "0.5s", "--duration", "10s"],
            capture_output=True, text=True, timeout=60, cwd=ROOT)
    finally:
        _stop(targets)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    rec = open_recording(out)
    assert rec.meta["status"] == "recording"
    assert len(list((out / "system").glob("rec-*.parquet"))) == 2  # the third: not renamed
    assert len(list((out / "processes").glob("rec-*.parquet"))) == 3
    _assert_system_ticks_whole(rec, 2, flush_ticks=5)
    ticks = rec.table("system", ["tick"]).column("tick").to_pylist()
    procs = set(rec.table("processes", ["tick"]).column("tick").to_pylist())
    assert max(procs) > max(ticks)  # the processes table is the one ahead, by that flush


# --- 2. compaction beside sampling -----------------------------------------------------
def test_compaction_never_stalls_sampling_nor_grows_the_recorder(tmp_path):
    interval, flush, every = 0.1, 0.5, 16
    tag = f"loadmem-compact-{os.getpid()}"
    targets = _idle(6, tag)
    out = tmp_path / "rec"
    try:
        # --match TAG also matches the recorder's own command line, and so its compaction
        # child's: the child must never be watched
        proc = _record(out, "--match", tag, "--interval", f"{interval}s", "--flush",
                       f"{flush}s", "--compact-every", str(every), "--duration", "10.2s",
                       "--no-finalize")
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        _stop(targets)
    rec = open_recording(out)
    compacted = sorted(p.name for p in (out / "processes").glob("rec-??????-??????.parquet"))
    assert compacted == ["rec-000001-000016.parquet"], compacted  # it did compact, once
    r = rec.table("recorder").to_pylist()
    assert r[-1]["cpu_children"] > 0  # the child's CPU is accounted
    # the first second warms up (first reads of every process, first Parquet writes)
    steady = [x for x in r if x["t"] >= 1.0]
    events = [json.loads(e["data"]) for e in rec.table("events").to_pylist()
              if e["kind"] == "gap" and e["t"] >= 1.0]
    # the recorder's own work never took an interval (inline compaction did: 0.6 s)...
    assert not [g for g in events if g["cause"] == "recorder"], events
    # ... and no tick waited more than two intervals, unless the recorder says the host
    # did not run it in time (the machine is shared: a descheduled recorder is not a stall)
    host = [(g["from_t"], g["to_t"]) for g in events]
    gaps = [(a["t"], b["t"]) for a, b in itertools.pairwise(steady)
            if b["t"] - a["t"] > 2 * interval]
    assert all(any(abs(a - f) < 1e-5 and abs(b - t) < 1e-5 for f, t in host)
               for a, b in gaps), (gaps, events)
    # the recorder's RSS after the compaction is what it was before (it stepped up by
    # 17 MB when compaction ran inside it); allow a few pages of growth
    before = [x["rss"] for x in steady if x["t"] < every * flush - 1]
    after = [x["rss"] for x in steady if x["t"] > every * flush + 1]
    assert before and after
    assert max(after) - max(before) < 2 * MIB, [(round(x["t"], 1), x["rss"]) for x in steady]
    pids = set(rec.table("processes", ["pid"]).column("pid").to_pylist())
    assert pids == {p.pid for p in targets}, "only the targets: not the recorder's child"


# --- 3. a gap in sampling is recorded ----------------------------------------------------
def test_a_stopped_recorder_leaves_a_recorded_gap(tmp_path):
    interval = 0.1
    targets = _idle(1, "loadmem-gap-target")
    out = tmp_path / "rec"
    try:
        proc = _record(out, "--pid", str(targets[0].pid), "--interval", f"{interval}s",
                       "--status-stdout", "--duration", "4s")
        for _ in range(8):
            proc.stdout.readline()
        os.kill(proc.pid, signal.SIGSTOP)  # what a busy or suspended host does to a recorder
        time.sleep(1.0)
        os.kill(proc.pid, signal.SIGCONT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        _stop(targets)
    rec = open_recording(out)
    gaps = [json.loads(e["data"]) for e in rec.table("events").to_pylist() if e["kind"] == "gap"]
    big = [g for g in gaps if g["to_t"] - g["from_t"] >= 0.9]
    assert len(big) == 1, gaps
    g = big[0]
    assert g["cause"] == "host" and g["missed"] >= 0.8 / interval
    r = rec.table("recorder").to_pylist()
    after = next(x for x in r if abs(x["t"] - g["to_t"]) < 1e-5)
    assert after["missed_ticks"] == g["missed"]
    # every missing slot is counted: the ticks' span is the ticks that happened plus those
    # missed, whatever their cause
    span = round((r[-1]["t"] - r[0]["t"]) / interval)
    assert abs(span - (len(r) - 1 + sum(x["missed_ticks"] for x in r))) <= 1


# --- 4. the compaction child -------------------------------------------------------------
_SLOW_JOB = textwrap.dedent("""
    import os, signal, sys, time
    sys.path.insert(0, {root!r})
    from loadmem.recorder.compactor import BackgroundCompactor
    class Slow:
        table = "system"
        def run(self):
            time.sleep(60)
    c = BackgroundCompactor()
    print(c.start([Slow()]), flush=True)
    time.sleep(0.3)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def test_compaction_child_dies_with_the_recorder():
    proc = subprocess.run([sys.executable, "-c", _SLOW_JOB.format(root=str(ROOT))],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == -signal.SIGKILL
    child = int(proc.stdout.split()[0])
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the compaction child outlived the recorder"


class _Job:
    def __init__(self, table: str, fail: bool, mark: Path):
        self.table, self.fail, self.mark = table, fail, mark

    def run(self):
        if self.fail:
            raise OSError(28, "No space left on device")
        self.mark.write_text(str(os.getpid()) + " " + str(os.nice(0)))


def test_compaction_child_reports_failure_cpu_and_runs_niced(tmp_path):
    forked, reaped = [], []
    c = BackgroundCompactor(on_fork=forked.append, on_reap=reaped.append)
    mark = tmp_path / "mark"
    pid = c.start([_Job("system", False, mark), _Job("cgroup", False, mark)])
    assert c.busy and c.start([_Job("x", False, mark)]) is None  # one child at a time
    done = c.wait()
    assert done.ok and done.pid == pid and forked == reaped == [pid]
    child_pid, child_nice = map(int, mark.read_text().split())
    assert child_pid == pid and child_nice >= os.nice(0) + 10  # ran below the recorder
    assert done.tables == ["system", "cgroup"] and done.cpu_s >= 0
    c.start([_Job("system", True, mark)])
    failed = c.wait()
    assert not failed.ok and "No space left" in failed.error
    assert c.runs == 2 and not c.busy and c.poll() is None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
