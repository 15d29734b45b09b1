"""Where memory was unshared, which runtime did it, and the documented remedy: real pre-fork
processes recorded by the real recorder, one per runtime, compared between a snapshot before
the workers write and one after.

- a CPython parent with 150,000 lists, whose forked workers run ``gc.collect()``: the
  collector writes the header of every tracked object they inherited;
- a C program (``tests/fixtures/cow.c``) whose child writes a ``malloc``ed block, or the
  program's own initialised global array (``.data``);
- a Ruby parent with 150,000 arrays, whose forked workers run ``GC.start``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from loadmem.analysis import analyze
from loadmem.analysis.attribution import (
    Place,
    Round,
    attribute,
    attribute_recording,
    choose_rounds,
    place_label,
)
from loadmem.analysis.remedies import PY_GC_FREEZE, RUBY_WARMUP
from loadmem.analysis.runtime import Runtime
from loadmem.presentation import json_report, markdown, text
from loadmem.presentation.plot import render_figure
from loadmem.recorder.recorder import Recorder, RecordOptions
from loadmem.recorder.selection import Selection
from loadmem.recording import open_recording
from loadmem.recording.schema import MAPPINGS, SNAPSHOTS

MiB = 1 << 20
COW_C = Path(__file__).resolve().parent.parent / "fixtures" / "cow.c"

PY_PREFORK = textwrap.dedent("""
    import gc, os, signal, sys
    signal.alarm(120)
    data = [[i, str(i)] for i in range(150_000)]   # container objects the GC tracks
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})  # no lost wake-up
    pids = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            signal.alarm(120)
            signal.sigwait({signal.SIGUSR1})
            gc.collect()
            # one write(2): the lines of two workers never interleave (print makes two
            # when PYTHONUNBUFFERED is set: "donedone")
            os.write(1, b"done\\n")
            while True:
                signal.pause()
        pids.append(pid)
    os.write(1, (" ".join(map(str, pids)) + "\\n").encode())
    while True:
        signal.pause()
""")

RB_PREFORK = textwrap.dedent("""
    Signal.trap("ALRM") { exit!(1) }
    Process.setrlimit(:CPU, 120) rescue nil
    data = Array.new(150_000) { |i| [i, i.to_s] }
    pids = 2.times.map do
      fork do
        go = false
        Signal.trap("USR1") { go = true }
        sleep 0.05 until go
        GC.start
        STDOUT.syswrite("done\\n")  # one write: two workers never interleave
        sleep 120
      end
    end
    STDOUT.puts pids.join(" ")
    STDOUT.flush
    sleep 120
