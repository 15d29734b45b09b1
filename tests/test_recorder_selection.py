"""Selecting processes: --match on command lines (after exec too), never the recorder or
its ancestors; a watch request promotes a tree."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from _proc_support import TREE, ask, end, python

from loadmem.procfs.reader import ProcFS
from loadmem.recorder.selection import ProcessSelector, Selection

TOKEN = f"loadmem-sel-{os.getpid()}"


def _wait_watched(sel: ProcessSelector, pids: set[int], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sel.update()
        if pids <= set(sel.watched):
            return
        time.sleep(0.05)
    raise AssertionError(f"not watched: {pids - set(sel.watched)}")


def test_match_finds_processes_and_their_children():
    code = ("import os, sys, time\nif os.fork() == 0:\n    time.sleep(60)\n"
            "print(os.getpid(), flush=True)\ntime.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code, TOKEN], stdout=subprocess.PIPE, text=True,
                         start_new_session=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        p.stdout.readline()
        sel = ProcessSelector(Selection(patterns=[TOKEN + "$"]), exclude_pids={os.getpid()})
        _wait_watched(sel, {p.pid})
        w = sel.watched[p.pid]
        assert w.depth == 0 and w.role == "target"
        kids = [x for x in sel.watched.values() if x.ppid == p.pid]
        assert len(kids) == 1 and kids[0].depth == 1 and kids[0].group == (p.pid, w.start_time)
        assert other.pid not in sel.watched and os.getpid() not in sel.watched
        # a process that dies is reported gone
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        deadline = time.monotonic() + 10
        gone_pids: set[int] = set()
        while p.pid not in gone_pids and time.monotonic() < deadline:
            _, gone = sel.update()
            gone_pids |= {g.pid for g in gone}
            time.sleep(0.05)
        assert p.pid in gone_pids and p.pid not in sel.watched
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        for x in (p, other):
            x.kill()
            x.wait()


def test_match_sees_a_program_after_exec():
    """A shell that execs the matching program half a second later is found (the command
    line of a young process is re-checked)."""
    env = {**os.environ, "T": TOKEN}
    sh = subprocess.Popen(
        ["sh", "-c", f'sleep 0.5; exec {sys.executable} -c "import time; time.sleep(60)" "$T"'],
        env=env,
    )
    try:
        sel = ProcessSelector(Selection(patterns=[TOKEN]), exclude_pids={os.getpid()})
        sel.update()
        assert sh.pid not in sel.watched  # still the shell: its command line holds "$T"
        _wait_watched(sel, {sh.pid}, timeout=10)
    finally:
        sh.kill()
        sh.wait()


def test_recorder_never_matches_itself_or_its_parent_shell(tmp_path):
    out = tmp_path / "rec"
    target = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", TOKEN])
    try:
        # the shell's and the recorder's command lines both hold the pattern
        r = subprocess.run(
            ["sh", "-c", f"{sys.executable} -m loadmem record --match {TOKEN} --out {out} "
                         "--duration 0.3s --interval 0.1s; true"],
            capture_output=True, text=True, timeout=60,
        )
        assert r.returncode == 0, r.stderr
    finally:
        target.kill()
        target.wait()
    from loadmem.recording import open_recording

    pids = {row["pid"] for row in open_recording(out).table("processes").to_pylist()}
    assert pids == {target.pid}


def test_watch_request_adds_a_tree_with_its_role():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        sel = ProcessSelector(Selection(), exclude_pids={os.getpid()})
        sel.update()
        assert not sel.watched
        sel.add_root(p.pid, "loadgen")
        _wait_watched(sel, {p.pid})
        assert sel.watched[p.pid].role == "loadgen" and sel.watched[p.pid].depth == 0
    finally:
        p.kill()
        p.wait()


# --- /proc is listed only when a task was created or reaped --------------------------------
FIX = Path(__file__).parent / "fixtures" / "proc"

class CountingFS(ProcFS):
    """The real /proc (or a fixture root), counting the listings of its root."""

    def __init__(self, root: str = "/proc"):
        super().__init__(root)
        self.listings = 0

    def pids(self) -> list[int]:
        self.listings += 1
        return super().pids()


def test_proc_is_listed_only_when_a_task_was_created_or_reaped():
    tree = python(TREE)
    try:
        root = int(tree.stdout.readline())
        fs, probe = CountingFS(), ProcFS()
        sel = ProcessSelector(Selection(pids=[root]), fs, exclude_pids={os.getpid()})
        sel.check_initial()
        sel.update()
        assert fs.listings == 1 and set(sel.watched) == {root}

        # Other processes on this machine may come and go: an update is checked only when
        # the mark read before the previous update, between the two and after this one is
        # the same (then no task was created or reaped around either update).
        quiet = 0
        marks = [probe.tasks_mark()]
        for _ in range(300):
            before = fs.listings
            added, gone = sel.update()
            marks.append(probe.tasks_mark())
            assert not added and not gone  # the idle tree did not change
            if len(marks) >= 3 and marks[-3] == marks[-2] == marks[-1]:
                assert fs.listings == before, f"listed /proc with the mark unchanged {marks[-1]}"
                quiet += 1
                if quiet >= 5:
                    break
            time.sleep(0.01)
        assert quiet >= 5, "never quiet for two updates in a row"

        # the watched root forks: the next update lists and finds the grandchild
        grandchild = int(ask(tree, "fork"))
        before = fs.listings
        added, gone = sel.update()
        assert fs.listings == before + 1
        assert [w.pid for w in added] == [grandchild] and not gone
        assert sel.watched[grandchild].depth == 1

        # it exits and is reaped: an update (the next one, or one of a few) lists and
        # reports it gone
        assert ask(tree, "reap") == "reaped"
        deadline = time.monotonic() + 5
        gone_pids: list[int] = []
        while not gone_pids:
            assert time.monotonic() < deadline, "the reaped grandchild was never reported"
            before = fs.listings
            _, gone = sel.update()
            gone_pids = [w.pid for w in gone]
            time.sleep(0.01)
        assert gone_pids == [grandchild] and fs.listings == before + 1
        assert set(sel.watched) == {root}
    finally:
        end(tree)


def test_fixture_root_is_listed_on_every_update(tmp_path):
    d = tmp_path / "4242"
    d.mkdir()
    shutil.copy(FIX / "pid_stat", d / "stat")
    (tmp_path / "loadavg").write_text("0.00 0.01 0.05 1/123 4567\n")  # not this namespace's
    fs = CountingFS(str(tmp_path))
    assert fs.tasks_mark() is None
    sel = ProcessSelector(Selection(pids=[4242]), fs, clk_tck=100)
    sel.check_initial()
    for n in range(1, 4):
        sel.update()
        assert fs.listings == n
    assert set(sel.watched) == {4242}
    shutil.rmtree(d)  # gone from the fixture: seen on the very next update
    _, gone = sel.update()
    assert [w.pid for w in gone] == [4242] and fs.listings == 4
