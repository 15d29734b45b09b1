"""Small scripted Python processes for the /proc tests: started in their own session,
driven line by line over stdin/stdout, killed with their whole group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

#: A parent that forks an idle child on "fork" and kills and reaps it on "reap".
TREE = r'''
import os, signal, sys, time
print(os.getpid(), flush=True)
kids = []
for line in sys.stdin:
    if line.strip() == "fork":
        pid = os.fork()
        if pid == 0:
            while True:
                time.sleep(1)
        kids.append(pid)
        print(pid, flush=True)
    elif line.strip() == "reap":
        pid = kids.pop()
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        print("reaped", flush=True)
'''


def python(code: str) -> subprocess.Popen:
    """Run ``code`` in its own session, with text pipes on stdin and stdout."""
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)


def ask(p: subprocess.Popen, line: str) -> str:
    """Send one line, return the one line it answers."""
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write(line + "\n")
    p.stdin.flush()
    return p.stdout.readline().strip()


def end(p: subprocess.Popen) -> None:
    """Kill the process and everything it forked."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
