"""The recorder end to end, on real processes: copy-on-write seen in the recording, a
SIGKILLed recorder read back, respawned workers, a server found by its port, an unreadable
process. Each test is bounded in seconds and tens of MiB."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from loadmem.recorder.recorder import Recorder, RecordOptions
from loadmem.recorder.selection import Selection
from loadmem.recording import open_recording

MIB = 1 << 20

COW_PARENT = r'''
import os, sys, time
MIB = 1 << 20
size = int(sys.argv[1]) * MIB
go, done = sys.argv[2], sys.argv[3]
buf = bytearray(size)
for i in range(0, size, 4096):  # touch every page: anonymous, resident, private to us
    buf[i] = 1
children = []
for n in range(2):
    pid = os.fork()
    if pid == 0:
        if n == 0:  # the writer: waits for the go file, then overwrites every inherited page
            while not os.path.exists(go):
                time.sleep(0.02)
            for i in range(0, size, 4096):
                buf[i] = 2
            open(done, "w").close()
        while True:
            time.sleep(1)
    children.append(pid)
print(os.getpid(), *children, flush=True)
while True:
    time.sleep(1)
'''

RESPAWN_PARENT = r'''
import os, signal, sys, time
respawns = int(sys.argv[1])
life = float(sys.argv[2])
def worker():
    buf = bytearray(1 << 20)
    while True:
        time.sleep(0.5)
def spawn():
    pid = os.fork()
    if pid == 0:
        worker()
    print("spawn", pid, flush=True)
    return pid
workers = [spawn(), spawn()]
for _ in range(respawns):
    time.sleep(life)
    victim = workers.pop(0)
    os.kill(victim, signal.SIGKILL)
    os.waitpid(victim, 0)
    print("killed", victim, flush=True)
    workers.append(spawn())
print("done", flush=True)
while True:
    time.sleep(1)
'''

PREFORK_HTTP = r'''
import os, socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[2]) if len(sys.argv) > 2 else 0))
s.listen(16)
workers = []
for _ in range(int(sys.argv[1])):
    pid = os.fork()
    if pid == 0:
        while True:
            conn, _ = s.accept()
            conn.recv(65536)
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
            conn.close()
    workers.append(pid)
print(s.getsockname()[1], os.getpid(), *workers, flush=True)
while True:
    time.sleep(1)
'''


def _script(tmp_path: Path, name: str, body: str) -> Path:
    p = tmp_path / f"{name}.py"
    p.write_text(body)
    return p


def _start(tmp_path: Path, name: str, body: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(_script(tmp_path, name, body)), *args],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )


def _kill_tree(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _wait_for(pred, timeout: float = 30.0, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {pred}")


def _record_cmd(out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "loadmem", "record", "--out", str(out), *args]


class _Threaded:
    """The library API in a thread of the test process (no interpreter start-up per test)."""

    def __init__(self, options: RecordOptions):
        options.handle_signals = False
        self.recorder = Recorder(options)
        self.result = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.result = self.recorder.run()
        except BaseException as e:
            self.error = e

    def stop(self):
        self.recorder.stop("test")
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()
        if self.error:
            raise self.error
        return self.result


def _rows(rec, pid):
    return [r for r in rec.table("processes").to_pylist() if r["pid"] == pid]


# --- 1. copy-on-write unsharing is visible ------------------------------------------------
def test_cow_unsharing_shows_in_the_recording(tmp_path):
    go, done = tmp_path / "go", tmp_path / "done"
    parent = _start(tmp_path, "cow", COW_PARENT, "32", str(go), str(done))
    out = tmp_path / "rec"
    rec_proc = None
    try:
        pids = [int(x) for x in parent.stdout.readline().split()]
        ppid, writer, idle = pids
        rec_proc = subprocess.Popen(
            _record_cmd(out, "--pid", str(ppid), "--interval", "0.2s", "--duration", "60s",
                        "--flush", "1s", "--status-stdout"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        # a baseline of a few ticks (every process read fresh at least once) ...
        for _ in range(5):
            line = json.loads(rec_proc.stdout.readline())
        assert line["processes"] == 3
        go.touch()  # ... then the writer child overwrites its 32 MiB of inherited pages
        _wait_for(done.exists)
        for _ in range(10):  # let the dirty writer be re-read
            rec_proc.stdout.readline()
        rec_proc.send_signal(signal.SIGTERM)
        _, err = rec_proc.communicate(timeout=60)
        assert rec_proc.returncode == 0, err
    finally:
        if rec_proc and rec_proc.poll() is None:
            rec_proc.kill()
        _kill_tree(parent)

    rec = open_recording(out)
    assert rec.complete and rec.meta["stop_reason"] == "signal SIGTERM"
    rows = _rows(rec, writer)
    fresh = [r for r in rows if r["pss_fresh"]]
    assert len(fresh) >= 2, "the writer's smaps_rollup was read before and after"
    first, last = fresh[0], fresh[-1]
    assert last["private_dirty"] - first["private_dirty"] >= 20 * MIB
    assert first["shared_dirty"] - last["shared_dirty"] >= 20 * MIB
    assert abs(last["rss"] - first["rss"]) <= 0.05 * first["rss"]  # RSS flat
    assert last["pss"] - first["pss"] >= 10 * MIB  # its share of the memory grew
    # carried-forward rows say when their figures were read
    for r in rows:
        assert r["pss_read_t"] <= r["t"] + 1e-9
        if r["pss_fresh"]:
            assert r["pss_read_t"] == r["t"] and r["pss_read_us"] > 0
    # the idle sibling's PSS changed too (fewer sharers), though it never faulted
    idle_fresh = [r for r in _rows(rec, idle) if r["pss_fresh"]]
    assert idle_fresh[-1]["pss"] > idle_fresh[0]["pss"]
    roles = {(r["pid"], r["depth"], r["role"]) for r in rec.table("processes").to_pylist()}
    assert roles == {(ppid, 0, "target"), (writer, 1, "target"), (idle, 1, "target")}
    # the recorder measured itself
    own = rec.table("recorder").to_pylist()
    assert sum(r["smaps_reads"] for r in own) >= len(fresh)
    assert own[-1]["cpu_user"] + own[-1]["cpu_system"] > 0 and own[-1]["rss"] > 0
    # and the system table was written every tick (cgroup rows: test_recorder_sampler.py)
    assert rec.table("system").num_rows == len(own)
    assert "MemAvailable" in rec.table("system").column_names


# --- 2. a SIGKILLed recorder loses at most the last flush interval ----------------------
def test_sigkill_loses_at_most_the_last_flush(tmp_path):
    target = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    out = tmp_path / "rec"
    interval, flush = 0.1, 0.5
    proc = subprocess.Popen(
        _record_cmd(out, "--pid", str(target.pid), "--interval", f"{interval}s", "--flush",
                    f"{flush}s", "--status-stdout"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        last_tick = -1
        while last_tick < 25:  # at least a few flushes happened
            last_tick = json.loads(proc.stdout.readline())["tick"]
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=10)
        # it may have gone on a few ticks before the kill: each tick prints its status line
        # before it flushes, so the last line printed is the last tick that could be on disk
        last_tick = max([last_tick, *(json.loads(x)["tick"] for x in rest.splitlines())])
    finally:
        if proc.poll() is None:
            proc.kill()
        target.kill()
        target.wait()
    rec = open_recording(out)
    assert not rec.complete and rec.meta["status"] == "recording"
    assert any("not finished cleanly" in n for n in rec.notes)
    ticks = rec.table("system", ["tick"]).column("tick").to_pylist()
    assert ticks == list(range(len(ticks))), "whole segments only, in order"
    lost = last_tick + 1 - len(ticks)
    assert 0 <= lost <= flush / interval + 2, f"lost {lost} ticks"
    # every tick of the system table is whole in the processes table; the system segment is
    # renamed into place last, so a kill between two renames may leave the processes table
    # one segment ahead (at most a --flush of ticks), never behind
    rows = sorted(r["tick"] for r in _rows(rec, target.pid))
    assert rows[:len(ticks)] == ticks
    assert rows[len(ticks):] == list(range(len(ticks), len(rows)))
    assert len(rows) - len(ticks) <= flush / interval + 1


# --- 3. respawned workers are all found -------------------------------------------------
def test_respawned_workers_are_found(tmp_path):
    parent = _start(tmp_path, "respawn", RESPAWN_PARENT, "3", "1.5")
    spawned: list[int] = []
    killed: list[int] = []
    try:
        rec = _Threaded(RecordOptions(out=tmp_path / "rec", interval=0.1, flush=1.0,
                                      selection=Selection(pids=[parent.pid])))
        while True:
            word, *rest = parent.stdout.readline().split()
            if word == "spawn":
                spawned.append(int(rest[0]))
            elif word == "killed":
                killed.append(int(rest[0]))
            elif word == "done":
                break
        _wait_for(lambda: set(spawned) <= {pid for pid, _ in rec.recorder.processes_seen})
        result = rec.stop()
    finally:
        _kill_tree(parent)
    assert len(spawned) == 5 and len(killed) == 3
    recording = open_recording(result.path)
    rows = recording.table("processes").to_pylist()
    identities = {(r["pid"], r["start_time"]) for r in rows if r["pid"] in spawned}
    assert {pid for pid, _ in identities} == set(spawned)
    assert len(identities) == len(spawned)  # one series per (pid, start_time)
    assert all(r["depth"] == 1 and r["ppid"] == parent.pid for r in rows if r["pid"] in spawned)
    starts = {e["data"]["pid"] for e in recording.events("process_start")}
    exits = {e["data"]["pid"] for e in recording.events("process_exit")}
    assert set(spawned) | {parent.pid} <= starts
    assert set(killed) <= exits
    assert not (set(spawned) - set(killed)) & exits
    assert result.processes == len(spawned) + 1


# --- 4. an unreadable process: the recording carries on ---------------------------------
class _DeniedFS:
    """Simulate EACCES on one pid's smaps_rollup at the ProcFS layer (root bypasses file
    modes, so a chmod'ed fixture would not do)."""

    def __new__(cls, denied_pid: int):
        import errno

        from loadmem.procfs.reader import ProcFS

        class Denied(ProcFS):
            def _read(self, path: str) -> bytes:
                if path == f"/proc/{denied_pid}/smaps_rollup":
                    raise PermissionError(errno.EACCES, "Permission denied", path)
                return super()._read(path)

        return Denied()


