"""One forked worker: serve HTTP on its listening socket, collect garbage when idle.

Each worker accepts on its own socket (all bound to the same port with SO_REUSEPORT, see
``master.bind``), inherited from the master across the fork.

The loop is a ``selectors`` event loop so one worker holds many keep-alive connections
(Locust's users each keep one open); a blocking accept-serve-close worker would stall
every connection but one.

Housekeeping is what makes the demo drain memory: after ``idle_gc_after`` seconds without
traffic (plus ``index * idle_gc_stagger``, so the workers do it one after another and the
drain shows as a slope), the worker runs a full ``gc.collect()``. In the ``default``
variant that writes the GC header of every table object inherited from the master and the
kernel copies each page for this worker: RSS stays flat, PSS and system used memory grow.
In the ``frozen`` variant the table sits in the permanent generation and is not examined.

The timer is armed only by traffic (so a recording's baseline phase stays quiet), but by
traffic to *any* worker: the kernel may hand all of a few keep-alive connections to some
workers and none to others, and those must still do their housekeeping. The workers share
the time of the last request through one page mapped by the master before it forks
(``TrafficClock``). ``/health`` is not traffic, so probes neither arm nor postpone it.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import mmap
import os
import selectors
import signal
import socket
import struct
import time
from dataclasses import dataclass, field

from loadmem.demo.app import App, counts_as_traffic
from loadmem.demo.config import DemoConfig
from loadmem.demo.http import BadRequest, build_response, parse_request
from loadmem.demo.proctl import set_process_name, signal_me_when_parent_dies

log = logging.getLogger("loadmem.demo")

#: Longest select() wait: how often a worker checks that its master is still there.
_PARENT_POLL_SECONDS = 1.0
_RECV_BYTES = 65536
#: Output buffered for one connection before the worker stops reading from it.
_MAX_PENDING_OUT = 1 << 20


def _die_with_parent(master_pid: int) -> None:
    """Ask the kernel to SIGTERM us when the master dies; also catch a master already gone."""
    signal_me_when_parent_dies(signal.SIGTERM)
    if os.getppid() != master_pid:
        os._exit(0)


class TrafficClock:
    """The monotonic time of the last real request to any worker, in a shared page.

    Created by the master before it forks; every worker maps the same page. One aligned
    8-byte store per request: no lock needed for a timestamp that only moves forward
    (a torn or lost update only delays housekeeping by one request).
    """

    _FMT = struct.Struct("d")

    def __init__(self) -> None:
        self._page = mmap.mmap(-1, mmap.PAGESIZE)

    def touch(self, now: float) -> None:
        self._FMT.pack_into(self._page, 0, now)

    def last(self) -> float | None:
        value = self._FMT.unpack_from(self._page, 0)[0]
        return value if value > 0 else None


@dataclass
class _Conn:
    sock: socket.socket
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    closing: bool = False
    events: int = selectors.EVENT_READ  # what the selector waits for: change only on need


@dataclass
class WorkerState:
    """This worker's counters, served by ``/health``."""

    index: int
    requests: int = 0
    connections: int = 0
    gc_runs: int = 0
    gc_last_seconds: float = 0.0
    gc_last_collected: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "worker": self.index,
            "requests": self.requests,
            "connections": self.connections,
            "gc_runs": self.gc_runs,
            "gc_last_seconds": round(self.gc_last_seconds, 4),
            "gc_last_collected": self.gc_last_collected,
        }


