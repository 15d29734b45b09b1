"""The one parser for durations and sizes, and the one formatter for bytes.

Every command takes durations as ``90``, ``90s``, ``0.5s``, ``1m30s``, ``5m``, ``2h``, ``1d``
(a bare number is seconds) and sizes as ``512M``, ``2G``, ``1.5GiB``, ``4096`` (a bare
number is bytes; K/M/G/T are binary multiples, 1K = 1024). Inside, everything is seconds
(float) and bytes (int).
"""

from __future__ import annotations

import argparse
import math
import re

from loadmem.errors import LoadmemError

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgtp]?)(i?b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_duration(text: str | float | int) -> float:
    """Parse a duration into seconds: ``90``, ``90s``, ``0.5s``, ``5m``, ``1h30m``, ``2h``."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        s = text.strip().replace(" ", "")
        if not s:
            raise LoadmemError("empty duration", "write it as 90, 90s, 0.5s, 5m or 2h")
        pos, value, last_unit = 0, 0.0, "?"
        while pos < len(s):
            m = _DURATION_PART.match(s, pos)
            if not m or (m.group(2) is None and m.end() != len(s)):
                raise LoadmemError(
                    f"invalid duration {text!r}", "write it as 90, 90s, 0.5s, 5m, 1h30m or 2h"
                )
            unit = m.group(2).lower() if m.group(2) else None
            if unit is None and last_unit != "?":
                raise LoadmemError(
                    f"invalid duration {text!r}: a number without a unit must stand alone",
                    "write it as 90, 90s, 0.5s, 5m, 1h30m or 2h",
                )
            value += float(m.group(1)) * _DURATION_UNITS[unit]
            last_unit = unit or ""
            pos = m.end()
    if not math.isfinite(value) or value < 0:
        raise LoadmemError(f"invalid duration {text!r}: must be zero or more")
    return value


def parse_size(text: str | int) -> int:
    """Parse a size into bytes: ``512M``, ``2G``, ``1.5GiB``, ``64k``, ``4096`` (bytes)."""
    if isinstance(text, int):
        value = text
    else:
        m = _SIZE.match(text)
        if not m:
            raise LoadmemError(
                f"invalid size {text!r}", "write it as 4096, 64K, 512M, 2G or 1.5GiB"
            )
        value = int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    if value < 0:
        raise LoadmemError(f"invalid size {text!r}: must be zero or more")
    return value


def parse_percent(text: str | float) -> float:
    """Parse ``10%``, ``10`` or ``0.1``-style percentages into a fraction (10% -> 0.10)."""
    s = str(text).strip()
    try:
        if s.endswith("%"):
            return float(s[:-1]) / 100.0
        v = float(s)
    except ValueError:
        raise LoadmemError(f"invalid percentage {text!r}", "write it as 10% or 2.5%") from None
    return v / 100.0 if v > 1 else v


def format_bytes(n: float | int | None, signed: bool = False) -> str:
    """Human size with the unit chosen by magnitude: ``512 B``, ``3.2 MB``, ``1.25 GB``.

    MB here means MiB (2**20 bytes), as ``free -m`` and ``top`` show them.
    """
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "n/a"
    sign = ("+" if n > 0 else "-" if n < 0 else "") if signed else ("-" if n < 0 else "")
    a = abs(float(n))
    for unit, scale in (("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if a >= scale:
            v = a / scale
            digits = 2 if v < 10 else 1 if v < 100 else 0
            return f"{sign}{v:.{digits}f} {unit}"
    return f"{sign}{a:.0f} B"


def format_duration(seconds: float | None) -> str:
    """``45s``, ``2m05s``, ``3h10m``, ``2d4h``."""
    if seconds is None or math.isnan(seconds):
        return "n/a"
    s = abs(seconds)
    sign = "-" if seconds < 0 else ""
    if s < 10:
        return f"{sign}{s:.1f}s"
    if s < 60:
        return f"{sign}{s:.0f}s"
    if s < 3600:
        m, r = divmod(round(s), 60)
        return f"{sign}{m}m{r:02d}s"
    if s < 86400:
        h, r = divmod(round(s), 3600)
        return f"{sign}{h}h{r // 60:02d}m"
    d, r = divmod(round(s), 86400)
    return f"{sign}{d}d{r // 3600}h"


# argparse adapters: argparse shows "invalid duration value" plus our message on bad input.
def duration_arg(text: str) -> float:
    try:
        return parse_duration(text)
    except LoadmemError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except LoadmemError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def percent_arg(text: str) -> float:
    try:
        return parse_percent(text)
    except LoadmemError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