def test_unreadable_process_is_recorded_with_an_error(tmp_path):
    parent = _start(tmp_path, "respawn", RESPAWN_PARENT, "0", "0")
    try:
        w1 = int(parent.stdout.readline().split()[1])
        w2 = int(parent.stdout.readline().split()[1])
        assert parent.stdout.readline().strip() == "done"
        rec = _Threaded(RecordOptions(out=tmp_path / "rec", interval=0.1, flush=0.5,
                                      selection=Selection(pids=[parent.pid]),
                                      procfs=_DeniedFS(w1)))
        _wait_for(lambda: len(list((tmp_path / "rec" / "processes").glob("*.parquet"))) >= 3)
        result = rec.stop()
    finally:
        _kill_tree(parent)
    recording = open_recording(result.path)
    denied = _rows(recording, w1)
    ok = _rows(recording, w2)
    assert len(denied) >= 3 and len(denied) == len(ok)  # no row dropped
    assert all(r["error"] == "smaps:access-denied" and r["pss"] is None for r in denied)
    assert all(r["rss"] and r["rss"] > 0 and r["minflt"] is not None for r in denied)
    assert all(r["error"] is None for r in ok) and ok[0]["pss"] > 0
    warnings = [e for e in recording.events("warning")
                if e["data"].get("reason") == "smaps:access-denied"]
    assert len(warnings) == 1 and warnings[0]["data"]["pid"] == w1  # once, not per tick
    assert recording.meta["failures"]["smaps:access-denied"] == len(denied)
    errors = sum(r["errors"] for r in recording.table("recorder").to_pylist())
    assert errors == len(denied)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root to run the recorder under another uid (setpriv)")
