"""Real recordings for the gates, compare and ls tests: forked children under `loadmem record`.

A parent fills ``size`` bytes of anonymous memory and forks two children that share it
copy-on-write. With ``overwrite``, each child then writes one byte per page of the whole
buffer, a slice at a time, after a quiet lead-in (``delay`` seconds from when the recorder
started): every page is copied, the group's summed
PSS grows by about 2 x size while every RSS stays flat (the drain the gates must catch).
Without ``overwrite`` the children only sleep.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

CHILD_SCRIPT = r"""
import os, signal, sys, time
size, overwrite, delay = int(sys.argv[1]), sys.argv[2] == "1", float(sys.argv[3])
buf = bytearray(b"\x01") * size            # written: real anonymous pages
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
kids = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        signal.sigwait({signal.SIGUSR1})  # the recorder is running: the lead-in starts now
        time.sleep(delay)
        if overwrite:
            steps = 8
            chunk = size // steps
            for s in range(steps):
                for i in range(s * chunk, (s + 1) * chunk, 4096):
                    buf[i] = 2
                time.sleep(0.08)
        time.sleep(120)
        os._exit(0)
    kids.append(pid)
print("ready", flush=True)
sys.stdin.readline()
for pid in kids:
    os.kill(pid, signal.SIGUSR1)
time.sleep(120)
"""


def record_children(
    out: Path,
    *,
    overwrite: bool,
    size: int = 32 << 20,
    duration: str = "4s",
    delay: float = 1.4,
    label: str | None = None,
) -> Path:
    """Record the forked-children group into ``out`` and return it (a finished recording)."""
    parent = subprocess.Popen(
        [sys.executable, "-c", CHILD_SCRIPT, str(size), "1" if overwrite else "0", str(delay)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        assert parent.stdout is not None and parent.stdin is not None
        assert parent.stdout.readline().strip() == "ready"
        cmd = [sys.executable, "-m", "loadmem", "record", "--pid", str(parent.pid),
               "--interval", "0.2s", "--duration", duration, "--pss-budget", "25%",
               "--pss-max-age", "1s", "--out", str(out)]
        if label:
            cmd += ["--label", label]
        rec = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # the children's lead-in starts once the recorder is recording (however long its
        # start-up took on a busy machine): the first ``delay`` seconds are quiet
        deadline = time.monotonic() + 30
        while not (out / "meta.json").exists() and rec.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        parent.stdin.write("go\n")
        parent.stdin.flush()
        _, err = rec.communicate(timeout=60)
        assert rec.returncode == 0, err
    finally:
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