""")


class Tree:
    """A pre-fork parent and its workers, each waiting for SIGUSR1 to write."""

    def __init__(self, cmd: list[str], workers_line: bool = True):
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert self.p.stdout is not None
        line = self.p.stdout.readline().split()
        if workers_line:
            self.workers = [int(x) for x in line]
        else:  # cow.c: "parent PID" and "child PID" lines
            pids = dict([line, self.p.stdout.readline().split()])
            self.workers = [int(pids["child"])]
        self.pid = self.p.pid

    def write(self) -> None:
        """Let every worker write; return once each said "done" (each child writes its line
        with one write(2), so the lines of two children never interleave)."""
        for w in self.workers:
            os.kill(w, signal.SIGUSR1)
        assert self.p.stdout is not None
        for _ in self.workers:
            assert self.p.stdout.readline().strip() == "done"

    def close(self) -> None:
        os.killpg(self.p.pid, signal.SIGKILL)
        self.p.wait(timeout=10)


def _wait(pred, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def record_around(tree: Tree, out: Path, tail: float = 0.0):
    """Record the tree: a snapshot before the workers write (``baseline_end``), one at the
    stop, ``tail`` seconds after they wrote; return the attribution between them. The
    recording's last tick reads the PSS figures the writes moved, whatever the budget: the
    tail is quiet samples for the analysis (levels, noise), not a wait for budgeted reads
    (at the default 2 %, 1.5 s was too short for them on a busy CI machine: the figures read
    halfway through the writes were the last ones, and no cow-unsharing finding)."""
    # a budget the cheap tier at 0.1 s cannot eat up (it is charged to it, like pyarrow's
    # first import in this thread's process): the figures follow the writes as they fault
    rec = Recorder(RecordOptions(out=out, interval=0.1, flush=0.5, handle_signals=False,
                                 pss_budget=0.25, selection=Selection(pids=[tree.pid])))
    th = threading.Thread(target=rec.run, daemon=True)
    th.start()
    try:
        _wait(lambda: rec.snapshots_done >= 1)
        rec.snapshot("baseline_end")
        _wait(lambda: rec.snapshots_done >= 2)
        tree.write()
        time.sleep(tail)
    finally:
        rec.stop("test")
        th.join(timeout=60)
    recording = open_recording(out)
    rounds = {r["reason"]: r["t"] for r in recording.table("snapshots").to_pylist()}
    att = attribute_recording(recording, rounds["baseline_end"], recording.duration)
    assert att is not None
    assert (att.start.reason, att.end.reason) == ("baseline_end", "stop")
    return att


def _top(group) -> tuple[Place, float]:
    shares = group.shares()
    assert shares, f"nothing unshared in {group.group}"
    return shares[0]


# --- CPython ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cpython(tmp_path_factory):
    out = tmp_path_factory.mktemp("cpython") / "rec"
    tree = Tree([sys.executable, "-c", PY_PREFORK])
    try:
        att = record_around(tree, out, tail=1.5)
    finally:
        tree.close()
    return out, att


def test_cpython_workers_unsharing_through_the_gc(cpython):
    _, att = cpython
    workers = att.group("worker")
    assert workers is not None and workers.processes == 2 and att.compared == 3
    assert workers.unshared >= 8 * MiB, workers.to_dict()
    place, share = _top(att.total)
    assert place.kind == "anon" and share >= 0.8, att.total.sentence()
    assert att.total.sentence().startswith("9") and "anonymous mappings (CPython object " \
        "arenas)" in att.total.sentence()
    rt = workers.runtime
    assert rt is not None and rt.name == "cpython"
    assert rt.version is not None
    assert rt.version.startswith(f"{sys.version_info.major}.{sys.version_info.minor}")
    remedy = workers.remedy
    assert remedy is not None and remedy.applies is True
    assert "gc.freeze()" in remedy.line and PY_GC_FREEZE in remedy.sources
    d = att.to_dict()
    assert d["total"]["places"][0]["kind"] == "anon"
    assert d["groups"][1]["runtime"]["name"] == "cpython"


def test_the_verdict_names_where_the_runtime_and_the_remedy(cpython):
    """``loadmem analyze`` (whole recording): the copy-on-write finding says where, which
    runtime and its documented remedy with the link; every output shows the breakdown."""
    path, _ = cpython
    a = analyze(path, window="whole")
    cow = a.finding("cow-unsharing")
    assert cow is not None, [f.id for f in a.findings]
    assert "Where (per-mapping snapshots): " in cow.statement
    assert "anonymous mappings (CPython object arenas)" in cow.statement
    assert "gc.freeze()" in cow.statement and PY_GC_FREEZE in cow.statement
    assert "needs CPython >= 3.7" in cow.statement
    assert cow.evidence["runtime"].startswith("CPython 3.") and cow.evidence["remedy_applies"]
    assert a.figures["where.unshared_anon_ratio"] >= 0.8
    assert a.figures["where.unshared_bytes"] >= 8 * MiB
    # both snapshots before the writes sit at the window's start: the later one is taken
    assert a.attribution is not None and a.attribution["start"]["reason"] == "baseline_end"
    out = io.StringIO()
    text.render(a, out)
    assert "\nWhere (per-mapping snapshots baseline_end -> stop" in out.getvalue()
    md = io.StringIO()
    markdown.render(a, md)
    assert "**Where**" in md.getvalue() and "<https://docs.python.org/3/library/gc.html" \
        "#gc.freeze>" in md.getvalue()
    doc = json.loads(_json(a))
    assert doc["attribution"]["total"]["places"][0]["kind"] == "anon"
    assert doc["figures"]["where.unshared_anon_ratio"] >= 0.8
    fig = render_figure(path, a)
    titles = [ax.get_title() for ax in fig.axes]
    assert any(t.startswith("workers (2, CPython 3.") for t in titles), titles


def _json(a) -> str:
    out = io.StringIO()
    json_report.render(a, out)
    return out.getvalue()


def test_no_snapshots_no_attribution(tmp_path):
    """A recording made with --no-mappings: no attribution, the where.* figures null."""
    tree = Tree([sys.executable, "-c", PY_PREFORK])
    try:
        done = subprocess.run([sys.executable, "-m", "loadmem", "record", "--pid",
                               str(tree.pid), "--out", str(tmp_path / "rec"), "--interval",
                               "0.2s", "--duration", "1s", "--no-mappings"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    finally:
        tree.close()
    a = analyze(tmp_path / "rec", window="whole")
    assert a.attribution is None
    assert all(a.figures[k] is None for k in a.figures if k.startswith("where."))
    assert len([k for k in a.figures if k.startswith("where.")]) == 7


# --- a C program --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cow_exe(tmp_path_factory) -> Path:
    gcc = shutil.which("gcc")
    assert gcc, "gcc is needed to build tests/fixtures/cow.c (apt-get install gcc)"
    exe = tmp_path_factory.mktemp("cow") / "cow"
    subprocess.run([gcc, "-O1", "-o", str(exe), str(COW_C)], check=True)
    return exe


def test_c_program_writing_a_malloc_block(cow_exe, tmp_path):
    tree = Tree([str(cow_exe), "heap", "16"], workers_line=False)
    try:
        att = record_around(tree, tmp_path / "rec")
    finally:
        tree.close()
    place, share = _top(att.total)
    assert place.kind in ("anon", "heap") and share >= 0.9, att.total.sentence()
    assert att.total.unshared >= 12 * MiB
    worker = att.group("worker")
    assert worker is not None and worker.runtime is not None
    assert worker.runtime.name == "native" and worker.runtime.program == "cow"
    assert worker.remedy is not None and worker.remedy.remedy is None
    assert "no runtime remedy is claimed" in worker.remedy.line


def test_c_program_writing_its_own_data(cow_exe, tmp_path):
    tree = Tree([str(cow_exe), "data"], workers_line=False)
    try:
        att = record_around(tree, tmp_path / "rec")
    finally:
        tree.close()
    place, share = _top(att.total)
    assert (place.kind, place.file) == ("data", str(cow_exe)) and share >= 0.9
    assert place.label == "cow .data"
    assert att.total.sentence().startswith(f"{share * 100:.0f} % in cow .data")
    assert 6 * MiB <= place.unshared <= 10 * MiB  # 8 MiB written once, shared by 2 before


# --- Ruby ---------------------------------------------------------------------------------------
def test_ruby_workers_unsharing_through_the_gc(tmp_path):
    ruby = shutil.which("ruby")
    assert ruby, "ruby is needed (apt-get install ruby)"
    version = subprocess.run([ruby, "-e", "print RUBY_VERSION"], capture_output=True,
                             text=True, check=True).stdout
    tree = Tree([ruby, "-e", RB_PREFORK])
    try:
        att = record_around(tree, tmp_path / "rec")
    finally:
        tree.close()
    workers = att.group("worker")
    assert workers is not None and workers.unshared >= 2 * MiB, workers.to_dict()
    place, _ = _top(workers)
    assert place.kind in ("anon", "heap")
    assert sum(s for p, s in workers.shares() if p.kind in ("anon", "heap")) >= 0.8
    rt = workers.runtime
    assert rt is not None and rt.name == "ruby" and rt.version is not None
    assert version.startswith(rt.version)
    remedy = workers.remedy
    assert remedy is not None and RUBY_WARMUP in remedy.sources
    old = tuple(int(x) for x in version.split(".")[:2]) < (3, 3)
    assert remedy.applies is (not old)
    assert "Ruby >= 3.3" in remedy.line
    assert ("nakayoshi_fork" in remedy.line) if old else ("Process.warmup" in remedy.line)


# --- the rules, on small tables ------------------------------------------------------------------
def _tables(rows: list[dict], snaps: list[dict]):
    import pyarrow as pa

    def table(schema, items):
        cols = {f.name: [r.get(f.name) for r in items] for f in schema}
        return pa.table({k: pa.array(v, f.type) for (k, v), f in zip(cols.items(), schema,
                                                                       strict=True)})

    return table(MAPPINGS, rows), table(SNAPSHOTS, snaps)


def _row(snapshot, pid, address, kind, rss, pss, path="", size=4 * MiB, file=None, t=None):
    import datetime as dt

    return {"ts": dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "t": float(t if t is not None else
                                                                       snapshot * 10),
            "tick": snapshot * 10, "snapshot": snapshot, "reason": f"r{snapshot}", "pid": pid,
            "start_time": 1, "address": address, "size": size, "perms": "rw-p", "offset": 0,
            "path": path, "kind": kind, "file": file, "mappings": 1, "rss": rss, "pss": pss}


def _snap(snapshot, pid, t=None):
    import datetime as dt

    return {"ts": dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "t": float(t if t is not None else
                                                                       snapshot * 10),
            "tick": snapshot * 10, "snapshot": snapshot, "reason": f"r{snapshot}", "pid": pid,
            "start_time": 1, "exe": "/usr/bin/python3.11", "error": None}


def test_new_mappings_are_growth_not_unsharing_and_heap_resizes_match():
    rows = [
        # pid 1 and 2 share an 8 MiB arena; pid 2 copies it (PSS 4 -> 8, RSS flat)
        _row(0, 1, 0x1000_0000, "anon", 8 * MiB, 4 * MiB),
        _row(0, 2, 0x1000_0000, "anon", 8 * MiB, 4 * MiB),
        _row(1, 1, 0x1000_0000, "anon", 8 * MiB, 4 * MiB),
        _row(1, 2, 0x1000_0000, "anon", 8 * MiB, 8 * MiB),
        # pid 2's [heap] grows by 1 MiB (brk): same start, new size
        _row(0, 2, 0x500_0000, "heap", 1 * MiB, 1 * MiB, "[heap]", size=1 * MiB),
        _row(1, 2, 0x500_0000, "heap", 2 * MiB, 2 * MiB, "[heap]", size=2 * MiB),
        # pid 2 maps a new 3 MiB buffer
        _row(1, 2, 0x2000_0000, "anon", 3 * MiB, 3 * MiB),
        # pid 1 unmaps a 1 MiB buffer
        _row(0, 1, 0x3000_0000, "anon", 1 * MiB, 1 * MiB),
    ]
    snaps = [_snap(0, 1), _snap(0, 2), _snap(1, 1), _snap(1, 2), _snap(1, 3)]
    m, s = _tables(rows, snaps)
    att = attribute(m, s, 0.0, 10.0, groups={(1, 1): "master", (2, 1): "worker"})
    assert att is not None and att.compared == 2 and att.born == [(3, 1)]
    places = {p.kind: p for p in att.total.places}
    assert places["anon"].unshared == 4 * MiB  # the copy only
    assert places["anon"].grown == 3 * MiB and places["anon"].new_mappings == 3 * MiB
    assert places["anon"].released == 1 * MiB
    assert places["heap"].grown == 1 * MiB and places["heap"].unshared == 0
    assert att.total.sentence() == "100 % in anonymous mappings (CPython object arenas)"
    assert att.group("worker").unshared == 4 * MiB and att.group("master").unshared == 0


def test_choosing_the_snapshots_for_a_window():
    rs = [Round(0, "start", 0.0, 0.5, 3), Round(1, "baseline_end", 30.0, 31.0, 3),
          Round(2, "load_end", 90.0, 94.0, 3), Round(3, "observe_end", 150.2, 150.2, 3)]
    assert [r.reason for r in choose_rounds(rs, 90.5, 150.0)] == ["load_end", "observe_end"]
    assert [r.reason for r in choose_rounds(rs, 30.0, 90.0)] == ["baseline_end", "load_end"]
    assert [r.reason for r in choose_rounds(rs, 0.0, 150.0)] == ["start", "observe_end"]
    assert [r.reason for r in choose_rounds(rs, 10.0, 20.0)] == ["start", "baseline_end"]
    assert choose_rounds(rs[:1], 0.0, 10.0) is None
    failed = [Round(0, "start", 0.0, 0.0, 0), Round(1, "stop", 9.0, 9.0, 3)]
    assert choose_rounds(failed, 0.0, 10.0) is None


def test_place_labels():
    py = Runtime("cpython", "3.11")
    assert place_label("anon", None, py) == "anonymous mappings (CPython object arenas)"
    assert place_label("anon", None, Runtime("native")) == "anonymous mappings"
    assert place_label("data", "/usr/lib/libpython3.11.so.1.0", py, ".bss") == \
        "libpython3.11.so.1.0 .bss"
    assert place_label("data", "/usr/bin/prog", py) == "prog .data"
    assert place_label("heap", None) == "[heap]" and place_label("stack", None) == "stacks"
    assert place_label("shmem", "/dev/shm/x") == "shared memory"
