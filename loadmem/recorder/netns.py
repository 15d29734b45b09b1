"""Network namespaces as ``/proc`` shows them: one snapshot, taken when a port is looked up.

Each process's ``/proc/PID/ns/net`` links to ``net:[INODE]``: processes with the same inode
share a network namespace. A namespace's TCP sockets are in ``/proc/PID/net/tcp{,6}`` of any
of its processes, and the processes holding a socket are found through the inode in their
fd links (``socket:[INODE]``). A socket lives in the namespace of the thread that made it,
which is not always its holder's: a runtime that forwards a port into a container (the
containerd streaming server behind ``kubectl port-forward``) enters the container's
namespace on one thread, so its sockets show up in the container's tables.

Sockets are asked from the kernel's ``sock_diag`` netlink interface when the reader is root
on the real ``/proc`` (``loadmem.procfs.sock_diag``: listening sockets in 0.1 ms per
namespace), else read from ``/proc/PID/net/tcp{,6}`` (about 12 ms per file on a large
machine: the kernel walks its whole connection hash table for each).

Everything here is read once per snapshot and only when a port is (re-)resolved, never per
tick: listing every process's fd table costs milliseconds on a busy host.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

from loadmem.errors import ProcessError
from loadmem.procfs.net_tcp import (
    TcpSocket,
    parse_fib_trie_local,
    parse_if_inet6,
    parse_tcp_sockets,
)
from loadmem.procfs.reader import ProcFS
from loadmem.procfs.sock_diag import ALL_STATES, tcp_sockets

TCP_LISTEN_BIT = 1 << 10

WILDCARD = {"0.0.0.0", "::"}


def netns_inode(link: str) -> int | None:
    """``net:[4026531840]`` -> 4026531840."""
    if link.startswith("net:[") and link.endswith("]"):
        with contextlib.suppress(ValueError):
            return int(link[5:-1])
    return None


def listener_accepts(listener: TcpSocket, sock: TcpSocket) -> bool:
    """Whether ``sock`` (an established socket of the same namespace) is a connection this
    listener accepted: same local port, and the listener's address is its own or a wildcard.
    A dual-stack ``::`` listener accepts IPv4 connections too."""
    return (sock.local_port == listener.local_port
            and (listener.local_ip in WILDCARD or listener.local_ip == sock.local_ip))


@dataclass
class NetnsView:
    """Which processes share which network namespace, and (lazily) each one's sockets."""

    procfs: ProcFS
    own: int | None  # the recorder's namespace
    by_pid: dict[int, int]  # pid -> namespace, for the processes whose link is readable
    members: dict[int, list[int]]  # namespace -> its pids, sorted
    unreadable: int = 0  # processes whose namespace this user cannot see
    _tables: dict[int, list[TcpSocket]] = field(default_factory=dict)
    _listening: dict[int, list[TcpSocket]] = field(default_factory=dict)
    _owners: dict[int, set[int]] | None = None

    @classmethod
    def scan(cls, procfs: ProcFS) -> NetnsView:
        own = None
        with contextlib.suppress(OSError):
            own = netns_inode(os.readlink(f"{procfs.root}/self/ns/net"))
        by_pid: dict[int, int] = {}
        members: dict[int, list[int]] = {}
        unreadable = 0
        for pid in sorted(procfs.pids()):
            try:
                ns = netns_inode(os.readlink(procfs.path(pid, "ns/net")))
            except PermissionError:
                unreadable += 1
                continue
            except OSError:  # gone, or a kernel thread without one
                continue
            if ns is None:
                continue
            by_pid[pid] = ns
            members.setdefault(ns, []).append(pid)
        return cls(procfs, own, by_pid, members, unreadable)

    @property
    def others(self) -> list[int]:
        """Every namespace but the recorder's."""
        return [ns for ns in self.members if ns != self.own]

    def _read(self, ns: int, name: str) -> str | None:
        """``/proc/PID/name`` of the first member of ``ns`` that can be read
        (``/proc/name`` for the recorder's own namespace)."""
        if ns == self.own:
            with contextlib.suppress(OSError):
                return self.procfs.read(name)
        for pid in self.members.get(ns, []):
            try:
                return self.procfs.read_pid(pid, name)
            except (ProcessError, OSError):
                continue
        return None

    def _diag(self, ns: int, states: int) -> list[TcpSocket] | None:
        """Sockets of ``ns`` through sock_diag (None: not available, read the files)."""
        if self.procfs.root != "/proc":  # fixtures: the files are the truth
            return None
        if ns == self.own:
            return tcp_sockets(states)
        for pid in self.members.get(ns, [])[:3]:
            got = tcp_sockets(states, self.procfs.path(pid, "ns/net"))
            if got is not None:
                return got
        return None

    def sockets(self, ns: int, fresh: bool = False) -> list[TcpSocket]:
        """The TCP sockets of ``ns`` (IPv4 and IPv6); cached unless ``fresh``."""
        if fresh or ns not in self._tables:
            out = self._diag(ns, ALL_STATES)
            if out is None:
                out = []
                for name in ("net/tcp", "net/tcp6"):
                    text = self._read(ns, name)
                    if text:
                        out += parse_tcp_sockets(text)
            self._tables[ns] = out
            self._listening[ns] = [s for s in out if s.listening]
        return self._tables[ns]

    def listeners(self, ns: int, port: int | None = None) -> list[TcpSocket]:
        """The listening sockets of ``ns`` (on ``port``); a listeners-only dump when the
        full table has not been read."""
        if ns not in self._listening:
            got = self._diag(ns, TCP_LISTEN_BIT)
            if got is None:
                self.sockets(ns)
            else:
                self._listening[ns] = got
        return [s for s in self._listening[ns] if port is None or s.local_port == port]

    def inbound(self, ns: int, fresh: bool = False) -> set[tuple[str, int, str, int]]:
        """``(local ip, local port, remote ip, remote port)`` of every established connection
        a listener of ``ns`` accepted."""
        socks = self.sockets(ns, fresh)
        listeners = [s for s in socks if s.listening]
        return {(s.local_ip, s.local_port, s.remote_ip, s.remote_port) for s in socks
                if s.established and any(listener_accepts(ls, s) for ls in listeners)}

    def local_addresses(self, ns: int) -> set[str]:
        """The addresses of ``ns``'s own interfaces (IPv4 from ``fib_trie``, IPv6 from
        ``if_inet6``)."""
        out: set[str] = set()
        text = self._read(ns, "net/fib_trie")
        if text:
            out |= parse_fib_trie_local(text)
        text = self._read(ns, "net/if_inet6")
        if text:
            out |= parse_if_inet6(text)
        return out

    def socket_owners(self) -> dict[int, set[int]]:
        """Socket inode -> the pids holding it, over every process (one fd scan, cached)."""
        if self._owners is None:
            self._owners = {}
            for pid in self.procfs.pids():
                for ino in self.socket_inodes(pid):
                    self._owners.setdefault(ino, set()).add(pid)
        return self._owners

    def socket_inodes(self, pid: int) -> set[int]:
        """The socket inodes ``pid`` holds now (read afresh)."""
        out: set[int] = set()
        for link in self.procfs.fd_links(pid):
            if link.startswith("socket:["):
                with contextlib.suppress(ValueError):
                    out.add(int(link[8:-1]))
        return out

    def find_socket(self, inode: int) -> tuple[int, TcpSocket] | None:
        """The namespace and line of a socket inode, searched in every namespace."""
        for ns in [self.own, *self.others] if self.own is not None else self.others:
            for s in self.sockets(ns):
                if s.inode == inode:
                    return ns, s
        return None
