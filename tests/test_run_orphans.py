"""SIGKILL of `loadmem run` leaves no process behind, and the recording says what it was.

Each test starts a real `loadmem run`, waits for a phase, lists every descendant of the run
(by scanning /proc for parent links), SIGKILLs the run parent only, and waits (bounded) until
no descendant is alive. Descendants: the recorder, the Locust child (waiting in its init
event during the baseline, loading during the load), Locust's `--processes` workers, the
demo server's master and workers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from _run_support import http_server, loadmem_cmd, phase_started, wait_for, write_scenario

from loadmem.recording import open_recording

pytestmark = pytest.mark.slow


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kids.setdefault(int(fields[1]), []).append(int(entry))
    return kids


def descendants(pid: int) -> set[int]:
    kids, found, todo = _children(), set(), [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _kill_and_check(proc: subprocess.Popen, expect_at_least: int, timeout: float = 15.0
                    ) -> set[int]:
    tree = descendants(proc.pid)
    assert len(tree) >= expect_at_least, tree
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in tree):
        time.sleep(0.1)
    left = {p for p in tree if alive(p)}
    for p in left:  # do not leave them to the next test, whatever the outcome
        os.kill(p, signal.SIGKILL)
    assert not left, f"processes left behind by a SIGKILLed loadmem run: {left}"
    return tree


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(loadmem_cmd(*args), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _meta(out: Path) -> dict:
    return json.loads((out / "meta.json").read_text())


def _closed_meta(out: Path) -> dict:
    """meta.json once the recorder that outlived the killed run has closed the recording."""
    wait_for(lambda: _meta(out).get("status") not in (None, "recording"), 30,
             "the recorder to close the recording")
    return _meta(out)


def test_sigkill_with_the_demo_during_load(tmp_path: Path):
    scenario = write_scenario(tmp_path, wait=0.05)
    out = tmp_path / "rec"
    proc = _start(str(scenario), "--target", "demo", "--demo-workers", "2",
                  "--demo-table-mb", "8", "--baseline", "1s", "--load", "5m", "--observe", "1s",
                  "--users", "2", "--interval", "0.5s", "--out", str(out))
    try:
        wait_for(lambda: phase_started(out, "load"), 90, "the load phase")
        time.sleep(1.0)
        # recorder, Locust child, demo master + 2 workers
        _kill_and_check(proc, expect_at_least=5)
    finally:
        if proc.poll() is None:
            proc.kill()
    meta = _closed_meta(out)
    assert meta["status"] == "incomplete"
    assert meta["kind"] == "run" and meta["target"] == "demo"
    assert [p["phase"] for p in meta["phases"]] == ["baseline", "load"]
    notes = open_recording(out).notes
    assert any("was killed (status: incomplete)" in n and "after its load phase began" in n
               for n in notes), notes


def test_sigkill_with_a_local_server_and_processes(tmp_path: Path):
    scenario = write_scenario(tmp_path, wait=0.05)
    out = tmp_path / "rec"
    with http_server() as (_srv, port):
        proc = _start(str(scenario), "--target", f"http://127.0.0.1:{port}",
                      "--processes", "2", "--users", "2", "--baseline", "1s", "--load", "5m",
                      "--interval", "0.5s", "--out", str(out))
        try:
            wait_for(lambda: phase_started(out, "load"), 90, "the load phase")
            time.sleep(1.0)
            _kill_and_check(proc, expect_at_least=4)  # recorder, Locust master + 2 workers
        finally:
            if proc.poll() is None:
                proc.kill()
    meta = _closed_meta(out)
    assert meta["status"] == "incomplete" and meta["run_status"] == "running"
    assert meta["scenario"].endswith("scenario.py") and meta["processes"] == 2
    assert meta["target"] == f"http://127.0.0.1:{port}"
    load = next(p for p in meta["phases"] if p["phase"] == "load")
    assert load["t_end"] is None  # it was killed during the load


def test_sigkill_during_the_baseline(tmp_path: Path):
    """The Locust child waits in its init event during the baseline: it dies too."""
    scenario = write_scenario(tmp_path, wait=0.05)
    out = tmp_path / "rec"
    with http_server() as (_srv, port):
        proc = _start(str(scenario), "--target", f"http://127.0.0.1:{port}",
                      "--baseline", "5m", "--interval", "0.5s", "--out", str(out))
        try:
            wait_for(lambda: phase_started(out, "baseline"), 90, "the baseline phase")
            _kill_and_check(proc, expect_at_least=2)  # recorder, Locust child
        finally:
            if proc.poll() is None:
                proc.kill()
