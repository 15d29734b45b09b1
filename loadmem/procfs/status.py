"""``/proc/PID/status``: the resident-set split and swap, without walking page tables.

``VmRSS = RssAnon + RssFile + RssShmem`` (the split needs kernel >= 4.5). A zombie or a
kernel thread has no ``Vm*``/``Rss*`` lines: those fields are ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass

_KB_FIELDS = {
    "VmRSS": "rss",
    "RssAnon": "rss_anon",  # kernel >= 4.5
    "RssFile": "rss_file",  # kernel >= 4.5
    "RssShmem": "rss_shmem",  # kernel >= 4.5
    "VmSwap": "swap",  # kernel >= 2.6.34
    "VmSize": "vm_size",
}


@dataclass(frozen=True, slots=True)
class ProcStatus:
    name: str | None = None
    state: str | None = None  # the letter only
    ppid: int | None = None
    uid: int | None = None  # real uid
    threads: int | None = None
    rss: int | None = None  # bytes
    rss_anon: int | None = None
    rss_file: int | None = None
    rss_shmem: int | None = None
    swap: int | None = None
    vm_size: int | None = None


def parse_status(text: str) -> ProcStatus:
    values: dict[str, object] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if not sep:
            continue
        col = _KB_FIELDS.get(key)
        if col is not None:
            parts = rest.split()
            if parts:
                values[col] = int(parts[0]) * 1024
        elif key == "Name":
            values["name"] = rest.strip()
        elif key == "State":
            values["state"] = rest.split()[0] if rest.split() else None
        elif key == "PPid":
            values["ppid"] = int(rest)
        elif key == "Uid":
            values["uid"] = int(rest.split()[0])
        elif key == "Threads":
            values["threads"] = int(rest)
    return ProcStatus(**values)  # type: ignore[arg-type]
