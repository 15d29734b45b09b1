"""Helpers shared by the ``loadmem run`` tests: a tiny HTTP server, scenarios, the CLI.

Everything here talks to 127.0.0.1 only, and every load is bounded by the run's ``--load``
and the scenarios' ``wait_time``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

SERVER = r"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = b"<html><body>ok</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
srv.daemon_threads = True
print(srv.server_address[1], flush=True)
srv.serve_forever()
"""

SCENARIO = '''
from locust import FastHttpUser, constant, task


class Visitor(FastHttpUser):
    wait_time = constant({wait})

    @task(3)
    def index(self):
        self.client.get("/")

    @task(1)
    def health(self):
        self.client.get("/health")
'''

SHAPE_SCENARIO = '''
from locust import FastHttpUser, LoadTestShape, constant, task


class Visitor(FastHttpUser):
    wait_time = constant(0.05)

    @task
    def index(self):
        self.client.get("/")


class TwoSteps(LoadTestShape):
    """2 users for 1.5 s, then 4 users until 3 s, then the end (tick() returns None)."""

    def tick(self):
        t = self.get_run_time()
        if t < 1.5:
            return (2, 10)
        if t < 3.0:
            return (4, 10)
        return None
'''


def write_scenario(directory: Path, text: str | None = None, name: str = "scenario.py",
                   wait: float = 0.02) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text if text is not None else SCENARIO.format(wait=wait)))
    return path


@contextmanager
def http_server() -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A threaded stdlib HTTP server on 127.0.0.1 in its own process; yields (proc, port)."""
    proc = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield proc, port
    finally:
        proc.kill()
        proc.wait()


def free_port() -> int:
    """A port nothing listens on (bound, then closed: connections to it are refused)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loadmem_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "loadmem", "run", *args]


def run_loadmem(*args: str, timeout: float = 90.0, cwd: Path | None = None
                ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(loadmem_cmd(*args), capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def events_so_far(out: Path) -> list[dict]:
    """Events written so far (segments included), without opening the whole recording."""
    import pyarrow.parquet as pq

    rows: list[dict] = []
    for f in sorted((out / "events").glob("*.parquet")) if (out / "events").is_dir() else []:
        try:
            rows += pq.read_table(f).to_pylist()
        except Exception:  # a segment being renamed into place: read it next time
            continue
    return rows


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def phase_started(out: Path, phase: str) -> bool:
    return any(e["kind"] == "phase_start" and e["phase"] == phase for e in events_so_far(out))


def meta(out: Path) -> dict:
    return json.loads((out / "meta.json").read_text())
