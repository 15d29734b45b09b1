"""``/proc/PID/status``: the resident-set split and swap, without walking page tables.

``VmRSS = RssAnon + RssFile + RssShmem`` (the split needs kernel >= 4.5). A zombie or a
kernel thread has no ``Vm*``/``Rss*`` lines: those fields are ``None``.
"""

from __future__ import annotations

import re
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


_LINE = re.compile(
    r"^(Name|State|PPid|Uid|Threads|VmRSS|RssAnon|RssFile|RssShmem|VmSwap|VmSize):[ \t]*(\S*)",
    re.MULTILINE,
)


def parse_status(text: str) -> ProcStatus:
    """Only the fields above; one regular-expression pass, as it runs for every watched
    process every tick."""
    values: dict[str, object] = {}
    for key, value in _LINE.findall(text):
        col = _KB_FIELDS.get(key)
        if col is not None:
            values[col] = int(value) * 1024
        elif key == "Name":
            values["name"] = value
        elif key == "State":
            values["state"] = value or None
        elif key == "PPid":
            values["ppid"] = int(value)
        elif key == "Uid":
            values["uid"] = int(value)
        elif key == "Threads":
            values["threads"] = int(value)
    return ProcStatus(**values)  # type: ignore[arg-type]
