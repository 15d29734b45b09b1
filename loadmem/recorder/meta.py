"""``meta.json``: what a reader needs to interpret a recording, written before the first tick.

It holds the host, kernel, page size, clock ticks, boot time, the start on both clocks
(``start_epoch`` for wall time, ``start_monotonic`` so that other writers, such as the run
orchestrator, compute the same ``t``), the sampling settings, the selection, the loadmem
and schema versions and the redacted command line. Environment variables are never stored.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
import time
from typing import Any

from loadmem import __version__
from loadmem.recording.schema import SCHEMA_VERSION


def boot_time(proc_root: str = "/proc") -> float | None:
    """Boot time as a Unix epoch (``btime`` in ``/proc/stat``)."""
    try:
        with open(f"{proc_root}/stat") as f:
            for line in f:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def build_meta(
    *,
    start_epoch: float,
    start_monotonic: float,
    interval: float,
    flush: float,
    pss_budget: float,
    pss_max_age: float,
    duration: float | None,
    selection: dict[str, Any],
    argv: list[str],
    label: str | None,
    redacted: bool,
) -> dict[str, Any]:
    u = os.uname()
    return {
        "schema_version": SCHEMA_VERSION,
        "loadmem_version": __version__,
        "status": "recording",
        "writer": "loadmem record",
        "host": socket.gethostname(),
        "kernel": u.release,
        "machine": u.machine,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "page_size": os.sysconf("SC_PAGE_SIZE"),
        "clk_tck": os.sysconf("SC_CLK_TCK"),
        "boot_time": boot_time(),
        "start_epoch": start_epoch,
        "start_monotonic": start_monotonic,
        "start_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start_epoch)),
        "interval_s": interval,
        "flush_s": flush,
        "pss_budget": pss_budget,
        "pss_max_age_s": pss_max_age,
        "duration_s": duration,
        "selection": selection,
        "argv": argv,
        "argv_redacted": redacted,
        "label": label,
        "recorder_pid": os.getpid(),
        "executable": sys.executable,
    }
