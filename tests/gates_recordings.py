"""Real recordings for the gates, compare and ls tests: forked children under `loadmem record`.

A parent fills ``size`` bytes of anonymous memory and forks two children that share it
copy-on-write. With ``overwrite``, each child then writes one byte per page of the whole
buffer, a slice at a time: every page is copied, the group's summed PSS grows by about
2 x size while every RSS stays flat (the drain the gates must catch). Without ``overwrite``
the children only sleep as long.

The timeline does not depend on how busy the machine is: the children's quiet lead-in
(``delay`` seconds) starts only once the recorder **has sampled** every process of the group,
PSS included (``wait_until_sampled``: its flushed segments show a PSS figure for each), and
the recorder is stopped once both children said they are done, after a quiet tail. So the
first second of every recording is quiet and every drain is whole.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

CHILD_SCRIPT = r"""
import os, signal, sys, time
size, overwrite, delay = int(sys.argv[1]), sys.argv[2] == "1", float(sys.argv[3])
buf = bytearray(b"\x01") * size            # written: real anonymous pages
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
kids = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        signal.sigwait({signal.SIGUSR1})  # the recorder has sampled: the lead-in starts now
        time.sleep(delay)
        steps = 8
        chunk = size // steps
        for s in range(steps):
            if overwrite:
                for i in range(s * chunk, (s + 1) * chunk, 4096):
                    buf[i] = 2
            time.sleep(0.08)
        os.write(1, b"done\n")  # one write: two children never interleave their lines
        time.sleep(120)
        os._exit(0)
    kids.append(pid)
os.write(1, b"ready\n")
sys.stdin.readline()
for pid in kids:
    os.kill(pid, signal.SIGUSR1)
time.sleep(120)
"""

#: Quiet time recorded after the children are done (the end level of every window).
TAIL_S = 0.8


def sampled_pids(out: Path) -> set[int]:
    """The pids that have a PSS figure in the recording's flushed ``processes`` segments."""
    pids: set[int] = set()
    for f in sorted((out / "processes").glob("*.parquet")):
        try:
            table = pq.read_table(f, columns=["pid", "pss"])
        except (OSError, ValueError):  # merged away meanwhile, or not there yet
            continue
        for pid, pss in zip(table.column("pid").to_pylist(), table.column("pss").to_pylist(),
                            strict=True):
            if pss is not None:
                pids.add(pid)
    return pids


def wait_until_sampled(out: Path, rec: subprocess.Popen, count: int,
                       timeout: float = 60.0) -> None:
    """Return once the running recorder writing ``out`` (run it with a short ``--flush``) has
    flushed PSS figures of at least ``count`` processes: its samples, not just its start-up,
    precede what the workload does next."""
    deadline = time.monotonic() + timeout
    while len(sampled_pids(out)) < count:
        if rec.poll() is not None:
            raise AssertionError(f"the recorder exited ({rec.returncode}) before sampling")
        if time.monotonic() > deadline:
            raise AssertionError(f"the recorder had not sampled {count} processes in "
                                 f"{timeout:.0f} s: {sorted(sampled_pids(out))}")
        time.sleep(0.05)


def record_children(
    out: Path,
    *,
    overwrite: bool,
    size: int = 32 << 20,
    delay: float = 1.4,
    label: str | None = None,
) -> Path:
    """Record the forked-children group into ``out`` and return it (a finished recording)."""
    parent = subprocess.Popen(
        [sys.executable, "-c", CHILD_SCRIPT, str(size), "1" if overwrite else "0", str(delay)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
    )
    rec = None
    try:
        assert parent.stdout is not None and parent.stdin is not None
        assert parent.stdout.readline().strip() == "ready"
        cmd = [sys.executable, "-m", "loadmem", "record", "--pid", str(parent.pid),
               "--interval", "0.2s", "--flush", "0.25s", "--duration", "60s",
               "--pss-budget", "25%", "--pss-max-age", "1s", "--out", str(out)]
        if label:
            cmd += ["--label", label]
        rec = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until_sampled(out, rec, count=3)  # the parent and its two children
        parent.stdin.write("go\n")
        parent.stdin.flush()
        for _ in range(2):
            line = parent.stdout.readline()
            assert line == "done\n", f"a child did not finish: {line!r}"
        time.sleep(TAIL_S)
        rec.send_signal(signal.SIGTERM)
        _, err = rec.communicate(timeout=60)
        assert rec.returncode == 0, err
    finally:
        if rec is not None and rec.poll() is None:
            rec.kill()
            rec.wait(timeout=10)
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
    deadline = time.monotonic() + 10
    while not (out / "system.parquet").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return out


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "loadmem", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


def shared_recording(tmp_path_factory, name: str, *, overwrite: bool) -> Path:
    """A recording made once per test session and shared by the gates/compare/ls tests."""
    out = tmp_path_factory.getbasetemp() / "gates-recordings" / name
    if not (out / "meta.json").exists() or not (out / "system.parquet").exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        record_children(out, overwrite=overwrite, label=name)
    return out
