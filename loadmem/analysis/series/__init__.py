"""The series layer: the only place that turns a recording's tables into memory series.

Every figure loadmem prints about memory is built here or from what this builds: the per-tick
system series (``used = MemTotal - MemAvailable`` is defined once, in ``definitions``), the
per-tick sums over the watched processes (the load generator and the recorder apart), PSS
coverage, process lifetimes (a process is ``(pid, start_time)``: appear, exit, respawn) and,
for each window, sums over a fixed set of processes with the ones that appeared or exited
listed apart. The analysis, the plot, the report, ``loadmem ls``, the run summary, the gates
and ``loadmem compare`` (and its noise estimate) read from here.

    from loadmem.analysis.series import build, read_system
    s = build(rec, windows=[Window("observe", 40.0, 100.0)])
    s.system.get("used"), s.processes.watched.get("pss"), s.processes.windows["observe"]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from loadmem.analysis.model import Window
from loadmem.analysis.series.definitions import (
    CHEAP_SUMS,
    GROUPS,
    PROCESS_SUMS,
    ROLE_LOADGEN,
    ROLE_TARGET,
    SMAPS_SUMS,
    SYSTEM_COLUMNS,
    SYSTEM_DERIVED,
    file_cache,
    identity,
    process_value,
    system_columns_for,
    used,
)
from loadmem.analysis.series.processes import Lifecycle, ProcessSeries, Sums, read_processes
from loadmem.analysis.series.system import (
    SystemSeries,
    index_at,
    index_range,
    read_system,
    tick_at,
    to_float,
)
from loadmem.recording.reader import Recording


@dataclass
class Coverage:
    """How many watched processes had smaps_rollup (PSS) figures, and from when."""

    processes_end: int  # watched processes at the last sample
    with_smaps_end: int  # of which with PSS figures
    full_from_s: float | None  # from when every watched process had them, to the end

    def sentence(self) -> str:
        """``PSS for 101 of 101 processes from 7.0s``."""
        from loadmem.units import format_duration

        text = f"PSS for {self.with_smaps_end} of {self.processes_end} processes"
        if self.full_from_s is not None and self.with_smaps_end == self.processes_end:
            text += f" from {format_duration(self.full_from_s)}"
        return text


def coverage(system: SystemSeries, sums: Sums) -> Coverage:
    """PSS coverage of a set's per-tick sums (aligned with the whole system series)."""
    count, smaps = sums.count, sums.smaps_count
    present = count > 0
    last = np.flatnonzero(present)
    i = int(last[-1]) if len(last) else None
    full_from = None
    if i is not None and smaps[i] >= count[i]:  # full at the end: since when, for good
        gaps = np.flatnonzero(present[: i + 1] & (smaps[: i + 1] < count[: i + 1]))
        first = int(gaps[-1]) + 1 if len(gaps) else int(last[0])
        full_from = float(system.t[sums.start + first])
    return Coverage(
        processes_end=int(count[i]) if i is not None else 0,
        with_smaps_end=int(smaps[i]) if i is not None else 0,
        full_from_s=full_from,
    )


@dataclass
class RecordingSeries:
    """The series of one recording: system-wide and per process."""

    system: SystemSeries
    processes: ProcessSeries

    @property
    def coverage(self) -> Coverage:
        return coverage(self.system, self.processes.watched)


def build(
    rec: Recording,
    windows: Sequence[Window] = (),
    checkpoint_times: Sequence[float] = (),
    system: SystemSeries | None = None,
) -> RecordingSeries:
    """Read the system table and stream the processes table once. ``windows`` get a fixed
    set and a lifecycle each; ``checkpoint_times`` keep every process's row at the sample at
    or before each time (``ProcessSeries.snapshots``)."""
    system = system if system is not None else read_system(rec)
    ticks = [tick_at(system, t) for t in checkpoint_times] if len(system) else []
    procs = read_processes(rec, system, windows, ticks)
    return RecordingSeries(system=system, processes=procs)


__all__ = [
    "CHEAP_SUMS",
    "GROUPS",
    "PROCESS_SUMS",
    "ROLE_LOADGEN",
    "ROLE_TARGET",
    "SMAPS_SUMS",
    "SYSTEM_COLUMNS",
    "SYSTEM_DERIVED",
    "Coverage",
    "Lifecycle",
    "ProcessSeries",
    "RecordingSeries",
    "Sums",
    "SystemSeries",
    "build",
    "coverage",
    "file_cache",
    "identity",
    "index_at",
    "index_range",
    "process_value",
    "read_processes",
    "read_system",
    "system_columns_for",
    "tick_at",
    "to_float",
    "used",
]
