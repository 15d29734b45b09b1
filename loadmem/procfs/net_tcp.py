"""``/proc/net/tcp``, ``/proc/net/tcp6`` and ``/proc/net/fib_trie``: TCP sockets of one
network namespace, and its local IPv4 addresses.

A ``tcp`` line: ``sl local_address rem_address st ... uid timeout inode ...`` with addresses
as ``HEXIP:HEXPORT`` and ``st`` the TCP state in hex (``0A`` = LISTEN, ``01`` =
ESTABLISHED). The IP is the kernel's ``__be32`` words printed as host-order hex, so on a
little-endian machine ``0100007F`` is 127.0.0.1; an IPv6 address is four such words. The
inode links a socket to the processes holding it (``/proc/PID/fd/N -> socket:[INODE]``); a
connection still in a listener's accept queue has inode 0.

``/proc/PID/net/...`` shows the files of PID's network namespace; ``/proc/net/...`` those of
the reader's.
"""

from __future__ import annotations

import ipaddress
import sys
from dataclasses import dataclass

TCP_LISTEN = "0A"
TCP_ESTABLISHED = "01"


@dataclass(frozen=True, slots=True)
class TcpSocket:
    """One line of ``net/tcp{,6}``. Addresses are text (``127.0.0.1``, ``::1``); an
    IPv4-mapped IPv6 address (``::ffff:10.0.0.2``, a dual-stack socket's IPv4 peer) is
    given as its IPv4 form, so both ends of one connection compare equal."""

    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    state: str  # hex, as the kernel prints it: "0A" listen, "01" established
    inode: int

    @property
    def listening(self) -> bool:
        return self.state == TCP_LISTEN

    @property
    def established(self) -> bool:
        return self.state == TCP_ESTABLISHED

    @property
    def local(self) -> tuple[str, int]:
        return self.local_ip, self.local_port

    @property
    def remote(self) -> tuple[str, int]:
        return self.remote_ip, self.remote_port


def _ip(hexip: str) -> str:
    raw = bytes.fromhex(hexip)
    # each 32-bit word is printed in host order
    if sys.byteorder == "little":
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw))
    v6 = ipaddress.IPv6Address(raw)
    return str(v6.ipv4_mapped) if v6.ipv4_mapped is not None else str(v6)


def _endpoint(text: str) -> tuple[str, int]:
    hexip, _, hexport = text.rpartition(":")
    return _ip(hexip), int(hexport, 16)


def parse_tcp_sockets(text: str) -> list[TcpSocket]:
    """Every socket of a ``net/tcp`` or ``net/tcp6`` file; malformed lines are skipped."""
    out: list[TcpSocket] = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 10:
            continue
        try:
            lip, lport = _endpoint(f[1])
            rip, rport = _endpoint(f[2])
            out.append(TcpSocket(lip, lport, rip, rport, f[3], int(f[9])))
        except ValueError:
            continue
    return out


def parse_listening_inodes(text: str, port: int) -> set[int]:
    """Inodes of the sockets listening on ``port`` (any local address). Cheaper than
    ``parse_tcp_sockets``: no address is decoded (the recorder re-checks this every 5 s)."""
    out: set[int] = set()
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 10 or f[3] != TCP_LISTEN:
            continue
        _, _, hexport = f[1].rpartition(":")
        try:
            if int(hexport, 16) == port:
                out.add(int(f[9]))
        except ValueError:
            continue
    return out


def parse_fib_trie_local(text: str) -> set[str]:
    """The IPv4 addresses ``/proc/net/fib_trie`` marks ``host LOCAL``: the addresses of the
    namespace's own interfaces. A leaf is ``|-- 10.0.0.2`` followed by lines such as
    ``/32 host LOCAL``."""
    local: set[str] = set()
    leaf: str | None = None
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("|-- "):
            leaf = s[4:].strip()
        elif leaf is not None and s.startswith("/") and s.endswith("host LOCAL"):
            local.add(leaf)
    return local


def parse_if_inet6(text: str) -> set[str]:
    """The IPv6 addresses of ``/proc/net/if_inet6`` (``ADDR32HEX IFINDEX PLEN SCOPE FLAGS
    NAME`` per line; the address is in network order)."""
    out: set[str] = set()
    for line in text.splitlines():
        f = line.split()
        if f and len(f[0]) == 32:
            try:
                out.add(str(ipaddress.IPv6Address(bytes.fromhex(f[0]))))
            except ValueError:
                continue
    return out
