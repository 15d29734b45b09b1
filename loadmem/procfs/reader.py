"""The I/O edge: read a /proc (or /sys) file, mapping errno once, the same way everywhere.

- ENOENT / ESRCH -> ``ProcessGone``, or ``ZombieProcess`` when the process's state is Z
  (a zombie keeps its ``stat`` but has no address space left to read);
- EACCES / EPERM -> ``AccessDenied`` (``smaps_rollup`` of another user's process without
  CAP_SYS_PTRACE);
- anything else is re-raised: a bug or a broken host should not be mislabelled.

The root is a parameter so that tests can point it at captured fixtures, and subclasses
can simulate failures at this one layer.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource

from loadmem.errors import AccessDenied, ProcessGone, ZombieProcess

_GONE = {errno.ENOENT, errno.ESRCH}
#: Files the kernel renders in one piece (``single_open``): one read() returns all of it
#: when the buffer is large enough, which saves a second syscall per file per tick.
_ONE_SHOT = ("/stat", "/status", "/statm", "/smaps_rollup", "/meminfo")
_BUF = 1 << 16
_DENIED = {errno.EACCES, errno.EPERM}


class ProcFS:
    """Reads ``/proc`` files. ``root`` defaults to ``/proc``."""

    def __init__(self, root: str = "/proc"):
        self.root = root.rstrip("/") or "/"
        self._own_namespace: bool | None = None  # see tasks_mark

    # --- raw reads (overridable: tests simulate errors by overriding ``_read``) ---
    def _read(self, path: str) -> bytes:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            first = os.read(fd, _BUF)
            if len(first) < _BUF and path.endswith(_ONE_SHOT):
                return first
            chunks = [first]
            while chunks[-1]:
                chunks.append(os.read(fd, _BUF))
            return b"".join(chunks)
        finally:
            os.close(fd)

    def path(self, pid: int | str, name: str) -> str:
        return f"{self.root}/{pid}/{name}"

    def read_pid(self, pid: int, name: str) -> str:
        """Read ``/proc/PID/name``; raise ``ProcessGone``/``ZombieProcess``/``AccessDenied``."""
        try:
            return self._read(self.path(pid, name)).decode("utf-8", "replace")
        except OSError as e:
            if e.errno in _GONE:
                if name != "stat" and self._is_zombie(pid):
                    raise ZombieProcess(pid, name) from None
                raise ProcessGone(pid, name) from None
            if e.errno in _DENIED:
                raise AccessDenied(pid, name) from None
            raise

    def read_pid_bytes(self, pid: int, name: str) -> bytes:
        try:
            return self._read(self.path(pid, name))
        except OSError as e:
            if e.errno in _GONE:
                raise ProcessGone(pid, name) from None
            if e.errno in _DENIED:
                raise AccessDenied(pid, name) from None
            raise

    def read(self, name: str) -> str:
        """Read a system-wide file under the root (``meminfo``, ``net/tcp``...)."""
        return self._read(f"{self.root}/{name}").decode("utf-8", "replace")

    def read_abs(self, path: str) -> str:
        """Read any file (cgroup files under /sys); errors are left to the caller."""
        return self._read(path).decode("utf-8", "replace")

    def _is_zombie(self, pid: int) -> bool:
        try:
            text = self._read(self.path(pid, "stat")).decode("utf-8", "replace")
        except OSError:
            return False
        return text[text.rindex(")") + 2 : text.rindex(")") + 3] == "Z"

    def tasks_mark(self) -> tuple[int, int] | None:
        """``(tasks, last pid)`` from ``/proc/loadavg``: how many tasks (threads) exist and
        the pid the kernel allocated last, or None when it cannot be read. While both stay
        the same, no process or thread was created or reaped, so a listing of ``/proc``
        would show nothing new and nothing gone.

        The last pid is counted in the *reader's* pid namespace: None when this ``/proc``
        belongs to another one (a host's ``/proc`` mounted into a container), whose new
        processes would not move it."""
        if self._own_namespace is None:
            try:
                self._own_namespace = os.readlink(f"{self.root}/self") == str(os.getpid())
            except OSError:
                self._own_namespace = False
        if not self._own_namespace:
            return None
        try:
            fields = self.read("loadavg").split()
            return int(fields[3].partition("/")[2]), int(fields[4])
        except (OSError, ValueError, IndexError):
            return None

    def pids(self) -> list[int]:
        """Every pid under the root (numeric directory names)."""
        return [int(n) for n in os.listdir(self.root) if n.isdigit()]

    def release(self, pid: int) -> None:
        """Close what this reader holds open for ``pid`` (nothing: see ``KeptOpenProcFS``)."""

    def close(self) -> None:
        """Release what this reader holds open (nothing: see ``KeptOpenProcFS``)."""

    def fd_links(self, pid: int) -> list[str]:
        """The targets of ``/proc/PID/fd/*`` (``socket:[123]``, paths...); [] if unreadable."""
        base = self.path(pid, "fd")
        try:
            names = os.listdir(base)
        except OSError:
            return []
        out = []
        for n in names:
            try:
                out.append(os.readlink(f"{base}/{n}"))
            except OSError:
                continue
        return out


class KeptOpenProcFS(ProcFS):
    """A ``ProcFS`` that keeps open the small files read on every tick and re-reads them
    with ``pread`` at offset 0, which makes the kernel render them anew.

    That saves the path lookup, open and close of each ``stat``/``status`` of every watched
    process, ``meminfo`` and the cgroup counters, every tick. ``smaps_rollup`` is never
    kept open (an open one pins the process's ``mm_struct``).

    A kept descriptor names the process it was opened on, not its pid: once that process
    is gone it fails with ESRCH even if the pid is reused. Then every kept descriptor of
    that pid is closed and the file is opened again by path, so errors and pid reuse are
    seen exactly as ``ProcFS`` sees them. The selector calls ``release(pid)`` for a process
    that is gone or not watched, so only files read every tick stay open. At most
    ``max_open`` files are kept (by default a quarter of the open-file limit, at most 1024);
    beyond that, files are read as usual. ``close()`` releases them all.
    """

    KEPT = ("/stat", "/status", "/statm", "/meminfo", "/loadavg", "/memory.stat",
            "/memory.usage_in_bytes", "/memory.current", "/memory.max", "/memory.high",
            "/memory.peak", "/memory.events", "/memory.pressure", "/memory.limit_in_bytes",
            "/memory.max_usage_in_bytes", "/memory.failcnt", "/memory.oom_control")

    def __init__(self, root: str = "/proc", max_open: int | None = None):
        super().__init__(root)
        if max_open is None:
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            max_open = 1024 if soft == resource.RLIM_INFINITY else min(1024, soft // 4)
        self.max_open = max_open
        self._fds: dict[str, int] = {}
        # the descriptors of process files again, by (pid, name), for read_pid: no path to
        # format and match
        self._pid_fds: dict[tuple[int, str], int] = {}

    def read_pid(self, pid: int, name: str) -> str:
        fd = self._pid_fds.get((pid, name))
        if fd is not None:
            try:
                data = os.pread(fd, _BUF, 0)
            except OSError:  # gone (or its pid reused): the general path sorts it out
                data = b""
            if 0 < len(data) < _BUF:
                return data.decode("utf-8", "replace")
        text = super().read_pid(pid, name)
        path = self.path(pid, name)
        fd = self._fds.get(path)
        if fd is not None:
            self._pid_fds[(pid, name)] = fd
        return text

    def _read(self, path: str) -> bytes:
        if not path.endswith(self.KEPT):
            return super()._read(path)
        fd = self._fds.get(path)
        if fd is None:
            if len(self._fds) >= self.max_open:
                return super()._read(path)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            self._fds[path] = fd
        try:
            data = os.pread(fd, _BUF, 0)
        except OSError:
            self._drop(path)  # the process it was opened on is gone: ask by path
            return super()._read(path)
        if len(data) == _BUF:  # larger than expected: read it whole the usual way
            return super()._read(path)
        return data

    def _drop(self, path: str) -> None:
        """Close ``path``'s descriptor and, for a file of a process, all of that process's."""
        head, _, _ = path.rpartition("/")
        prefix = head + "/" if head.startswith(self.root + "/") and head != self.root else path
        self._close([p for p in self._fds if p == path or p.startswith(prefix)])

    def release(self, pid: int) -> None:
        """Close every kept file of ``pid``: it is gone, or it is not read every tick (the
        selector reads the ``stat`` of every new pid once, to classify it)."""
        prefix = self.path(pid, "")
        self._close([p for p in self._fds if p.startswith(prefix)])

    def close(self) -> None:
        self._close(list(self._fds))

    def _close(self, paths: list[str]) -> None:
        for p in paths:
            pid, sep, name = p[len(self.root) + 1:].partition("/")  # ROOT/PID/NAME
            if sep and pid.isdigit():
                self._pid_fds.pop((int(pid), name), None)
            with contextlib.suppress(OSError):
                os.close(self._fds.pop(p))
