"""Helpers for the analysis corpus: real workloads recorded by the real ``loadmem record``.

A scenario starts the workloads (``workloads.py``), starts the recorder as a subprocess on the
watched pid, lets it record a short baseline, sends ``go`` to the actor, waits for it to
finish, lets the figures settle, stops the recorder with SIGTERM (a clean stop: it merges its
segments) and optionally writes baseline/observe phase events the way ``loadmem run`` does.
Everything is bounded by timeouts; no fixed sleeps decide an outcome.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from loadmem.recording.schema import EVENTS
from loadmem.recording.writer import TableWriter, finalize

HERE = Path(__file__).resolve().parent
WORKLOADS = HERE / "workloads.py"
PY = sys.executable
MiB = 1 << 20


@dataclass
class Workload:
    proc: subprocess.Popen
    pid: int
    children: list[int] = field(default_factory=list)
    done: dict = field(default_factory=dict)

    @classmethod
    def start(cls, *args: object, timeout: float = 30.0) -> Workload:
        proc = subprocess.Popen(
            [PY, str(WORKLOADS), *map(str, args)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
        )
        line = _readline(proc, timeout)
        info = json.loads(line)
        return cls(proc=proc, pid=info["pid"], children=info.get("children", []))

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def wait_done(self, timeout: float = 60.0) -> dict:
        self.done = json.loads(_readline(self.proc, timeout))
        return self.done

    def stop(self) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (subprocess.TimeoutExpired, BrokenPipeError, OSError):
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=5)


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    """One stdout line, or fail after ``timeout`` seconds (the workload died or hung)."""
    import selectors

    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise AssertionError(f"workload {proc.args} gave no output within {timeout}s")
    finally:
        sel.close()
    line = proc.stdout.readline()
    if not line:
        raise AssertionError(f"workload {proc.args} exited (rc={proc.poll()})")
    return line


def _wait_meta(out: Path, rec: subprocess.Popen, timeout: float = 30.0) -> float:
    deadline = time.monotonic() + timeout
    meta = out / "meta.json"
    while time.monotonic() < deadline:
        if rec.poll() is not None:
            err = rec.stderr.read() if rec.stderr else ""
            raise AssertionError(f"recorder exited early: {err}")
        if meta.exists():
            try:
                return float(json.loads(meta.read_text())["start_monotonic"])
            except (ValueError, KeyError):
                pass
        time.sleep(0.05)
    raise AssertionError("recorder never wrote meta.json")


def record_scenario(
    out: Path,
    watched: list[int],
    actor: Workload,
    *,
    baseline_s: float = 2.0,
    settle_s: float = 1.5,
    phases: bool = False,
    interval: str = "0.25s",
) -> Path:
    """Record ``watched`` while ``actor`` does its thing; return the recording directory."""
    cmd = [PY, "-m", "loadmem", "record", "--interval", interval, "--duration", "90s",
           "--pss-budget", "30%", "--pss-max-age", "1s", "--out", str(out)]
    for pid in watched:
        cmd += ["--pid", str(pid)]
    rec = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        start = _wait_meta(out, rec)
        while time.monotonic() - start < baseline_s:
            time.sleep(0.05)
        t_go = time.monotonic() - start
        actor.go()
        actor.wait_done(timeout=60)
        t_done = time.monotonic() - start
        while time.monotonic() - start < t_done + settle_s:
            time.sleep(0.05)
        t_stop = time.monotonic() - start
        rec.send_signal(signal.SIGTERM)
        _, err = rec.communicate(timeout=60)
        assert rec.returncode == 0, f"recorder failed ({rec.returncode}): {err}"
    finally:
        if rec.poll() is None:
            rec.kill()
            rec.wait()
    if phases:
        add_phases(out, start, [("baseline", 0.0, t_go), ("observe", t_go, t_stop)])
    return out


def add_phases(out: Path, start_monotonic: float, phases: list[tuple[str, float, float]]) -> None:
    """Write phase events as ``loadmem run`` does (its own events writer), then merge."""
    import datetime as dt

    w = TableWriter(out, "events", EVENTS, writer_id="test")
    epoch0 = time.time() - (time.monotonic() - start_monotonic)
    for name, t0, t1 in phases:
        for kind, t in (("phase_start", t0), ("phase_end", t1)):
            w.append({
                "ts": dt.datetime.fromtimestamp(epoch0 + t, tz=dt.UTC), "t": t, "kind": kind,
                "phase": name, "message": None, "data": None,
            })
    w.close()
    finalize(out)


def analyse_when_quiet(record, base: Path, expected_other: float = 0.0, attempts: int = 3,
                       tolerance: float = 128 * MiB, cache_tolerance: float | None = None):
    """Record (``record(out) -> Path``) and analyse, again (at most ``attempts`` times) while
    the rest of this shared machine was busy: other test suites start and stop browsers and
    servers that take or release hundreds of MB, which no analysis can tell apart from the
    effect under test. "Busy" means anonymous memory outside the watched processes moved by
    more than ``tolerance`` beyond what the test itself did (``expected_other``), or, with
    ``cache_tolerance``, the page cache moved by more than that (other suites read and delete
    files). The last attempt is returned whatever happened, so a real failure still fails."""
    from loadmem.analysis import analyze

    a = None
    for i in range(attempts):
        a = analyze(record(base / f"rec{i}"))
        other = a.figures.get("other_processes.delta_bytes") or 0.0
        cache = a.figures.get("page_cache.delta_bytes") or 0.0
        if abs(other - expected_other) < tolerance and (
                cache_tolerance is None or abs(cache) < cache_tolerance):
            return a
    return a
