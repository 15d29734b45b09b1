"""``/proc/meminfo``: every field, in bytes.

All fields are kept (the set varies by kernel version and config), in file order. Values
with a ``kB`` unit are converted to bytes; ``HugePages_Total/Free/Rsvd/Surp`` carry no
unit (they are page counts) and are kept as-is.
"""

from __future__ import annotations


def parse_meminfo(text: str) -> dict[str, int]:
    """``{"MemTotal": 16777216000, ..., "HugePages_Total": 0, ...}`` in file order."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if not sep:
            continue
        parts = rest.split()
        if not parts:
            continue
        try:
            value = int(parts[0])
        except ValueError:
            continue
        if len(parts) > 1 and parts[1] == "kB":
            value *= 1024
        out[key.strip()] = value
    return out
