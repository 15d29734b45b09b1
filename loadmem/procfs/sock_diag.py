"""TCP listening sockets of the reader's network namespace, from the kernel's ``sock_diag``
netlink interface (what ``ss -ltn`` uses) instead of ``/proc/net/tcp``.

Why: reading ``/proc/net/tcp`` (or ``tcp6``) walks the whole established-connections hash
table, however few sockets there are: about 12 ms per file on a 24 GiB machine, whose
table has 262,144 buckets. A dump of listening sockets only (``idiag_states`` = LISTEN)
walks the listening table alone: about 0.06 ms. The recorder re-checks the listeners on
``--port`` every few seconds, so this is the difference between 0.5 % of a core and
nothing. The stdlib ``socket`` module speaks netlink; the messages are a few fixed
structures (``linux/inet_diag.h``), packed here with ``struct``.

Another network namespace is asked through a netlink socket made inside it: a short-lived
thread enters the namespace (``setns``, root only), makes the socket and ends; the socket
stays in that namespace. ``parse_diag_messages`` is the pure part (tested on captured
bytes); the I/O functions return None where netlink or ``setns`` is not available (the
caller falls back to ``/proc/PID/net/tcp``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import socket
import struct
import threading

from loadmem.procfs.net_tcp import TcpSocket

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
TCP_LISTEN = 10
_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_MSG = struct.Struct("=BBBB")  # inet_diag_msg: family, state, timer, retrans
#: inet_diag_sockid: sport, dport (network order), src[16], dst[16], if, cookie[2]
_SOCKID = struct.Struct("!HH16s16s")
_INODE_AT = 4 + 48 + 16  # after family..retrans, the sockid, expires/rqueue/wqueue/uid


def request(family: int, states: int, seq: int = 1) -> bytes:
    """A dump request for TCP sockets of ``family`` in ``states`` (a bit mask)."""
    body = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, states) + bytes(48)
    return _HDR.pack(_HDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP,
                     seq, 0) + body


def _addr(family: int, raw: bytes) -> str:
    if family == socket.AF_INET:
        return str(ipaddress.IPv4Address(raw[:4]))
    v6 = ipaddress.IPv6Address(raw)
    return str(v6.ipv4_mapped) if v6.ipv4_mapped is not None else str(v6)


def parse_diag_messages(data: bytes) -> tuple[list[TcpSocket], bool]:
    """The sockets in one ``recv`` of a dump, and whether the dump is done. An error
    message raises ``OSError`` with its errno."""
    out: list[TcpSocket] = []
    off = 0
    while off + _HDR.size <= len(data):
        length, kind, _, _, _ = _HDR.unpack_from(data, off)
        if length < _HDR.size:
            break
        if kind == NLMSG_DONE:
            return out, True
        if kind == NLMSG_ERROR:
            err = -struct.unpack_from("=i", data, off + _HDR.size)[0]
            raise OSError(err, "sock_diag dump failed")
        if kind == SOCK_DIAG_BY_FAMILY and length >= _HDR.size + _INODE_AT + 4:
            body = off + _HDR.size
            family, state, _, _ = _MSG.unpack_from(data, body)
            sport, dport, src, dst = _SOCKID.unpack_from(data, body + 4)
            inode = struct.unpack_from("=I", data, body + _INODE_AT)[0]
            out.append(TcpSocket(_addr(family, src), sport, _addr(family, dst), dport,
                                 f"{state:02X}", inode))
        off += (length + 3) & ~3
    return out, False


CLONE_NEWNET = 0x40000000


def _diag_socket(netns: str | None) -> socket.socket | None:
    """A sock_diag socket in this network namespace, or in the one at path ``netns``
    (``/proc/PID/ns/net``)."""
    if netns is None:
        try:
            return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
        except (OSError, AttributeError):
            return None
    made: list[socket.socket] = []

    def enter() -> None:  # on its own thread: setns changes the calling thread only
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    return
            finally:
                os.close(fd)
            made.append(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG))
        except (OSError, AttributeError):
            return

    t = threading.Thread(target=enter, name="loadmem-netns", daemon=True)
    t.start()
    t.join()
    return made[0] if made else None


def tcp_sockets(states: int, netns: str | None = None) -> list[TcpSocket] | None:
    """IPv4 and IPv6 TCP sockets in ``states`` (a bit mask of TCP states) of this network
    namespace or of the one at path ``netns``; None when sock_diag cannot be used."""
    out: list[TcpSocket] = []
    sock = _diag_socket(netns)
    if sock is None:
        return None
    with contextlib.closing(sock):
        try:
            for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), 1):
                sock.send(request(family, states, seq))
                done = False
                while not done:
                    got, done = parse_diag_messages(sock.recv(1 << 16))
                    out += got
        except OSError:
            return None
    return out


def tcp_listeners(netns: str | None = None) -> list[TcpSocket] | None:
    """The listening TCP sockets of this (or ``netns``'s) network namespace (None: not
    available)."""
    return tcp_sockets(1 << TCP_LISTEN, netns)


#: Every TCP state: what a full dump asks for.
ALL_STATES = 0xFFF
