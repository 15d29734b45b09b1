"""The run orchestrator's handle on the Locust child: start it, preflight, go, read stats.

The child (``locust_child``) is Locust's own entry point with loadmem's plugin. Three pipes:

- the plugin's protocol lines (``locust_plugin``'s docstring lists them), child -> parent,
  on ``LOADMEM_STATS_FD``; the per-second ``stats`` lines become rows of the recording's
  ``requests`` table here;
- the control line, parent -> child, on ``LOADMEM_CONTROL_FD``: ``go`` (with values for
  options set nowhere) or ``abort``; the child waits for it inside Locust's ``init`` event;
- Locust's own output (its tables, logs, tracebacks), kept in memory until the recording
  directory exists, then appended to ``loadgen.log`` (or echoed, for a bare worker).

The child starts before anything records: its ``ready`` line (or its error) is the
preflight, so a bad option or locustfile costs one line and exit 2. A locustfile that takes
long to import shows progress every few seconds; one that hangs is stopped after
``READY_TIMEOUT_S`` with the file and line it hung at (``faulthandler`` on SIGUSR1).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from loadmem.errors import LoadmemError
from loadmem.load.locust_argv import locustfiles_in
from loadmem.load.preflight import child_cmd, child_env
from loadmem.recording.schema import REQUESTS
from loadmem.recording.writer import TableWriter

#: Locust import + locustfiles, on a busy 2-core CI machine; LOADMEM_READY_TIMEOUT (seconds)
#: changes it (a locustfile that legitimately loads for minutes; tests).
READY_TIMEOUT_S = float(os.environ.get("LOADMEM_READY_TIMEOUT") or 90.0)
PROGRESS_EVERY_S = 5.0
_STDLIB = os.path.dirname(os.__file__) + os.sep


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


class LocustProcess:
    """The Locust child of the run; see the module docstring."""

    def __init__(self, argv: list[str], stats_interval: float = 1.0):
        self.argv = argv
        self.stats_interval = stats_interval
        self.out: Path | None = None  # the recording, once it exists (set by ``record_to``)
        self.start_mono = 0.0
        self.ready = threading.Event()  # Locust's init event fired (or the child ended)
        self.started = threading.Event()  # test_start: the load began (or the child ended)
        self.finished = threading.Event()  # the protocol pipe closed (the child is done)
        self.ready_msg: dict[str, Any] = {}
        self.error_msg: dict[str, Any] = {}
        self.started_mono: float | None = None
        self.stopped_msg: dict[str, Any] = {}
        self.exit_msg: dict[str, Any] = {}
        self.totals: list[dict[str, Any]] = []
        self.last_total: dict[str, Any] = {}
        self.requests = 0
        self.failures = 0
        self.terminated = False  # this side asked the child to stop (SIGTERM)
        self.proc: subprocess.Popen[bytes] | None = None
        self._readers: list[threading.Thread] = []
        self._fd: int | None = None
        self._control: int | None = None
        self._log_lock = threading.Lock()
        self._log_buffer: list[bytes] = []
        self._log: IO[bytes] | None = None
        self._echo: IO[bytes] | None = None
        self._writer_ready = threading.Event()

    @property
    def log_path(self) -> Path | None:
        return None if self.out is None else self.out / "loadgen.log"

    # -- start and preflight -----------------------------------------------------------
    def start(self) -> None:
        read_fd, write_fd = os.pipe()
        control_read, control_write = os.pipe()
        env = child_env(self.argv, "run", write_fd,
                        {"LOADMEM_STATS_INTERVAL": f"{self.stats_interval:g}",
                         "LOADMEM_CONTROL_FD": str(control_read), "PYTHONUNBUFFERED": "1"})
        try:
            self.proc = subprocess.Popen(child_cmd(), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         pass_fds=(write_fd, control_read), env=env,
                                         start_new_session=True)
        except BaseException:
            os.close(read_fd)
            os.close(control_write)
            raise
        finally:
            os.close(write_fd)
            os.close(control_read)
        self._fd, self._control = read_fd, control_write
        for target, name in ((self._read, "locust-stats"), (self._pump_log, "locust-log")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._readers.append(thread)

    def wait_ready(self, timeout: float | None = None,
                   progress: Callable[[str], None] | None = None,
                   interrupted: Callable[[], bool] | None = None) -> dict[str, Any]:
        """Wait for Locust's ``ready`` line; raise ``LoadmemError`` (child killed) when Locust
        refused the input, the locustfiles did not load, or they hang."""
        timeout = READY_TIMEOUT_S if timeout is None else timeout
        started = time.monotonic()
        next_note = started + PROGRESS_EVERY_S
        while not self.ready.wait(0.1):
            now = time.monotonic()
            if interrupted is not None and interrupted():
                self.kill()
                raise KeyboardInterrupt
            if now - started > timeout:
                site = self._hang_site()
                self.kill()
                raise LoadmemError(
                    f"loading the locustfile took more than {timeout:.0f}s"
                    + (f"; it was at {site}" if site else ""),
                    "does it do slow work at import time? move it to a test_start listener",
                )
            if progress is not None and now >= next_note:
                next_note += PROGRESS_EVERY_S
                progress(f"still loading the locustfile ({now - started:.0f}s; "
                         f"stops after {timeout:.0f}s)")
        if self.ready_msg:
            return self.ready_msg
        self.close()
        if self.error_msg:
            message = str(self.error_msg.get("message"))
            if message.startswith("No User class found"):
                message = f"no User class in {self._files()}"
            raise LoadmemError(message, "fix it and run again")
        raise LoadmemError(
            f"Locust exited (code {self.exit_code}) before it started: "
            f"{self.output_tail() or 'no output'}",
            "try `locust --headless` with the same options to see Locust's own message",
        )

    def _files(self) -> str:
        return ", ".join(locustfiles_in(self.argv)) or "the locustfile"

    def _hang_site(self) -> str | None:
        """``file, line N`` of the innermost frame outside Locust, from a stack dump."""
        if not self.running():
            return None
        assert self.proc is not None
        for sig in (signal.SIGUSR1, signal.SIGUSR2):  # threads, then greenlets
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            time.sleep(0.3)
        for m in re.finditer(r'File "([^"]+)", line (\d+)', self.output_text()):
            # innermost first (faulthandler, then the greenlets)
            path = m.group(1)
            if not (path.startswith(("<", _STDLIB)) or "site-packages" in path
                    or "/loadmem/" in path):
                return f"{path}, line {m.group(2)}"  # faulthandler: innermost first
        return None

    def go(self, overrides: dict[str, Any] | None = None) -> None:
        """Let Locust go on (its other init listeners, then the test)."""
        self._send({"go": overrides or {}})

    def abort(self) -> None:
        """The preflight failed (or Ctrl-C): the child exits at once, no listener runs."""
        self._send({"abort": True})
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        self.close()

    def _send(self, obj: dict[str, Any]) -> None:
        if self._control is None:
            return
        with contextlib.suppress(OSError):
            os.write(self._control, (json.dumps(obj) + "\n").encode())
        with contextlib.suppress(OSError):
            os.close(self._control)
        self._control = None

    # -- Locust's own output ----------------------------------------------------------
    def record_to(self, out: Path, start_mono: float) -> None:
        """The recording exists: Locust's output goes to ``loadgen.log``, stats to
        ``requests``, with ``t`` on the recording's clock."""
        self.out, self.start_mono = out, start_mono
        with self._log_lock:
            self._log = open(out / "loadgen.log", "ab")  # noqa: SIM115  (closed in close())
            for chunk in self._log_buffer:
                self._log.write(chunk)
            self._log_buffer.clear()
            self._log.flush()
        self._writer_ready.set()

    def echo_to(self, stream: IO[bytes]) -> None:
        """No recording (a bare worker): Locust's output goes to ``stream``."""
        with self._log_lock:
            self._echo = stream
            for chunk in self._log_buffer:
                stream.write(chunk)
            stream.flush()
        self._writer_ready.set()

    def _pump_log(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        stdout = self.proc.stdout
        for chunk in iter(lambda: stdout.read1(65536), b""):  # type: ignore[attr-defined]
            with self._log_lock:
                target = self._log or self._echo
                if target is not None:
                    target.write(chunk)
                    target.flush()
                else:
                    self._log_buffer.append(chunk)
                    if sum(map(len, self._log_buffer)) > (4 << 20):  # keep the tail
                        self._log_buffer = self._log_buffer[len(self._log_buffer) // 2:]

    def output_text(self) -> str:
        with self._log_lock:
            if self._log_buffer:
                return b"".join(self._log_buffer).decode(errors="replace")
        path = self.log_path
        if path is not None and path.exists():
            return path.read_text(errors="replace")
        return ""

    def output_tail(self, lines: int = 3) -> str:
        text = [ln for ln in self.output_text().strip().splitlines() if ln.strip()]
        return " | ".join(text[-lines:])

    log_tail = output_tail

    # -- protocol ---------------------------------------------------------------------
    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _read(self) -> None:
        assert self._fd is not None
        writer: TableWriter | None = None
        try:
            with os.fdopen(self._fd, "rb") as stream:
                for raw in stream:
                    try:
                        msg = json.loads(raw)
                    except ValueError:
                        continue
                    if not isinstance(msg, dict):
                        continue
                    if msg.get("type") == "stats" and writer is None and self.out is not None:
                        # This thread owns the requests writer (TableWriter: not thread safe).
                        writer = TableWriter(self.out, "requests", REQUESTS, writer_id="run",
                                             flush_s=5.0)
                    self._handle(msg, writer)
        finally:
            if writer is not None:
                writer.close()
            self.finished.set()
            self.ready.set()  # wake a waiter if the child died before ready
            self.started.set()

    def _handle(self, msg: dict[str, Any], writer: TableWriter | None) -> None:
        kind = msg.get("type")
        if kind == "ready":
            self.ready_msg = msg
            self.ready.set()
        elif kind == "error":
            self.error_msg = msg
        elif kind == "started":
            self.started_mono = float(msg["mono"])
            self.started.set()
        elif kind == "stats":
            self._stats(msg, writer)
            if writer is not None:
                writer.maybe_flush()
        elif kind == "stopped":
            self.stopped_msg = msg
        elif kind == "totals":
            self.totals = list(msg.get("rows") or [])
        elif kind == "exit":
            self.exit_msg = msg

    def _stats(self, msg: dict[str, Any], writer: TableWriter | None) -> None:
        t = float(msg["mono"]) - self.start_mono
        ts = _utc(float(msg["ts"]))
        for row in msg.get("rows") or []:
            if writer is not None:
                writer.append({
                    "ts": ts, "t": t, "name": row["name"], "method": row.get("method", ""),
                    "interval_s": msg.get("interval_s"), "requests": row["requests"],
                    "failures": row["failures"], "p50_ms": row.get("p50_ms"),
                    "p95_ms": row.get("p95_ms"), "p99_ms": row.get("p99_ms"),
                    "avg_ms": row.get("avg_ms"), "max_ms": row.get("max_ms"),
                    "users": msg.get("users"),
                })
            if row["name"] == "Aggregated":
                self.requests += int(row["requests"])
                self.failures += int(row["failures"])
                self.last_total = {**row, "interval_s": msg.get("interval_s"),
                                   "users": msg.get("users")}

    # -- lifetime ---------------------------------------------------------------------
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def done(self) -> bool:
        """The child exited and every protocol line was read."""
        return not self.running() and self.finished.is_set()

    def terminate(self) -> None:
        """SIGTERM: Locust's own shutdown (quitting listeners, final stats, exit code)."""
        if self.running():
            assert self.proc is not None
            self.terminated = True
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the child and its process group (its --processes workers too)."""
        if self.proc is not None and self.proc.poll() is None:  # not reaped: pgid is ours
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: nothing else

    @property
    def exit_code(self) -> int | None:
        return self.proc.returncode if self.proc is not None else None

    def close(self) -> None:
        if self._control is not None:
            with contextlib.suppress(OSError):
                os.close(self._control)
            self._control = None
        if self.proc is not None:
            if self.running():
                self.kill()
            self.proc.wait()
        for thread in self._readers:
            thread.join(timeout=10)
        with self._log_lock:
            if self._log is not None:
                self._log.close()
                self._log = None

    def wait_started(self, timeout: float, interrupted: Callable[[], bool]) -> bool:
        """Wait for ``test_start`` (or the child's end); False on timeout or ``interrupted()``."""
        deadline = time.monotonic() + timeout
        while not self.started.wait(0.2):
            if interrupted() or time.monotonic() > deadline:
                return False
        return self.started_mono is not None
