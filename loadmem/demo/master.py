"""The master: bind, preload the table, fork the workers, respawn them, stop them all.

Order matters and mirrors a preloading Unicorn/gunicorn master:

1. bind the listening sockets first, so a busy port fails before seconds of building;
2. ``frozen`` variant only: ``gc.disable()`` so no collection frees objects while the table
   is built (freed slots are holes in shared pages that workers' allocations would fill);
3. build the table (its pages become copy-on-write shared at fork);
4. ``frozen``: ``gc.freeze()`` moves every tracked object to the permanent generation,
   which later collections never examine;
5. fork N workers, each accepting on its own inherited socket (see ``bind``);
6. print one ``ready`` JSON line on stdout once every worker reported in.

The master then waits for signals only: SIGCHLD (respawn the dead worker under the same
index), SIGTERM/SIGINT (stop every worker, SIGKILL stragglers, exit). Signals are blocked
and taken with ``sigtimedwait`` so none is lost between two checks; workers unblock them.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import select
import signal
import socket
import sys
import time
from typing import TextIO

from loadmem.demo.app import App
from loadmem.demo.config import DemoConfig
from loadmem.demo.proctl import set_process_name
from loadmem.demo.table import MIB, build_table
from loadmem.demo.worker import TrafficClock, run_worker
from loadmem.errors import LoadmemError

log = logging.getLogger("loadmem.demo")

_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}
#: How long every worker gets to report in before the master gives up.
READY_TIMEOUT = 30.0
#: How long workers get to exit after SIGTERM before SIGKILL.
STOP_GRACE = 5.0
#: A worker that dies younger than this is respawned after a pause (no fork storms).
_MIN_LIFETIME = 2.0
_RESPAWN_PAUSE = 1.0


def _listen(config: DemoConfig, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((config.host, port))
        sock.listen(1024)
    except OSError as e:
        sock.close()
        raise LoadmemError(
            f"cannot listen on {config.host}:{port}: {e.strerror}",
            "pick another --port, or 0 for a free one",
        ) from None
    sock.setblocking(False)
    return sock


def bind(config: DemoConfig) -> list[socket.socket]:
    """One listening socket per worker, all on the same port (SO_REUSEPORT).

    Why not one shared socket: every idle worker waits on it and the kernel hands new
    connections mostly to the same one, so with keep-alive a few workers get all the
    traffic and the others never run housekeeping. With one socket each, the kernel
    spreads connections evenly by hashing their addresses. The master keeps them all, so a
    respawned worker takes over its predecessor's socket and its queued connections.
    """
    first = _listen(config, config.port)
    socks = [first]
    try:
        port = first.getsockname()[1]
        socks.extend(_listen(config, port) for _ in range(config.workers - 1))
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


class Master:
    def __init__(self, config: DemoConfig, listeners: list[socket.socket], app: App):
        self.config = config
        self.pid = os.getpid()
        self._listeners = listeners
        self._app = app
        self.workers: dict[int, int] = {}  # pid -> index
        self._born: dict[int, float] = {}  # index -> monotonic spawn time
        self._respawn_at: dict[int, float] = {}  # index -> monotonic time to respawn
        # One shared page, mapped before any fork: the monotonic time of the last real
        # request to any worker, so a worker that the kernel gave no connection still
        # does its idle housekeeping (see ``worker.TrafficClock``).
        self._clock = TrafficClock()

    def spawn(self, index: int, ready_fd: int | None = None) -> int:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            for i, sock in enumerate(self._listeners):
                if i != index:
                    sock.close()
            run_worker(
                index, self._listeners[index], self._app, self.config, self.pid, ready_fd,
                self._clock,
            )
        self.workers[pid] = index
        self._born[index] = time.monotonic()
        return pid

    def start_workers(self) -> list[int]:
        """Fork every worker and wait until each one is in its loop."""
        read_fd, write_fd = os.pipe()
        try:
            for i in range(self.config.workers):
                self.spawn(i, write_fd)
        finally:
            os.close(write_fd)
        got = 0
        deadline = time.monotonic() + READY_TIMEOUT
        try:
            while got < self.config.workers:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LoadmemError(f"workers not ready after {READY_TIMEOUT:.0f} s")
                if not select.select([read_fd], [], [], min(left, 0.2))[0]:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                    if pid:
                        self.workers.pop(pid, None)
                        code = os.waitstatus_to_exitcode(status)
                        raise LoadmemError(
                            f"worker pid {pid} died during startup (exit {code}); see the log"
                        )
                    continue
                chunk = os.read(read_fd, 64)
                if not chunk:
                    raise LoadmemError("a worker died during startup (see the log above)")
                got += len(chunk)
        finally:
            os.close(read_fd)
        return sorted(self.workers, key=self.workers.__getitem__)

    def _reap(self, stopping: bool) -> None:
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            index = self.workers.pop(pid, None)
            if index is None:
                continue
            if stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            lived = time.monotonic() - self._born.get(index, 0.0)
            pause = _RESPAWN_PAUSE if lived < _MIN_LIFETIME else 0.0
            log.warning(
                "worker %d (pid %d) exited with %s; respawning%s",
                index,
                pid,
                f"signal {-code}" if code < 0 else f"code {code}",
                f" in {pause:.0f} s" if pause else "",
            )
            self._respawn_at[index] = time.monotonic() + pause

    def _respawn_due(self) -> None:
        now = time.monotonic()
        for index, when in list(self._respawn_at.items()):
            if now >= when:
                del self._respawn_at[index]
                pid = self.spawn(index)
                log.info("worker %d respawned as pid %d", index, pid)

    def run_until_signalled(self) -> int:
        while True:
            info = signal.sigtimedwait(_SIGNALS, 0.5)
            self._reap(stopping=False)
            if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
                log.info("master %d: %s, stopping", self.pid, signal.Signals(info.si_signo).name)
                self.stop()
                return 0
            self._respawn_due()

    def stop(self) -> None:
        """SIGTERM every worker, wait up to STOP_GRACE, SIGKILL the rest, reap them all."""
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while self.workers and time.monotonic() < deadline:
            info = signal.sigtimedwait(_SIGNALS, 0.1)
            if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
                break  # asked twice: no more patience
            self._reap(stopping=True)
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        while self.workers:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            self.workers.pop(pid, None)


def serve(config: DemoConfig, out: TextIO = sys.stdout) -> int:
    """Run the demo server until SIGTERM/SIGINT; return the exit code."""
    set_process_name("loadmem-demo")
    listeners = bind(config)
    port = listeners[0].getsockname()[1]
    if config.variant == "frozen":
        gc.disable()
    log.info("building a %.0f MiB table (%s variant)", config.table_mb, config.variant)
    table, info = build_table(int(config.table_mb * MIB))
    log.info(
        "table: %d entries, %.1f MiB RSS, built in %.2f s",
        info.entries,
        info.rss_bytes / MIB,
        info.build_seconds,
    )
    app = App(table, config.variant)
    if config.variant == "frozen":
        gc.freeze()
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    master = Master(config, listeners, app)
    try:
        pids = master.start_workers()
    except BaseException:
        master.stop()
        raise
    ready = {
        "event": "ready",
        "port": port,
        "pid": master.pid,
        "workers": pids,
        "variant": config.variant,
        "table_mb": config.table_mb,
        "host": config.host,
        "table_entries": info.entries,
        "table_rss_mb": round(info.rss_bytes / MIB, 1),
        "build_seconds": round(info.build_seconds, 3),
    }
    out.write(json.dumps(ready) + "\n")
    out.flush()
    log.info("ready on http://%s:%d with %d workers %s", config.host, port, len(pids), pids)
    return master.run_until_signalled()
