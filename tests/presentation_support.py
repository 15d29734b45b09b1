"""Real recordings for the plot and report tests, made once per test session.

A forked workload under the real recorder (``loadmem record``): a parent fills 32 MiB of
anonymous memory, forks 2 children, and the children then overwrite their inherited copy a
slice at a time: copy-on-write unsharing with flat RSS, the drain the figure must show.
(The demo run with phases and a requests table is ``conftest.demo_pair``, shared by every
module.)
Recordings live in a temporary directory removed at exit; each is made at most once even
when both test modules ask for it.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gates_recordings import wait_until_sampled

ROOT = Path(__file__).resolve().parent.parent
_TMP = Path(tempfile.mkdtemp(prefix="loadmem-presentation-"))
atexit.register(shutil.rmtree, _TMP, True)

# Parent: 32 MiB touched, 2 children forked, "ready" printed. On a line on stdin (sent once
# the recorder has sampled every process, PSS included, however long that took on a busy
# machine) each child waits 1.5 s, then rewrites its inherited pages in 8 slices over ~2 s
# (copy-on-write), says "done" (one write: the two never interleave) and idles.
WORKLOAD = r"""
import os, signal, sys, time
MiB = 1 << 20
buf = bytearray(os.urandom(1024)) * (32 * 1024)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
kids = []
for i in range(2):
    pid = os.fork()
    if pid == 0:
        signal.sigwait({signal.SIGUSR1})
        time.sleep(1.5 + 0.2 * i)
        for s in range(8):
            for off in range(s * 4 * MiB, (s + 1) * 4 * MiB, 4096):
                buf[off] = (buf[off] + 1) & 0xFF
            time.sleep(0.25)
        os.write(1, b"done\n")
        time.sleep(60)
        os._exit(0)
    kids.append(pid)
os.write(1, b"ready\n")
sys.stdin.readline()
for pid in kids:
    os.kill(pid, signal.SIGUSR1)
time.sleep(60)
"""


def _python() -> str:
    return sys.executable


def _start_workload() -> subprocess.Popen[str]:
    work = subprocess.Popen(
        [_python(), "-c", WORKLOAD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    assert work.stdout is not None
    line = work.stdout.readline()
    assert line.strip() == "ready", f"workload did not start: {line!r}"
    return work


def _go_when_sampled(work: subprocess.Popen[str], out: Path, rec: subprocess.Popen) -> None:
    """Start the children's lead-in once the recorder has sampled the parent and both
    children, PSS included (run it with a short ``--flush``)."""
    wait_until_sampled(out, rec, count=3)
    assert work.stdin is not None
    work.stdin.write("go\n")
    work.stdin.flush()


@functools.cache
def cow_recording() -> Path:
    """A recording of the copy-on-write workload at 0.2 s by the real recorder: a quiet
    lead-in from its first samples, the copy, a quiet second (~5 s in all)."""
    out = _TMP / "cow"
    work = _start_workload()
    try:
        rec = subprocess.Popen(
            [_python(), "-m", "loadmem", "record", "--pid", str(work.pid), "--interval",
             "0.2s", "--flush", "0.25s", "--duration", "60s", "--pss-budget", "50%",
             "--pss-max-age", "1s", "--out", str(out), "--label", "cow <test> & co"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        _go_when_sampled(work, out, rec)
        assert work.stdout is not None
        for _ in range(2):  # both children copied everything: a quiet second, then stop
            line = work.stdout.readline()
            assert line == "done\n", f"a child did not finish: {line!r}"
        time.sleep(1.0)
        rec.send_signal(signal.SIGTERM)
        _, err = rec.communicate(timeout=60)
        assert rec.returncode == 0, f"loadmem record failed: {err[-2000:]}"
    finally:
        os.killpg(work.pid, signal.SIGKILL)
        work.wait(timeout=10)
    return out


@functools.cache
def system_only_recording() -> Path:
    """``loadmem record`` with no selector: system-wide figures only, no processes."""
    out = _TMP / "system-only"
    rec = subprocess.run(
        [_python(), "-m", "loadmem", "record", "--interval", "0.2s", "--duration", "1.5s",
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert rec.returncode == 0, f"loadmem record failed: {rec.stderr[-2000:]}"
    return out


@functools.cache
def killed_recording() -> Path:
    """A recorder SIGKILLed mid-run: segments only, meta.json still says "recording"."""
    out = _TMP / "killed"
    work = _start_workload()
    try:
        rec = subprocess.Popen(
            [_python(), "-m", "loadmem", "record", "--pid", str(work.pid), "--interval",
             "0.2s", "--flush", "0.4s", "--duration", "30s", "--out", str(out)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        _go_when_sampled(work, out, rec)
        deadline = time.monotonic() + 30
        seg = out / "processes"
        while time.monotonic() < deadline and len(list(seg.glob("*.parquet"))) < 3:
            time.sleep(0.1)
        rec.kill()
        rec.wait(timeout=10)
    finally:
        os.killpg(work.pid, signal.SIGKILL)
        work.wait(timeout=10)
    return out
