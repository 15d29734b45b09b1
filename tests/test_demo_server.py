"""The demo server for real: HTTP on 127.0.0.1, table size, respawn, shutdown, errors."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadmem.demo.launch import DemoServer, start_demo
from loadmem.errors import LoadmemError

TABLE_MB = 8


def _get(server: DemoServer, path: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(server.url + path, timeout=5) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Content-Type", "")


def _children(pid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return {int(p) for p in f.read().split()}


def _alive(pid: int) -> bool:
    """True if the pid exists and is not a zombie (a zombie holds no memory any more)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _wait_for(predicate, timeout: float = 15.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@pytest.fixture(scope="module")
def server() -> Iterator[DemoServer]:
    with start_demo(workers=2, table_mb=TABLE_MB, idle_gc_after=0.5, idle_gc_stagger=0.2) as s:
        yield s


def test_ready_line_describes_the_server(server: DemoServer) -> None:
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert server.variant == "default"
    assert len(server.workers) == 2
    assert set(server.workers) == _children(server.pid)
    assert server.ready["table_entries"] > 0
    # Named, so top and recordings tell them apart (the command line stays python's).
    assert Path(f"/proc/{server.pid}/comm").read_text().strip() == "loadmem-demo"
    names = sorted(Path(f"/proc/{p}/comm").read_text().strip() for p in server.workers)
    assert names == ["demo-worker-0", "demo-worker-1"]


def test_table_rss_is_close_to_the_asked_size(server: DemoServer) -> None:
    # Measured by the master itself; check it against the kernel's view of the master.
    assert TABLE_MB <= server.ready["table_rss_mb"] <= TABLE_MB * 1.2
    with open(f"/proc/{server.pid}/status") as f:
        rss_anon_mb = next(int(x.split()[1]) for x in f if x.startswith("RssAnon:")) / 1024
    assert rss_anon_mb >= TABLE_MB


def test_endpoints(server: DemoServer) -> None:
    status, body, ctype = _get(server, "/")
    assert status == 200 and ctype.startswith("text/html")
    assert b'href="/api/items"' in body
    status, body, ctype = _get(server, "/api/items")
    listing = json.loads(body)
    assert status == 200 and ctype == "application/json"
    assert listing["count"] == server.ready["table_entries"]
    assert listing["items"][3] == {"id": 3, "price": 4, "stock": 3, "category": 3, "rating": 4}
    status, body, _ = _get(server, "/item/12345")
    assert status == 200 and json.loads(body)["id"] == 12345
    status, body, _ = _get(server, "/health")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok"
    assert health["pid"] in _children(server.pid)
    assert _get(server, f"/item/{server.ready['table_entries']}")[0] == 404
    assert _get(server, "/item/abc")[0] == 404
    assert _get(server, "/nope")[0] == 404


def test_keep_alive_serves_many_requests_on_one_connection(server: DemoServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        pids = set()
        for _ in range(50):
            conn.request("GET", "/health")
            resp = conn.getresponse()
            pids.add(json.loads(resp.read())["pid"])
            assert resp.status == 200
        assert len(pids) == 1  # the same connection, so the same worker, every time
        conn.request("HEAD", "/api/items")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b""
        assert int(resp.headers["Content-Length"]) > 0
    finally:
        conn.close()


def test_pipelined_requests_and_bad_requests_on_a_raw_socket(server: DemoServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 2
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"NONSENSE\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400 ")


def test_a_pipelining_client_that_reads_late_gets_every_answer(server: DemoServer) -> None:
    # ~8 MiB of answers: more than the worker buffers for one connection, so it has to
    # stop reading, wait for this client to catch up, and then answer the rest.
    count = 6000
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:

        def send_all() -> None:
            sock.sendall(b"GET /api/items HTTP/1.1\r\n\r\n" * (count - 1))
            sock.sendall(b"GET /api/items HTTP/1.1\r\nConnection: close\r\n\r\n")

        sender = threading.Thread(target=send_all, daemon=True)
        sender.start()
        time.sleep(0.5)  # read late: let the answers pile up first
        received = bytearray()
        while chunk := sock.recv(1 << 20):
            received += chunk
        sender.join(timeout=20)
    assert len(received) > 2 << 20
    assert received.count(b"HTTP/1.1 200 OK\r\n") == count


def test_listens_on_loopback_only() -> None:
    with pytest.raises(LoadmemError, match="loopback"):
        start_demo(workers=1, table_mb=0, port=0, host="0.0.0.0")


def test_dead_worker_is_respawned() -> None:
    with start_demo(workers=2, table_mb=4) as s:
        victim = s.workers[0]
        os.kill(victim, signal.SIGKILL)
        assert _wait_for(lambda: victim not in _children(s.pid) and len(_children(s.pid)) == 2)
        assert _children(s.pid) - set(s.workers)  # a new pid
        assert s.current_workers() == sorted(_children(s.pid))
        statuses = {_get(s, "/health")[0] for _ in range(10)}
        assert statuses == {200}


def test_stop_leaves_no_process_behind() -> None:
    s = start_demo(workers=3, table_mb=4)
    pids = [s.pid, *s.workers]
    assert all(_alive(p) for p in pids)
    assert s.stop() == 0
    assert _wait_for(lambda: not any(_alive(p) for p in pids), timeout=10)
    assert s.current_workers() == []
    assert s.stop() == 0  # idempotent


def test_workers_exit_when_the_master_is_killed() -> None:
    with start_demo(workers=2, table_mb=4) as s:
        os.kill(s.pid, signal.SIGKILL)
        assert _wait_for(lambda: not any(_alive(p) for p in s.workers), timeout=10)


def test_foreground_server_stops_on_sigint() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadmem.demo", "--workers", "2", "--table-mb", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        assert ready["event"] == "ready" and ready["pid"] == proc.pid
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=15) == 0
        assert proc.stdout.read() == b""  # exactly one line on stdout
        assert not any(_alive(p) for p in ready["workers"])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_start_failure_is_a_clear_error_with_the_log_tail() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(LoadmemError) as err:
            start_demo(workers=1, table_mb=1, port=port, timeout=30)
    message = str(err.value)
    assert "exited (code 2) before it was ready" in message
    assert f"cannot listen on 127.0.0.1:{port}" in message


def test_start_timeout_is_a_clear_error_and_kills_the_server() -> None:
    before = _children(os.getpid())
    with pytest.raises(LoadmemError, match="not ready within"):
        start_demo(workers=1, table_mb=64, timeout=0.05)
    assert _children(os.getpid()) <= before  # the server was stopped and reaped


def _housekeeping_lines(log) -> list[int]:
    """Worker indexes in the order their idle collections were logged."""
    text = log.read_text(errors="replace")
    return [int(i) for i in re.findall(r"worker (\d+) \(pid \d+\): idle housekeeping", text)]


def test_housekeeping_waits_for_traffic_and_runs_in_worker_order(tmp_path) -> None:
    log = tmp_path / "demo.log"
    with start_demo(
        workers=2, table_mb=2, idle_gc_after=0.2, idle_gc_stagger=3.0, log_path=log
    ) as s:
        for _ in range(10):
            assert _get(s, "/health")[0] == 200
        time.sleep(1.0)  # five times idle_gc_after: probes alone must not arm housekeeping
        assert _housekeeping_lines(log) == []
        for _ in range(20):  # new connections: both workers get some
            assert _get(s, "/")[0] == 200
        assert _wait_for(lambda: len(_housekeeping_lines(log)) >= 2, timeout=20)
        assert _housekeeping_lines(log)[:2] == [0, 1]  # staggered by worker index


def test_housekeeping_repeats_while_idle_when_asked(tmp_path) -> None:
    log = tmp_path / "demo.log"
    with start_demo(
        workers=1, table_mb=2, idle_gc_after=0.1, idle_gc_repeat=0.2, log_path=log
    ) as s:
        assert _get(s, "/api/items")[0] == 200
        assert _wait_for(lambda: len(_housekeeping_lines(log)) >= 3, timeout=20)
        health = json.loads(_get(s, "/health")[1])
        assert health["gc_runs"] >= 3