def test_other_users_process_really_denied():
    """The recorder as uid 65534 without CAP_SYS_PTRACE, watching a root process: the
    kernel refuses smaps_rollup (EACCES) while status stays readable."""
    target = subprocess.Popen(["sleep", "60"])
    out_dir = Path(tempfile.mkdtemp(prefix="loadmem-denied-"))
    os.chmod(out_dir, 0o777)
    try:
        r = subprocess.run(
            ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
             "--inh-caps", "+dac_read_search,+dac_override",
             "--ambient-caps", "+dac_read_search,+dac_override",
             *_record_cmd(out_dir / "rec", "--pid", str(target.pid), "--interval", "0.1s",
                          "--duration", "0.5s")],
            capture_output=True, text=True, timeout=60, cwd=out_dir,
        )
        assert r.returncode == 0, r.stderr
        rec = open_recording(out_dir / "rec")
        rows = _rows(rec, target.pid)
        assert rows and all(r["error"] == "smaps:access-denied" for r in rows)
        assert all(r["rss"] > 0 and r["pss"] is None for r in rows)
        assert "failed reads: smaps:access-denied" in r.stdout
    finally:
        target.kill()
        target.wait()
        shutil.rmtree(out_dir, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root to run the recorder under another uid (setpriv)")
def test_port_of_another_users_server_is_a_clear_error(tmp_path):
    server = _start(tmp_path, "http", PREFORK_HTTP, "1")
    out_dir = Path(tempfile.mkdtemp(prefix="loadmem-denied-"))
    os.chmod(out_dir, 0o777)
    try:
        port = server.stdout.readline().split()[0]
        r = subprocess.run(
            ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
             "--inh-caps", "+dac_read_search,+dac_override",
             "--ambient-caps", "+dac_read_search,+dac_override",
             *_record_cmd(out_dir / "rec", "--port", port, "--duration", "0.2s")],
            capture_output=True, text=True, timeout=60, cwd=out_dir,
        )
    finally:
        _kill_tree(server)
        shutil.rmtree(out_dir, ignore_errors=True)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "not in a process this user can see" in r.stderr