class Worker:
    def __init__(
        self,
        index: int,
        listener: socket.socket,
        app: App,
        config: DemoConfig,
        clock: TrafficClock | None = None,
    ):
        self.state = WorkerState(index)
        self._clock = clock
        self._listener = listener
        self._app = app
        self._config = config
        self._sel = selectors.DefaultSelector()
        self._conns: dict[int, _Conn] = {}
        self._last_traffic: float | None = None  # None: nothing served yet, timer not armed
        self._last_gc: float | None = None  # time of the last housekeeping in this idle period
        app.stats = self.state.as_dict

    # -- housekeeping ------------------------------------------------------------------

    def _gc_due(self) -> float | None:
        shared = self._clock.last() if self._clock is not None else None
        if shared is not None and (self._last_traffic is None or shared > self._last_traffic):
            self._last_traffic = shared  # another worker served traffic after us
            if self._last_gc is not None and self._last_gc < shared:
                self._last_gc = None
        if self._last_traffic is None:
            return None
        if self._last_gc is None:
            cfg = self._config
            return self._last_traffic + cfg.idle_gc_after + self.state.index * cfg.idle_gc_stagger
        if self._config.idle_gc_repeat > 0:
            return self._last_gc + self._config.idle_gc_repeat
        return None

    def _housekeeping(self, now: float) -> None:
        started = time.perf_counter()
        found = gc.collect()
        elapsed = time.perf_counter() - started
        self.state.gc_runs += 1
        self.state.gc_last_seconds = elapsed
        self.state.gc_last_collected = found
        self._last_gc = now
        log.info(
            "worker %d (pid %d): idle housekeeping gc.collect() took %.3f s",
            self.state.index,
            os.getpid(),
            elapsed,
        )

    # -- connections -------------------------------------------------------------------

    def _accept(self) -> None:
        try:
            sock, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # the client gave up before we got to it
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Conn(sock)
        self._conns[sock.fileno()] = conn
        self._sel.register(sock, selectors.EVENT_READ, conn)
        self.state.connections += 1

    def _close(self, conn: _Conn) -> None:
        self._conns.pop(conn.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(conn.sock)
        conn.sock.close()

    def _read(self, conn: _Conn, now: float) -> None:
        try:
            data = conn.sock.recv(_RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:
            self._close(conn)
            return
        conn.inbuf += data
        self._process(conn, now)

    def _process(self, conn: _Conn, now: float) -> None:
        """Answer the complete requests in ``inbuf`` (pipelining) and send what we can.

        Answers are held back while ``_MAX_PENDING_OUT`` bytes wait to be sent; if the send
        then empties the buffer at once, no write event will come to resume, so go on here.
        """
        while True:
            held_back = self._answer(conn, now)
            self._flush(conn)
            if not held_back or conn.sock.fileno() not in self._conns:
                return
            if len(conn.outbuf) >= _MAX_PENDING_OUT:
                return  # the write event resumes once the client reads

    def _answer(self, conn: _Conn, now: float) -> bool:
        """Answer requests into ``outbuf``; True if some were held back (output full)."""
        while not conn.closing:
            if len(conn.outbuf) >= _MAX_PENDING_OUT:
                return True
            try:
                parsed = parse_request(conn.inbuf)
            except BadRequest as e:
                body = json.dumps({"error": str(e)}).encode()
                conn.outbuf += build_response(e.status, body, "application/json", False)
                conn.closing = True
                break
            if parsed is None:
                break
            request, consumed = parsed
            del conn.inbuf[:consumed]
            status, body, ctype = self._app.handle(request.method, request.target)
            conn.outbuf += build_response(
                status, body, ctype, request.keep_alive, head_only=request.method == "HEAD"
            )
            conn.closing = not request.keep_alive
            self.state.requests += 1
            if counts_as_traffic(request.target):
                self._last_traffic = now
                self._last_gc = None
                if self._clock is not None:
                    self._clock.touch(now)
        return False

    def _flush(self, conn: _Conn) -> None:
        if conn.outbuf:
            try:
                sent = conn.sock.send(conn.outbuf)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._close(conn)
                return
            del conn.outbuf[:sent]
        if not conn.outbuf and conn.closing:
            self._close(conn)
            return
        # A client that pipelines requests but does not read the answers is not read from
        # until it catches up: memory per connection stays bounded.
        wanted = selectors.EVENT_WRITE if conn.outbuf else 0
        if len(conn.outbuf) < _MAX_PENDING_OUT:
            wanted |= selectors.EVENT_READ
        if wanted != conn.events:
            self._sel.modify(conn.sock, wanted, conn)
            conn.events = wanted

    # -- the loop ----------------------------------------------------------------------

    def serve_forever(self, master_pid: int) -> None:
        self._sel.register(self._listener, selectors.EVENT_READ, None)
        while True:
            now = time.monotonic()
            due = self._gc_due()
            if due is not None and now >= due:
                self._housekeeping(now)
                continue
            timeout = _PARENT_POLL_SECONDS if due is None else min(_PARENT_POLL_SECONDS, due - now)
            events = self._sel.select(timeout)
            now = time.monotonic()
            for key, mask in events:
                if key.data is None:
                    self._accept()
                    continue
                conn: _Conn = key.data
                if mask & selectors.EVENT_READ:
                    self._read(conn, now)
                if mask & selectors.EVENT_WRITE and conn.sock.fileno() in self._conns:
                    self._flush(conn)
                    if conn.inbuf and conn.sock.fileno() in self._conns:
                        self._process(conn, now)  # requests held back while output was full
            if os.getppid() != master_pid:
                log.warning("worker %d: master %d is gone, exiting", self.state.index, master_pid)
                return


def run_worker(
    index: int,
    listener: socket.socket,
    app: App,
    config: DemoConfig,
    master_pid: int,
    ready_fd: int | None,
    clock: TrafficClock | None = None,
) -> None:
    """Body of a freshly forked worker. Never returns: the process exits with ``os._exit``.

    ``os._exit`` rather than ``sys.exit``: a forked child must not run the master's atexit
    handlers or flush buffers it inherited.
    """
    code = 1
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the master handles Ctrl-C for us all
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        _die_with_parent(master_pid)
        set_process_name(f"demo-worker-{index}")
        if config.variant == "frozen":
            gc.enable()  # the master disabled it before building and froze the table
        worker = Worker(index, listener, app, config, clock)
        if ready_fd is not None:
            os.write(ready_fd, b"r")
            os.close(ready_fd)
        worker.serve_forever(master_pid)
        code = 0
    except BaseException:
        log.exception("worker %d (pid %d) failed", index, os.getpid())
    finally:
        os._exit(code)
