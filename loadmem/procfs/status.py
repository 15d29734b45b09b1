"""``/proc/PID/status``: the resident-set split and swap, without walking page tables.

``VmRSS = RssAnon + RssFile + RssShmem`` (the split needs kernel >= 4.5). A zombie or a
kernel thread has no ``Vm*``/``Rss*`` lines: those fields are ``None``. Identity, state,
parent and threads come from ``/proc/PID/stat`` (``loadmem.procfs.stat``), which the
recorder reads anyway, so they are not parsed here twice.
"""

from __future__ import annotations

from dataclasses import dataclass

#: ``Key:`` of a line in kB -> field. Each is looked up as ``"\nKey:"``: none is the
#: first line (``Name:``), so every one follows a newline.
_KB_FIELDS = {
    "VmSize": "vm_size",
    "VmRSS": "rss",
    "RssAnon": "rss_anon",  # kernel >= 4.5
    "RssFile": "rss_file",  # kernel >= 4.5
    "RssShmem": "rss_shmem",  # kernel >= 4.5
    "VmSwap": "swap",  # kernel >= 2.6.34
}
_NEEDLES = tuple((f"\n{key}:", col) for key, col in _KB_FIELDS.items())


@dataclass(frozen=True, slots=True)
class ProcStatus:
    rss: int | None = None  # bytes
    rss_anon: int | None = None
    rss_file: int | None = None
    rss_shmem: int | None = None
    swap: int | None = None
    vm_size: int | None = None


def parse_status(text: str) -> ProcStatus:
    """The fields above, in bytes. It runs for every watched process every tick, so each
    key is found with ``str.find`` (a quarter of the CPU of a regular-expression pass over
    all fifty-odd lines)."""
    values: dict[str, int] = {}
    for needle, col in _NEEDLES:
        i = text.find(needle)
        if i >= 0:
            i += len(needle)
            end = text.find("\n", i)
            values[col] = int(text[i:end if end >= 0 else None].split()[0]) * 1024
    return ProcStatus(**values)
