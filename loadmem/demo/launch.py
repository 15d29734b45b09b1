"""Start the demo server as a child process and hand back a handle: what ``--target demo`` uses.

The server runs as ``python -m loadmem.demo`` in its own session, so a Ctrl-C meant for
``loadmem run`` reaches only loadmem, which then stops the server in order (the recording
must see the workers exit, not die with the terminal). Its stderr goes to a log file rather
than a pipe: nobody drains a pipe during a long observe phase, and a full pipe would block
the workers' logging.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from loadmem.demo.config import DemoConfig
from loadmem.errors import LoadmemError
from loadmem.load import lifeline

#: Lines of the server's log quoted in an error.
_TAIL_LINES = 6


def _tail(path: Path, lines: int = _TAIL_LINES) -> str:
    """The last lines of the server's log, joined into one line for an error message."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the master (it stops its workers), wait, SIGKILL its process group if needed."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
    # Workers die with their master (PR_SET_PDEATHSIG and a getppid() poll); this catches
    # any that did not, in the process group of the session we created, and nothing else.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.stdout is not None:
        proc.stdout.close()


class DemoServer:
    """A running demo server: ``port``, ``pid`` (the master), ``url``, ``variant``, ``stop()``."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        ready: dict[str, Any],
        log_path: Path,
        owns_log: bool,
    ):
        self._proc = proc
        self.ready = ready
        self.log_path = log_path
        self._owns_log = owns_log
        self.port: int = int(ready["port"])
        self.pid: int = int(ready["pid"])
        self.host: str = str(ready.get("host", "127.0.0.1"))
        self.variant: str = str(ready["variant"])
        #: Worker pids at start (a respawned worker gets a new pid; ask /proc for the tree).
        self.workers: list[int] = [int(p) for p in ready["workers"]]
        self.table_mb: float = float(ready["table_mb"])
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    def current_workers(self) -> list[int]:
        """The master's children now (respawned workers included); [] once it is gone."""
        try:
            with open(f"/proc/{self.pid}/task/{self.pid}/children") as f:
                return sorted(int(p) for p in f.read().split())
        except OSError:
            return []

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the master (it stops its workers), wait, SIGKILL the group if needed.

        Returns the master's exit code. Safe to call twice.
        """
        _terminate(self._proc, timeout)
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        if self._owns_log:
            with contextlib.suppress(OSError):
                self.log_path.unlink()
        return self._proc.returncode

    def __enter__(self) -> DemoServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"DemoServer(url={self.url!r}, pid={self.pid}, variant={self.variant!r})"


def _read_ready_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes | None:
    """The first stdout line, or None if the process exited / the deadline passed first."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if not sel.select(min(left, 0.5)):
                if proc.poll() is not None:
                    return None
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                return None
            buf += chunk
    return buf.split(b"\n", 1)[0]


def start_demo(
    workers: int = 4,
    table_mb: float = 100,
    variant: str = "default",
    idle_gc_after: float = 3.0,
    idle_gc_stagger: float = 5.0,
    port: int = 0,
    timeout: float = 60.0,
    *,
    idle_gc_repeat: float = 0.0,
    host: str = "127.0.0.1",
    log_path: str | os.PathLike[str] | None = None,
) -> DemoServer:
    """Start the demo server and return once it printed its ``ready`` line.

    Raises ``LoadmemError`` (with the tail of the server's log) if it exits or is not ready
    within ``timeout`` seconds. ``log_path``: where its stderr goes (a temporary file that
    ``stop()`` removes if not given).
    """
    # Validate here too, so bad arguments fail with the config's message, not a log tail.
    config = DemoConfig(
        host=host,
        port=port,
        workers=workers,
        table_mb=table_mb,
        variant=variant,
        idle_gc_after=idle_gc_after,
        idle_gc_stagger=idle_gc_stagger,
        idle_gc_repeat=idle_gc_repeat,
    )
    return launch(config, timeout=timeout, log_path=log_path)


def launch(
    config: DemoConfig,
    timeout: float = 60.0,
    log_path: str | os.PathLike[str] | None = None,
) -> DemoServer:
    """``start_demo`` for settings already validated as a ``DemoConfig``."""
    owns_log = log_path is None
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix="loadmem-demo-", suffix=".log")
        os.close(fd)
        log_path = name
    path = Path(log_path)
    cmd = [
        sys.executable,
        "-m",
        "loadmem.demo",
        f"--host={config.host}",
        f"--port={config.port}",
        f"--workers={config.workers}",
        f"--table-mb={config.table_mb}",
        f"--variant={config.variant}",
        f"--idle-gc-after={config.idle_gc_after}s",
        f"--idle-gc-stagger={config.idle_gc_stagger}s",
        f"--idle-gc-repeat={config.idle_gc_repeat}s",
    ]
    log_file: IO[bytes]
    with open(path, "ab") as log_file:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log_file,
            start_new_session=True,
            env=lifeline.child_env(),  # it dies with this process, even by SIGKILL
        )
    line = _read_ready_line(proc, timeout)
    ready: dict[str, Any] | None = None
    if line is not None:
        with contextlib.suppress(ValueError):
            ready = json.loads(line)
    if not isinstance(ready, dict) or ready.get("event") != "ready":
        # stdout closes a moment before the exit status is there: give it that moment.
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2.0)
        exited = proc.poll()
        _terminate(proc, timeout=5.0)
        tail = _tail(path)
        if owns_log:
            with contextlib.suppress(OSError):
                path.unlink()
        if exited is not None:
            what = f"the demo server exited (code {exited}) before it was ready"
        elif line is None:
            what = f"the demo server was not ready within {timeout:.0f} s"
        else:
            what = f"the demo server printed an unexpected first line: {line[:200]!r}"
        raise LoadmemError(
            what + (f"; its log ends with: {tail}" if tail else ""),
            "check the options against python -m loadmem.demo --help",
        )
    return DemoServer(proc, ready, path, owns_log)
