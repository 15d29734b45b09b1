"""Real processes that make memory move, for the analysis validation corpus.

Run as ``python workloads.py MODE [options]``. Each prints one JSON line when ready
(``{"ready": true, "pid": ..., "children": [...]}``), then waits for a line ``go`` on stdin,
performs its action gradually, prints ``{"done": true, ...}`` and idles until stdin closes
(the test closes it, or kills the process group). Nothing here reads /proc: the recorder does.

Modes:
- ``cow MIB CHILDREN SECONDS``: fill MIB of anonymous memory, fork CHILDREN that, on go,
  overwrite every page of their inherited copy in slices over SECONDS (copy-on-write
  unsharing: their RSS stays flat, their PSS grows).
- ``grow MIB SECONDS``: on go, allocate and fill MIB in 1 MiB pieces over SECONDS (RSS growth).
- ``idle MIB CHILDREN``: a small pre-forked "service" holding MIB that does nothing.
- ``read PATH``: on go, read the file at PATH in 1 MiB chunks, keeping nothing (page cache).
- ``shm PATH MIB SECONDS``: on go, write MIB to PATH (on /dev/shm) over SECONDS (tmpfs).
- ``respawn MIB``: a parent with one child holding MIB of its own; on go, the child exits
  and a new one takes its place (a worker respawned: one process goes, another comes).
- ``forks MIB CHILDREN SECONDS``: fill MIB, and on go fork CHILDREN idle children over
  SECONDS (new workers of a preloaded master: sum RSS jumps, real memory barely moves).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

MiB = 1 << 20
PAGE = 4096


def say(**kw: object) -> None:
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


def wait_go() -> None:
    line = sys.stdin.readline()
    if line.strip() != "go":
        sys.exit(0)


def idle_until_eof() -> None:
    sys.stdin.read()


def fill(mib: int) -> bytearray:
    buf = bytearray(mib * MiB)
    buf[::PAGE] = b"\x01" * (len(buf) // PAGE)  # touch every page: resident and private
    return buf


def child_wait(r: int, w: int, action) -> None:
    """Child: wait for SIGUSR1, run the action, report on the pipe, then wait for the parent
    to go away (never exit first: our memory must stay in the figures)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    os.close(r)
    ppid = os.getppid()
    signal.sigwait({signal.SIGUSR1})
    action()
    os.write(w, b"x")
    while os.getppid() == ppid:
        time.sleep(0.2)
    os._exit(0)


def forked(n: int, action) -> tuple[list[int], int]:
    r, w = os.pipe()
    pids = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            child_wait(r, w, action)
        pids.append(pid)
    os.close(w)
    return pids, r


def cow(mib: int, children: int, seconds: float) -> None:
    buf = fill(mib)
    pattern = b"\x02" * MiB

    def overwrite() -> None:
        steps = mib
        for i in range(steps):
            buf[i * MiB:(i + 1) * MiB] = pattern
            time.sleep(seconds / steps)

    pids, r = forked(children, overwrite)
    say(ready=True, pid=os.getpid(), children=pids)
    wait_go()
    for p in pids:
        os.kill(p, signal.SIGUSR1)
    got = 0
    while got < children:
        got += len(os.read(r, 16))
    say(done=True, unshared_mib=mib * children)
    idle_until_eof()


def grow(mib: int, seconds: float) -> None:
    say(ready=True, pid=os.getpid(), children=[])
    wait_go()
    keep = []
    for _ in range(mib):
        keep.append(fill(1))
        time.sleep(seconds / mib)
    say(done=True, grown_mib=mib)
    idle_until_eof()


def idle(mib: int, children: int) -> None:
    buf = fill(mib)
    pids, _ = forked(children, lambda: None)
    say(ready=True, pid=os.getpid(), children=pids)
    wait_go()
    say(done=True)
    idle_until_eof()
    del buf


def read(path: str) -> None:
    say(ready=True, pid=os.getpid(), children=[])
    wait_go()
    total = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(MiB):
            total += len(chunk)
    say(done=True, read_mib=total // MiB)
    idle_until_eof()


def shm(path: str, mib: int, seconds: float) -> None:
    say(ready=True, pid=os.getpid(), children=[])
    wait_go()
    block = b"\x03" * MiB
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(block)
            f.flush()
            time.sleep(seconds / mib)
    say(done=True, written_mib=mib)
    idle_until_eof()


def respawn(mib: int) -> None:
    def child() -> None:
        own = fill(mib)
        ppid = os.getppid()
        while os.getppid() == ppid:
            time.sleep(0.1)
        del own
        os._exit(0)

    def spawn() -> int:
        pid = os.fork()
        if pid == 0:
            child()
        return pid

    first = spawn()
    say(ready=True, pid=os.getpid(), children=[first])
    wait_go()
    os.kill(first, signal.SIGKILL)
    os.waitpid(first, 0)
    second = spawn()
    time.sleep(1.0)
    say(done=True, old=first, new=second)
    idle_until_eof()


def forks(mib: int, children: int, seconds: float) -> None:
    buf = fill(mib)
    say(ready=True, pid=os.getpid(), children=[])
    wait_go()
    pids = []
    for _ in range(children):
        pid = os.fork()
        if pid == 0:
            ppid = os.getppid()
            while os.getppid() == ppid:
                time.sleep(0.2)
            os._exit(0)
        pids.append(pid)
        time.sleep(seconds / children)
    say(done=True, children=pids)
    idle_until_eof()
    del buf


def main(argv: list[str]) -> None:
    mode, args = argv[0], argv[1:]
    if mode == "cow":
        cow(int(args[0]), int(args[1]), float(args[2]))
    elif mode == "grow":
        grow(int(args[0]), float(args[1]))
    elif mode == "idle":
        idle(int(args[0]), int(args[1]))
    elif mode == "read":
        read(args[0])
    elif mode == "shm":
        shm(args[0], int(args[1]), float(args[2]))
    elif mode == "respawn":
        respawn(int(args[0]))
    elif mode == "forks":
        forks(int(args[0]), int(args[1]), float(args[2]))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1:])
