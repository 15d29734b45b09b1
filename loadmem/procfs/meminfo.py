"""``/proc/meminfo``: every field, in bytes.

All fields are kept (the set varies by kernel version and config), in file order. Values
with a ``kB`` unit are converted to bytes; ``HugePages_Total/Free/Rsvd/Surp`` carry no
unit (they are page counts) and are kept as-is.
"""

from __future__ import annotations

import re

_LINE = re.compile(r"^([^:\n]+):[ \t]*(\d+)( kB)?[ \t]*$", re.MULTILINE)


def parse_meminfo(text: str) -> dict[str, int]:
    """``{"MemTotal": 16777216000, ..., "HugePages_Total": 0, ...}`` in file order.

    One regular-expression pass: it runs every tick."""
    return {
        key.strip(): int(value) * 1024 if kb else int(value)
        for key, value, kb in _LINE.findall(text)
    }
