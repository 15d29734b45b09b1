"""Compaction off the sampling path: segment merges run in a forked child at lower priority.

Merging 120 segments of five tables costs tenths of a second of CPU, most of it Arrow and
Parquet work that holds the GIL between C++ calls. Run on the sampling thread, or on
another thread of the recorder, it held ticks back: at ``--interval 0.1s`` a compaction
once took 1.6 s without a sample. Its memory stayed too: the recorder's RSS stepped from
89.5 to 106 MB after the first compaction and never came back (Arrow's allocator keeps what
it once used).

So the recorder forks. The child inherits pyarrow already imported (a fork of the ~85 MB
recorder copies its page tables, about a millisecond; a fresh interpreter would pay 0.3 s
of imports per compaction), lowers its priority with ``nice`` so that the sampling parent
wins the CPU, runs the jobs and exits: its memory goes with it, and the parent's RSS stays
flat. The parent checks for the child's end with a non-blocking ``wait4`` at each flush and
takes the child's CPU from the kernel's accounting of it.

The child dies with the recorder (``PR_SET_PDEATHSIG``): a killed recorder leaves no
orphan. A child killed mid-merge leaves a hidden temporary file that readers ignore, and
every segment it was merging; the merge at the end (or the next compaction) takes them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass

from loadmem.recording.writer import Compaction

#: How much lower the compaction child's priority is than the recorder's (``nice``).
CHILD_NICE = 10
_PR_SET_PDEATHSIG = 1


@dataclass
class CompactionResult:
    pid: int
    ok: bool
    cpu_s: float  # user + system CPU of the child
    wall_s: float
    error: str | None  # what failed, when not ok
    tables: list[str]


def _die_with_parent(parent: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


class BackgroundCompactor:
    """At most one compaction child at a time. Not thread safe: the recording loop owns it.

    ``on_fork(pid)`` / ``on_reap(pid)`` let the recorder keep the child out of the watched
    processes (it carries the recorder's command line, so ``--match`` could pick it up)."""

    def __init__(self, on_fork: Callable[[int], None] | None = None,
                 on_reap: Callable[[int], None] | None = None, nice: int = CHILD_NICE):
        self.on_fork = on_fork
        self.on_reap = on_reap
        self.nice = nice
        self.pid: int | None = None
        self._pipe: int | None = None
        self._started = 0.0
        self._tables: list[str] = []
        self.cpu_s = 0.0  # every reaped child's CPU, cumulative
        self.runs = 0

    @property
    def busy(self) -> bool:
        return self.pid is not None

    def start(self, jobs: list[Compaction]) -> int | None:
        """Fork a child that runs ``jobs`` in order; None when busy or nothing to do."""
        if self.pid is not None or not jobs:
            return None
        import time

        r, w = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            status = 1
            try:
                os.close(r)
                _die_with_parent(parent)
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                with contextlib.suppress(OSError):
                    os.nice(self.nice)
                for job in jobs:
                    job.run()
                status = 0
            except BaseException as e:  # reported to the parent, not raised
                with contextlib.suppress(OSError):
                    os.write(w, f"{type(e).__name__}: {e}".encode("utf-8", "replace")[:1000])
            finally:
                os._exit(status)  # no atexit handlers, no stdio flush of the parent's buffers
        os.close(w)
        self.pid, self._pipe, self._started = pid, r, time.monotonic()
        self._tables = [j.table for j in jobs]
        if self.on_fork is not None:
            self.on_fork(pid)
        return pid

    def poll(self, block: bool = False) -> CompactionResult | None:
        """The result once the child ended (None while it runs, or when none was started)."""
        if self.pid is None:
            return None
        import time

        try:
            pid, status, usage = os.wait4(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:  # reaped by someone else: nothing to learn
            pid, status, usage = self.pid, 1 << 8, None
        if pid == 0:
            return None
        error = b""
        if self._pipe is not None:
            with contextlib.suppress(OSError):
                error = os.read(self._pipe, 4096)
            os.close(self._pipe)
        cpu = (usage.ru_utime + usage.ru_stime) if usage is not None else 0.0
        self.cpu_s += cpu
        self.runs += 1
        ok = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        if not ok and not error:
            error = (f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                     else f"exit status {os.waitstatus_to_exitcode(status)}").encode()
        result = CompactionResult(pid, ok, cpu, time.monotonic() - self._started,
                                  error.decode("utf-8", "replace") or None, self._tables)
        self.pid, self._pipe = None, None
        if self.on_reap is not None:
            self.on_reap(pid)
        return result

    def wait(self) -> CompactionResult | None:
        """Block until the running child (if any) ends."""
        return self.poll(block=True)

    def kill(self) -> CompactionResult | None:
        """Stop the running child now (an interrupted stop); its work is redone later."""
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        return self.wait()