# --- 5. --port finds a pre-fork server and its workers ----------------------------------
def test_port_selects_the_server_and_its_workers(tmp_path):
    server = _start(tmp_path, "http", PREFORK_HTTP, "2")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        port, master, *workers = (int(x) for x in server.stdout.readline().split())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
            assert resp.read() == b"ok"  # a real server
        out = tmp_path / "rec"
        r = subprocess.run(
            _record_cmd(out, "--port", str(port), "--interval", "0.2s", "--duration", "0.6s"),
            capture_output=True, text=True, timeout=60,
        )
        assert r.returncode == 0, r.stderr
        assert f"loadmem analyze {out}" in r.stdout
    finally:
        _kill_tree(server)
        other.kill()
        other.wait()
    rec = open_recording(out)
    rows = rec.table("processes").to_pylist()
    found = {(r["pid"], r["depth"]) for r in rows}
    assert found == {(master, 0), *((w, 1) for w in workers)}
    assert rec.meta["selection"]["ports"] == [port]


def test_port_finds_a_restarted_server(tmp_path):
    """The server behind --port is killed and started again (new master, new workers): the
    recorder sees the first one exit and finds the second one on its own."""
    server = _start(tmp_path, "http", PREFORK_HTTP, "2")
    port, *first = (int(x) for x in server.stdout.readline().split())
    out = tmp_path / "rec"
    rec = subprocess.Popen(
        _record_cmd(out, "--port", str(port), "--interval", "0.2s", "--status-stdout"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    second_server = None
    try:
        def watched(n):  # within 150 ticks (30 s)
            for _ in range(150):
                if json.loads(rec.stdout.readline())["processes"] == n:
                    return
            raise AssertionError(f"never watched {n} processes")

        watched(3)
        _kill_tree(server)
        watched(0)
        second_server = _start(tmp_path, "http", PREFORK_HTTP, "2", str(port))
        second = [int(x) for x in second_server.stdout.readline().split()[1:]]
        watched(3)  # within the port re-check period
        rec.send_signal(signal.SIGTERM)
        _, err = rec.communicate(timeout=60)
        assert rec.returncode == 0, err
    finally:
        if rec.poll() is None:
            rec.kill()
        if second_server is not None:
            _kill_tree(second_server)
    recording = open_recording(out)
    rows = recording.table("processes").to_pylist()
    assert {(r["pid"], r["depth"]) for r in rows} == {
        (first[0], 0), *((w, 1) for w in first[1:]), (second[0], 0), *((w, 1) for w in second[1:])
    }
    assert set(first) <= {e["data"]["pid"] for e in recording.events("process_exit")}
