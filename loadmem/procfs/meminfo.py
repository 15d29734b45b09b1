"""``/proc/meminfo``: every field, in bytes.

All fields are kept (the set varies by kernel version and config), in file order. Values
with a ``kB`` unit are converted to bytes; ``HugePages_Total/Free/Rsvd/Surp`` carry no
unit (they are page counts) and are kept as-is.

``parse_meminfo`` reads one file whole. A recorder reading the file every tick uses
``MeminfoLayout``: the names and units of a kernel's fields do not change while it runs,
so after the first read only the numbers are taken, in file order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE = re.compile(r"^([^:\n]+):[ \t]*(\d+)( kB)?[ \t]*$", re.MULTILINE)
_VALUE = re.compile(r":[ \t]*(\d+)")


def parse_meminfo(text: str) -> dict[str, int]:
    """``{"MemTotal": 16777216000, ..., "HugePages_Total": 0, ...}`` in file order."""
    return {
        key.strip(): int(value) * 1024 if kb else int(value)
        for key, value, kb in _LINE.findall(text)
    }


@dataclass(frozen=True)
class MeminfoLayout:
    """The field names of one kernel's ``/proc/meminfo``, in file order, and each one's
    factor to bytes (1024 for ``kB``, 1 for page counts)."""

    keys: tuple[str, ...]
    factors: tuple[int, ...]

    @classmethod
    def of(cls, text: str) -> MeminfoLayout:
        lines = _LINE.findall(text)
        return cls(tuple(k.strip() for k, _, _ in lines), tuple(1024 if kb else 1
                                                                for _, _, kb in lines))

    def values(self, text: str) -> list[int] | None:
        """The numbers of ``text`` in bytes, in the order of ``keys``; None when the file
        does not have this layout's number of fields (take a new layout)."""
        raw = _VALUE.findall(text)
        if len(raw) != len(self.factors):
            return None
        return [int(v) * f for v, f in zip(raw, self.factors, strict=True)]
