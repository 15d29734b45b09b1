"""Per-mapping snapshots in the recorder, with real processes: a C program (``cow.c``) whose
child writes its ``.data``, its ``.bss`` or a ``malloc`` block after fork, read through
``MappingSnapshots`` directly, through the ``Recorder`` API and through ``loadmem record``'s
control channel."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from loadmem.procfs.reader import ProcFS
from loadmem.recorder.mappings import MappingSnapshots
from loadmem.recorder.recorder import Recorder, RecordOptions
from loadmem.recorder.selection import Selection
from loadmem.recording import open_recording

COW_C = Path(__file__).parent / "fixtures" / "cow.c"
MiB = 1 << 20


@pytest.fixture(scope="module")
def cow_exe(tmp_path_factory) -> Path:
    gcc = shutil.which("gcc")
    assert gcc, "gcc is needed to build tests/fixtures/cow.c (apt-get install gcc)"
    exe = tmp_path_factory.mktemp("cow") / "cow"
    subprocess.run([gcc, "-O1", "-o", str(exe), str(COW_C)], check=True)
    return exe


class Cow:
    """``cow WHAT MIB``: a parent and its forked child; ``write()`` makes the child write."""

    def __init__(self, exe: Path, what: str, mib: int = 8):
        self.p = subprocess.Popen([str(exe), what, str(mib)], stdout=subprocess.PIPE, text=True,
                                  start_new_session=True)
        assert self.p.stdout is not None
        pids = dict(self.p.stdout.readline().split() for _ in range(2))
        self.parent, self.child = int(pids["parent"]), int(pids["child"])

    def write(self) -> None:
        os.kill(self.child, signal.SIGUSR1)
        assert self.p.stdout is not None and self.p.stdout.readline().strip() == "done"

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.p.pid, signal.SIGKILL)
        self.p.wait(timeout=10)


def _start_time(pid: int) -> int:
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text[text.rindex(")") + 2:].split()[19])


@dataclass
class W:
    pid: int
    start_time: int
    role: str = "target"


def _watched(*pids: int) -> dict[int, W]:
    return {p: W(p, _start_time(p)) for p in pids}


def _by(rows, **eq):
    return [r for r in rows if all(r[k] == v for k, v in eq.items())]


def _snapshot(snaps: MappingSnapshots, watched, reason: str) -> None:
    snaps.request(reason)
    assert snaps.step(watched, lambda: True) == len(watched)
    assert not snaps.pending


# --- MappingSnapshots on real processes -------------------------------------------------
@pytest.mark.parametrize(("what", "label"), [("data", ".data"), ("bss", ".bss")])
def test_writes_to_the_programs_globals_are_its_data(cow_exe, what, label):
    cow = Cow(cow_exe, what)
    try:
        watched = _watched(cow.parent, cow.child)
        snaps = MappingSnapshots(ProcFS())
        _snapshot(snaps, watched, "baseline_end")
        cow.write()
        _snapshot(snaps, watched, "observe_end")
    finally:
        cow.close()
    rows, snap_rows = snaps.take()
    assert len(snap_rows) == 4 and all(r["error"] is None and r["read_us"] > 0 for r in snap_rows)
    assert {r["exe"] for r in snap_rows} == {str(cow_exe)}
    own = _by(rows, pid=cow.child, kind="data", file=str(cow_exe))
    # .data is the file mapping itself, .bss the anonymous one after it
    seg = [r for r in own if (r["path"] == str(cow_exe)) == (label == ".data")]
    before = _by(seg, snapshot=0)
    after = _by(seg, snapshot=1)
    assert len(before) == len(after) == 1
    # 8 MiB written (of which a few KiB may share the last file page with .data)
    assert before[0]["shared_dirty"] >= 7 * MiB and before[0]["private_dirty"] < MiB
    assert after[0]["private_dirty"] >= 7 * MiB and after[0]["shared_dirty"] < MiB
    assert after[0]["pss"] - before[0]["pss"] >= 3 * MiB  # 8 MiB stopped being halved
    # identity holds between the two reads
    key = ("address", "size", "perms", "offset", "path")
    assert tuple(before[0][k] for k in key) == tuple(after[0][k] for k in key)


def test_malloc_block_is_anonymous(cow_exe):
    cow = Cow(cow_exe, "heap", 16)
    try:
        watched = _watched(cow.parent, cow.child)
        snaps = MappingSnapshots(ProcFS())
        _snapshot(snaps, watched, "start")
        cow.write()
        _snapshot(snaps, watched, "stop")
    finally:
        cow.close()
    rows, _ = snaps.take()
    grew = {}
    for kind in ("anon", "heap", "data"):
        b = sum(r["private_dirty"] for r in _by(rows, pid=cow.child, kind=kind, snapshot=0))
        a = sum(r["private_dirty"] for r in _by(rows, pid=cow.child, kind=kind, snapshot=1))
        grew[kind] = a - b
    assert grew["anon"] >= 15 * MiB and grew["heap"] < MiB and grew["data"] < MiB


def test_only_resident_mappings_and_aggregation_keeps_the_sums(cow_exe):
    cow = Cow(cow_exe, "heap", 4)
    try:
        watched = _watched(cow.parent)
        full = MappingSnapshots(ProcFS())
        _snapshot(full, watched, "start")
        small = MappingSnapshots(ProcFS(), max_rows=5)
        _snapshot(small, watched, "start")
        maps = Path(f"/proc/{cow.parent}/maps").read_text().count("\n")
    finally:
        cow.close()
    rows, snap = full.take()
    assert 5 < len(rows) < maps and snap[0]["mappings"] == maps and snap[0]["rows"] == len(rows)
    assert all(r["rss"] > 0 or r["swap"] > 0 for r in rows)
    agg_rows, _ = small.take()
    single = [r for r in agg_rows if r.get("address") is not None]
    grouped = [r for r in agg_rows if r.get("address") is None]
    assert len(single) == 4 and grouped and all(r["kind"] for r in grouped)
    assert len({(r["kind"], r["file"]) for r in grouped}) == len(grouped)  # one per group
    assert sum(r["mappings"] for r in agg_rows) == len(rows)
    for col in ("rss", "pss", "private_dirty", "shared_clean"):
        assert sum(r[col] for r in agg_rows) == pytest.approx(sum(r[col] for r in rows),
                                                              rel=0.01), col
    # the largest mappings stay rows of their own
    largest = sorted(rows, key=lambda r: r["rss"], reverse=True)[:4]
    assert {r["address"] for r in single} == {r["address"] for r in largest}


def test_the_budget_spreads_a_round_and_the_stop_finishes_it(cow_exe):
    cow = Cow(cow_exe, "heap", 1)
    try:
        watched = _watched(cow.parent, cow.child)
        snaps = MappingSnapshots(ProcFS())
        snaps.request("load_end")
        assert snaps.step(watched, lambda: False) == 0 and snaps.pending
        budget = iter([True, False])
        assert snaps.step(watched, lambda: next(budget)) == 1 and snaps.pending
        assert snaps.finish(watched) == 1 and not snaps.pending  # the rest, no "stop" round
        assert snaps.finish(watched) == 2  # nothing pending: a stop round
    finally:
        cow.close()
    _, snap_rows = snaps.take()
    assert [r["reason"] for r in snap_rows] == ["load_end", "load_end", "stop", "stop"]


class _DeniedSmaps(ProcFS):
    def __init__(self, pid: int):
        super().__init__()
        self.denied = pid

    def _read(self, path: str) -> bytes:
        if path == f"/proc/{self.denied}/smaps":
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return super()._read(path)


def test_an_unreadable_process_gets_a_row_with_the_error(cow_exe):
    cow = Cow(cow_exe, "heap", 1)
    try:
        watched = _watched(cow.parent, cow.child)
        events: list[tuple[str, dict]] = []
        snaps = MappingSnapshots(_DeniedSmaps(cow.child),
                                 event=lambda kind, msg, data, **_: events.append((kind, data)))
        _snapshot(snaps, watched, "start")
    finally:
        cow.close()
    rows, snap_rows = snaps.take()
    denied = _by(snap_rows, pid=cow.child)
    assert denied[0]["error"] == "smaps:access-denied" and not _by(rows, pid=cow.child)
    assert _by(rows, pid=cow.parent)
    assert events[-1] == ("snapshot_end", {"snapshot": 0, "reason": "start", "read": 1,
                                           "failed": 1, "seconds": 0.0})


# --- through the recorder ----------------------------------------------------------------
def _run_threaded(options: RecordOptions) -> tuple[Recorder, threading.Thread, list]:
    options.handle_signals = False
    rec = Recorder(options)
    result: list = []
    th = threading.Thread(target=lambda: result.append(rec.run()), daemon=True)
    th.start()
    return rec, th, result


def _wait(pred, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_recorder_snapshots_at_start_on_request_and_at_stop(cow_exe, tmp_path):
    cow = Cow(cow_exe, "data", 4)
    try:
        rec, th, result = _run_threaded(RecordOptions(
            out=tmp_path / "rec", interval=0.1, flush=0.5,
            selection=Selection(pids=[cow.parent])))
        _wait(lambda: rec.ticks >= 3)
        cow.write()
        rec.snapshot("load_end")
        _wait(lambda: rec.ticks >= 8)
        rec.stop("test")
        th.join(timeout=60)
    finally:
        cow.close()
    assert result and result[0].status == "complete"
    r = open_recording(tmp_path / "rec")
    snaps = r.table("snapshots").to_pylist()
    assert [(s["snapshot"], s["reason"]) for s in snaps] == [
        (0, "start"), (0, "start"), (1, "load_end"), (1, "load_end"), (2, "stop"), (2, "stop")]
    assert all(s["read_us"] > 0 and s["error"] is None and s["rows"] > 5 for s in snaps)
    # the runtime facts: program, command line, place in the tree
    assert {(s["pid"], s["depth"], s["exe"]) for s in snaps} == {
        (cow.parent, 0, str(cow_exe)), (cow.child, 1, str(cow_exe))}
    assert all(s["cmdline"] == f"{cow_exe} data 4" for s in snaps)
    assert {s["ppid"] for s in snaps if s["pid"] == cow.child} == {cow.parent}
    maps = r.table("mappings").to_pylist()
    child_data = [m for m in maps if m["pid"] == cow.child and m["path"] == str(cow_exe)
                  and m["kind"] == "data"]
    assert [m["reason"] for m in child_data] == ["start", "load_end", "stop"]
    assert child_data[0]["shared_dirty"] >= 4 * MiB and child_data[1]["private_dirty"] >= 8 * MiB
    events = r.events()
    kinds = [e["kind"] for e in events if e["kind"].startswith("snapshot_")]
    assert kinds == ["snapshot_start", "snapshot_end"] * 3
    for e in events:  # a round ends with its last read, at that read's time
        if e["kind"] == "snapshot_end":
            n = e["data"]["snapshot"]
            assert e["t"] == max(x["t"] for x in snaps if x["snapshot"] == n)
    assert r.meta["rows"]["mappings"] == len(maps) and r.meta["rows"]["snapshots"] == 6


def _record_budget(cow_exe: Path, out: Path, budget: float) -> list[dict]:
    cows = [Cow(cow_exe, "heap", 16) for _ in range(2)]
    try:
        rec, th, _ = _run_threaded(RecordOptions(
            out=out, interval=0.1, flush=0.5, pss_budget=budget,
            selection=Selection(pids=[c.parent for c in cows])))
        _wait(lambda: rec.ticks >= 10)
        rec.stop("test")
        th.join(timeout=60)
    finally:
        for c in cows:
            c.close()
    return open_recording(out).table("snapshots").to_pylist()


def test_snapshot_reads_wait_for_the_budget(cow_exe, tmp_path):
    """At 0.01 % of a core (a 0.5-ms bucket, less than the recorder's first tick) no
    snapshot read fits while it records: the start round stays pending and is read at the
    stop (and no second round is taken). With the whole core, it is read on the first tick."""
    starved = _record_budget(cow_exe, tmp_path / "starved", 0.0001)
    assert [s["reason"] for s in starved] == ["start"] * 4
    last_tick = max(s["tick"] for s in starved)
    assert last_tick >= 9 and {s["tick"] for s in starved} == {last_tick}
    free = _record_budget(cow_exe, tmp_path / "free", 1.0)
    assert [s["tick"] for s in free if s["reason"] == "start"] == [0] * 4
    assert [s["reason"] for s in free].count("stop") == 4


def test_control_channel_asks_for_a_snapshot(cow_exe, tmp_path):
    cow = Cow(cow_exe, "heap", 1)
    out = tmp_path / "rec"
    try:
        p = subprocess.Popen(
            [sys.executable, "-m", "loadmem", "record", "--pid", str(cow.parent), "--out",
             str(out), "--interval", "0.1s", "--control-stdin", "--no-finalize"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait(lambda: (out / "meta.json").exists())
        assert p.stdin is not None
        for line in ({"snapshot": "baseline_end"}, {"snapshot": "bogus"},
                     {"snapshot": "observe_end"}, {"stop": True}):
            p.stdin.write(json.dumps(line) + "\n")
            p.stdin.flush()
            time.sleep(0.3)
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    finally:
        cow.close()
    r = open_recording(out)
    reasons = [s["reason"] for s in r.table("snapshots").to_pylist()]
    assert reasons == ["start"] * 2 + ["baseline_end"] * 2 + ["observe_end"] * 2
    warnings = [e for e in r.events("warning")
                if e["data"].get("reason") == "control:invalid"]
    assert len(warnings) == 1 and "bogus" in warnings[0]["data"]["message"]


def test_no_mappings_option(cow_exe, tmp_path):
    cow = Cow(cow_exe, "heap", 1)
    try:
        r = subprocess.run([sys.executable, "-m", "loadmem", "record", "--pid", str(cow.parent),
                            "--out", str(tmp_path / "rec"), "--interval", "0.1s", "--duration",
                            "0.3s", "--no-mappings"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    finally:
        cow.close()
    rec = open_recording(tmp_path / "rec")
    assert rec.table("mappings").num_rows == 0 and not rec.has("snapshots")


def test_run_passes_the_mapping_options_to_the_recorder(tmp_path):
    from loadmem.load.recorder_link import RecorderProcess

    assert "--no-mappings" in RecorderProcess(tmp_path, mappings=False).cmd
    cmd = RecorderProcess(tmp_path, mappings_every=600.0).cmd
    assert cmd[cmd.index("--mappings-every") + 1] == "600.0s"
    assert not {"--no-mappings", "--mappings-every"} & set(RecorderProcess(tmp_path).cmd)
    from loadmem.cli.main import build_parser

    args = build_parser().parse_args(["run", "demo", "--target", "demo",
                                      "--mappings-every", "10m", "--no-mappings"])
    assert args.mappings_every == 600.0 and args.no_mappings
