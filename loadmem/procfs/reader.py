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

import errno
import os

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

    def pids(self) -> list[int]:
        """Every pid under the root (numeric directory names)."""
        return [int(n) for n in os.listdir(self.root) if n.isdigit()]

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
