"""``/proc/net/tcp`` and ``/proc/net/tcp6``: which socket inodes listen on a TCP port.

A line: ``sl local_address rem_address st ... uid timeout inode ...`` with addresses as
``HEXIP:HEXPORT`` and ``st`` the TCP state in hex (``0A`` = LISTEN). The inode links a
socket to the processes holding it (``/proc/PID/fd/N -> socket:[INODE]``).
"""

from __future__ import annotations

TCP_LISTEN = "0A"


def parse_listening_inodes(text: str, port: int) -> set[int]:
    """Inodes of the sockets listening on ``port`` (any local address)."""
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
