"""Progress of ``loadmem run``: a live status line on a terminal, a heartbeat in CI logs.

- ``StatusLine``: on a terminal, one line on stderr rewritten in place at most once a
  second: phase, elapsed/remaining, request rate, failures, and the recorder's latest tick
  (system available memory, sum RSS and sum PSS of the watched target processes).
- ``Heartbeat``: without a terminal (a CI log would fill with carriage returns), one plain
  line every ``--heartbeat`` seconds (30 s by default): phase, elapsed/remaining, requests/s
  and failures of the last interval, and the change since the recording started of system
  used memory and of sum PSS, so a 10-minute observe phase does not look hung. "Used" is
  the series layer's definition (``loadmem.analysis.series.SystemSeries``), taken from the
  recorder's status lines; nothing here re-defines it.
"""

from __future__ import annotations

import shutil
import time
from typing import IO, Any

from loadmem.units import format_bytes, format_duration


def used_bytes(rec: dict[str, Any] | None) -> float | None:
    """System used memory of one recorder status line, by the series layer's definition."""
    if not rec or rec.get("mem_total") is None or rec.get("mem_available") is None:
        return None
    import numpy as np

    from loadmem.analysis.series import SystemSeries

    series = SystemSeries(np.array([0.0]), np.array([0]), {
        "MemTotal": np.array([float(rec["mem_total"])]),
        "MemAvailable": np.array([float(rec["mem_available"])]),
    })
    value = float(series.get("used")[0])
    return None if value != value else value  # NaN: not measured


def _rate(load: Any) -> tuple[float, int]:
    last = getattr(load, "last_total", None) or {}
    interval = last.get("interval_s") or 0
    return (last.get("requests", 0) / interval if interval else 0.0), int(load.failures)


def heartbeat_text(phase: str, elapsed: float, remaining: float | None,
                   rec: dict[str, Any] | None, first: dict[str, Any] | None, load: Any) -> str:
    """One heartbeat line; pure so it can be tested."""
    head = f"loadmem: {phase} {format_duration(elapsed)}"
    if remaining is not None:
        head += f" ({format_duration(remaining)} left)"
    parts = [head]
    if load is not None and phase == "load":
        rps, fails = _rate(load)
        parts.append(f"{rps:,.0f} req/s, {fails:,} failures")
    elif load is not None:
        parts.append(f"{int(getattr(load, 'requests', 0)):,} requests, "
                     f"{int(load.failures):,} failures in the load")
    a, b = used_bytes(first), used_bytes(rec)
    mem = []
    if a is not None and b is not None:
        mem.append(f"used {format_bytes(b - a, signed=True)}")
    if first and rec and first.get("sum_pss") is not None and rec.get("sum_pss") is not None:
        mem.append(f"sum PSS {format_bytes(rec['sum_pss'] - first['sum_pss'], signed=True)}")
    if mem:
        parts.append(", ".join(mem) + " since the start")
    return " | ".join(parts)


class Heartbeat:
    """Writes ``heartbeat_text`` every ``every`` seconds; a no-op when ``stream`` is None."""

    def __init__(self, stream: IO[str] | None, every: float = 30.0):
        self.stream = stream if every > 0 else None
        self.every = every
        self._next: float | None = None

    def beat(self, phase: str, elapsed: float, remaining: float | None,
             rec: dict[str, Any] | None, first: dict[str, Any] | None, load: Any) -> bool:
        if self.stream is None:
            return False
        now = time.monotonic()
        if self._next is None:
            self._next = now + self.every
            return False
        if now < self._next:
            return False
        self._next += self.every * max(1, int((now - self._next) // self.every) + 1)
        self.stream.write(heartbeat_text(phase, elapsed, remaining, rec, first, load) + "\n")
        self.stream.flush()
        return True


def status_text(phase: str, elapsed: float, remaining: float | None,
                rec: dict[str, Any] | None, load: Any) -> str:
    """The line's text; pure so it can be tested and reused."""
    head = f"{phase} {format_duration(elapsed)}"
    if remaining is not None:
        head += f" ({format_duration(remaining)} left)"
    parts = [head]
    if load is not None and phase == "load":
        last = getattr(load, "last_total", None) or {}
        interval = last.get("interval_s") or 0
        rps = last.get("requests", 0) / interval if interval else 0.0
        parts.append(f"{rps:,.0f} req/s, {load.failures:,} fail, "
                     f"{last.get('users', 0) or 0} users")
    if rec:
        mem = (f"avail {format_bytes(rec.get('mem_available'))}, "
               f"RSS {format_bytes(rec.get('sum_rss'))}, PSS {format_bytes(rec.get('sum_pss'))}")
        if rec.get("processes") is not None:
            mem += f" ({rec['processes']} procs)"
        parts.append(mem)
    return " | ".join(parts)


class StatusLine:
    """Rewrites one terminal line; a no-op when ``stream`` is None."""

    def __init__(self, stream: IO[str] | None, min_interval: float = 1.0):
        self.stream = stream
        self.min_interval = min_interval
        self._last = 0.0
        self._shown = False

    def render(self, phase: str, elapsed: float, remaining: float | None,
               rec: dict[str, Any] | None, load: Any) -> None:
        if self.stream is None:
            return
        now = time.monotonic()
        if now - self._last < self.min_interval:
            return
        self._last = now
        width = shutil.get_terminal_size((100, 20)).columns - 1
        text = status_text(phase, elapsed, remaining, rec, load)[:width]
        self.stream.write("\r" + text.ljust(width))
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self.stream is not None and self._shown:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            self.stream.write("\r" + " " * width + "\r")
            self.stream.flush()
            self._shown = False
