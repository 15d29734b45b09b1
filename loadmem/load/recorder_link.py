"""The run orchestrator's handle on the recorder: a ``loadmem record`` child process.

The recorder runs in its own process and session (never inside Locust's, whose gevent
monkey-patching turns a sampler thread into a green thread that stalls under load) and is
driven over its hidden control channel (``docs/recorder.md``):

- ``--control-stdin``: the orchestrator writes JSON lines, ``{"watch": {"pid": N, "role":
  "loadgen"}}`` to add the Locust child's tree, ``{"snapshot": "load_end"}`` for a
  per-mapping snapshot at the end of a phase, ``{"stop": true}`` to stop;
- ``--status-stdout``: one JSON line per tick, read here for the live status line and the
  before/after memory figures of the summary;
- ``--no-finalize``: segments stay, the orchestrator adds its own tables and merges.

``NoRecorder`` stands in for ``--no-record``: it writes the ``meta.json`` of a run-only
recording (events and requests with wall-clock ``ts``) so it can be attached to a recording
made on another machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from loadmem.errors import LoadmemError
from loadmem.recording.writer import META_FILE, write_meta

Status = dict[str, Any]


class StatusLog:
    """Status lines from the recorder, kept in order (thread-safe: one writer, many readers)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Status] = []

    def add(self, item: Status) -> None:
        with self._lock:
            self._items.append(item)

    @property
    def first(self) -> Status | None:
        with self._lock:
            return self._items[0] if self._items else None

    @property
    def latest(self) -> Status | None:
        with self._lock:
            return self._items[-1] if self._items else None

    def last_before(self, t: float) -> Status | None:
        with self._lock:
            found = None
            for s in self._items:
                if float(s.get("t", 0.0)) <= t:
                    found = s
            return found


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


class RecorderProcess:
    """A ``loadmem record`` child writing to ``out``; see the module docstring."""

    def __init__(
        self,
        out: Path,
        *,
        ports: Sequence[int] = (),
        pids: Sequence[int] = (),
        matches: Sequence[str] = (),
        interval: float | None = None,
        pss_budget: float | None = None,
        pss_max_age: float | None = None,
        label: str | None = None,
        mappings: bool = True,
        mappings_every: float | None = None,
    ):
        self.out = out
        self.status = StatusLog()
        self.log_path = out / "recorder.log"
        cmd = [sys.executable, "-m", "loadmem", "record", "--out", str(out),
               "--control-stdin", "--status-stdout", "--no-finalize"]
        for p in ports:
            cmd += ["--port", str(p)]
        for pid in pids:
            cmd += ["--pid", str(pid)]
        for m in matches:
            cmd += ["--match", m]
        if interval is not None:
            cmd += ["--interval", f"{interval}s"]
        if pss_budget is not None:
            cmd += ["--pss-budget", f"{pss_budget * 100:g}%"]
        if pss_max_age is not None:
            cmd += ["--pss-max-age", f"{pss_max_age}s"]
        if label:
            cmd += ["--label", label]
        if not mappings:
            cmd += ["--no-mappings"]
        elif mappings_every is not None:
            cmd += ["--mappings-every", f"{mappings_every}s"]
        self.cmd = cmd
        self._log: IO[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._stdin_lock = threading.Lock()

    def start(self, timeout: float = 30.0) -> dict[str, Any]:
        """Start the recorder and wait for its ``meta.json`` (which holds ``start_monotonic``)."""
        self._log = open(self.log_path, "ab")  # noqa: SIM115  (closed in stop())
        self.proc = subprocess.Popen(
            self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            start_new_session=True,  # terminal Ctrl-C reaches only the loadmem parent
        )
        self._reader = threading.Thread(target=self._read_status, name="recorder-status",
                                        daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        meta_path = self.out / META_FILE
        while time.monotonic() < deadline:
            if meta_path.exists():
                with contextlib.suppress(ValueError, OSError):
                    meta = json.loads(meta_path.read_text())
                    if "start_monotonic" in meta:
                        return meta
            if self.proc.poll() is not None:
                raise LoadmemError(
                    f"the recorder exited (code {self.proc.returncode}) before it started: "
                    f"{_tail(self.log_path) or 'no message'}",
                    f"see {self.log_path}",
                )
            time.sleep(0.05)
        self.kill()
        raise LoadmemError(f"the recorder did not start within {timeout:.0f}s",
                           f"see {self.log_path}")

    def _read_status(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                item = json.loads(raw)
            except ValueError:
                continue
            if isinstance(item, dict):
                self.status.add(item)

    def _send(self, obj: dict[str, Any]) -> bool:
        if self.proc is None or self.proc.stdin is None or self.proc.poll() is not None:
            return False
        with self._stdin_lock:
            try:
                self.proc.stdin.write((json.dumps(obj) + "\n").encode())
                self.proc.stdin.flush()
                return True
            except (BrokenPipeError, ValueError, OSError):
                return False

    def watch(self, pid: int, role: str = "loadgen") -> bool:
        """Add ``pid`` and its descendants to the watched processes, with ``role``."""
        return self._send({"watch": {"pid": pid, "role": role}})

    def snapshot(self, reason: str) -> bool:
        """Ask for a per-mapping snapshot (``baseline_end``, ``load_end``, ``observe_end``)."""
        return self._send({"snapshot": reason})

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> int | None:
        """Ask the recorder to stop (control line, then SIGTERM, then SIGKILL)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self._send({"stop": True})
            try:
                self.proc.wait(timeout=timeout / 2)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=timeout / 2)
                except subprocess.TimeoutExpired:
                    self.kill()
        self._close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait()
        self._close()

    def _close(self) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                self.proc.stdin.close()
        if self._reader is not None:
            self._reader.join(timeout=2)
        if self._log is not None:
            self._log.close()
            self._log = None


class NoRecorder:
    """``--no-record``: no memory sampling here; meta.json for a run-only recording."""

    def __init__(self, out: Path, label: str | None = None):
        self.out = out
        self.label = label
        self.status = StatusLog()
        self.log_path = out / "recorder.log"

    def start(self, timeout: float = 0.0) -> dict[str, Any]:
        from loadmem import __version__
        from loadmem.recording.schema import SCHEMA_VERSION

        meta = {
            "kind": "run",
            "recorded": False,
            "host": socket.gethostname(),
            "start_monotonic": time.monotonic(),
            "start_epoch": time.time(),
            "status": "recording",
            "label": self.label,
            "loadmem_version": __version__,
            "schema_version": SCHEMA_VERSION,
            "pid": os.getpid(),
        }
        write_meta(self.out, meta)
        return meta

    def watch(self, pid: int, role: str = "loadgen") -> bool:
        return False

    def snapshot(self, reason: str) -> bool:
        return False

    @property
    def alive(self) -> bool:
        return True

    def stop(self, timeout: float = 0.0) -> int | None:
        return 0

    def kill(self) -> None:
        pass
