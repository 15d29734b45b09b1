"""The I/O edge: errno mapped once, on real /proc and on a fixture root."""

import errno
import os
import shutil
import time
from pathlib import Path

import pytest

from loadmem.errors import AccessDenied, ProcessGone, ZombieProcess
from loadmem.procfs.reader import ProcFS
from loadmem.procfs.stat import parse_stat

FIX = Path(__file__).parent / "fixtures" / "proc"


def test_real_proc_reads_and_gone():
    fs = ProcFS()
    me = os.getpid()
    assert parse_stat(fs.read_pid(me, "stat")).pid == me
    assert me in fs.pids()
    assert "MemTotal" in fs.read("meminfo")
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    with pytest.raises(ProcessGone) as ei:
        fs.read_pid(pid, "status")
    assert not isinstance(ei.value, ZombieProcess) and ei.value.reason == "gone"


def test_real_zombie():
    fs = ProcFS()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        deadline = time.monotonic() + 10
        while parse_stat(fs.read_pid(pid, "stat")).state != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(ZombieProcess) as ei:
            fs.read_pid(pid, "smaps_rollup")  # ESRCH: no address space left
        assert ei.value.reason == "zombie"
        assert "zombie" in fs.read_pid(pid, "status")  # status still reads
    finally:
        os.waitpid(pid, 0)


def test_fixture_root(tmp_path):
    d = tmp_path / "4242"
    d.mkdir()
    shutil.copy(FIX / "pid_stat", d / "stat")
    shutil.copy(FIX / "pid_status", d / "status")
    fs = ProcFS(str(tmp_path))
    assert fs.pids() == [4242]
    assert "VmRSS" in fs.read_pid(4242, "status")
    with pytest.raises(ProcessGone):
        fs.read_pid(4242, "smaps_rollup")
    z = tmp_path / "4243"
    z.mkdir()
    shutil.copy(FIX / "zombie_stat", z / "stat")
    with pytest.raises(ZombieProcess):
        fs.read_pid(4243, "smaps_rollup")


class DeniedFS(ProcFS):
    """Root bypasses file modes, so EACCES is simulated at the one I/O layer."""

    def _read(self, path: str) -> bytes:
        if path.endswith("/smaps_rollup"):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        if path.endswith("/environ"):
            raise OSError(errno.EIO, "I/O error", path)
        return super()._read(path)


def test_errno_mapping():
    fs = DeniedFS()
    with pytest.raises(AccessDenied) as ei:
        fs.read_pid(os.getpid(), "smaps_rollup")
    assert ei.value.reason == "access-denied" and ei.value.pid == os.getpid()
    with pytest.raises(OSError) as ei2:  # other errors are not mislabelled
        fs.read_pid(os.getpid(), "environ")
    assert ei2.value.errno == errno.EIO


def test_tasks_mark_moves_when_a_process_is_created():
    fs = ProcFS()
    m0 = fs.tasks_mark()
    assert m0 is not None and m0[0] >= 1 and m0[1] >= 1
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    m1 = fs.tasks_mark()  # the fork allocated a pid: the last pid moved
    os.waitpid(pid, 0)
    assert m1 is not None and m1[1] != m0[1]


def test_tasks_mark_is_none_outside_this_pid_namespace(tmp_path):
    (tmp_path / "loadavg").write_text("0.00 0.01 0.05 1/123 4567\n")
    assert ProcFS(str(tmp_path)).tasks_mark() is None  # a fixture: no "self" link
    (tmp_path / "self").symlink_to(str(os.getpid() + 1))
    assert ProcFS(str(tmp_path)).tasks_mark() is None  # another namespace's /proc
    (tmp_path / "self").unlink()
    (tmp_path / "self").symlink_to(str(os.getpid()))
    assert ProcFS(str(tmp_path)).tasks_mark() == (123, 4567)  # parsed: tasks, last pid
    (tmp_path / "loadavg").write_text("garbage\n")
    assert ProcFS(str(tmp_path)).tasks_mark() is None


def test_close_is_a_no_op_on_the_plain_reader():
    fs = ProcFS()
    fs.close()
    fs.release(os.getpid())
    assert parse_stat(fs.read_pid(os.getpid(), "stat")).pid == os.getpid()
