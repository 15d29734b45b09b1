"""``/proc/PID/smaps_rollup`` (kernel >= 4.14): the sum of every smaps field over all mappings.

The first line is the ``[rollup]`` pseudo-mapping header; every other line is
``Name:   N kB``. A zombie or a kernel thread has no address space: the file is empty and
the parser returns an empty dict (the caller decides what that means).
"""

from __future__ import annotations

from loadmem.recording.schema import SMAPS_COLUMNS


def parse_smaps_rollup(text: str) -> dict[str, int]:
    """Field name -> bytes, for every ``Name: N kB`` line (unknown future fields included)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if not sep or " " in key:  # the header line "5600...-7fff... ---p ... [rollup]"
            continue
        parts = rest.split()
        if len(parts) >= 1 and parts[0].isdigit():
            value = int(parts[0])
            if len(parts) > 1 and parts[1] == "kB":
                value *= 1024
            out[key] = value
    return out


def smaps_columns(fields: dict[str, int]) -> dict[str, int | None]:
    """Map parsed fields to the ``processes`` table columns; ``None`` when the kernel lacks
    one (``Pss_Dirty`` needs 6.0, ``Pss_Anon/File/Shmem`` 5.8, ``KSM`` 6.6)."""
    return {col: fields.get(name) for name, col in SMAPS_COLUMNS.items()}
