"""The live status line of ``loadmem run``: one line on stderr, rewritten in place.

Shown only on a terminal (a log file or CI output would fill with carriage returns), at most
once a second: phase, elapsed/remaining, request rate, failures, and the recorder's latest
tick (system available memory, sum RSS and sum PSS of the watched target processes).
"""

from __future__ import annotations

import shutil
import time
from typing import IO, Any

from loadmem.units import format_bytes, format_duration


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
