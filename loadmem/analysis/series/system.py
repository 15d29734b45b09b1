"""System-wide series: one sample per recorder tick from the ``system`` table (/proc/meminfo)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loadmem.analysis.series.definitions import SYSTEM_COLUMNS, SYSTEM_DERIVED
from loadmem.recording.reader import Recording


def to_float(col: pa.Array | pa.ChunkedArray, fill: float = np.nan) -> np.ndarray:
    """A numeric column as float64, nulls as ``fill`` (zero-copy when it has none)."""
    if col.null_count == 0 and (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        return np.asarray(col.to_numpy(), dtype=np.float64)
    if not pa.types.is_floating(col.type):
        col = pc.cast(col, pa.float64())
    return np.asarray(pc.fill_null(col, fill).to_numpy(zero_copy_only=False), dtype=np.float64)


@dataclass
class SystemSeries:
    """``t`` (s), ``tick`` and meminfo columns (bytes, NaN where absent), in time order."""

    t: np.ndarray
    tick: np.ndarray
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.t)

    def get(self, name: str) -> np.ndarray:
        """A meminfo column or a derived series (``used``, ``file_cache``, ``swap_used``,
        ``slab``: ``definitions.SYSTEM_DERIVED``); all NaN when the recording lacks it."""
        if name in self.columns:
            return self.columns[name]
        if name in SYSTEM_DERIVED:
            return SYSTEM_DERIVED[name][1](self.columns) if self.columns else np.full(
                len(self.t), np.nan)
        return np.full(len(self.t), np.nan)

    def index_of_tick(self) -> np.ndarray:
        """tick -> index into the series (-1 for ticks without a system sample)."""
        size = int(self.tick.max()) + 1 if len(self.tick) else 0
        out = np.full(max(size, 0), -1, dtype=np.int64)
        ok = self.tick >= 0
        out[self.tick[ok]] = np.flatnonzero(ok)
        return out


def read_system(rec: Recording, columns: Sequence[str] | None = None) -> SystemSeries:
    """The system table as series; ``columns`` limits the meminfo columns read (the few
    that ``loadmem ls`` needs, say), default ``SYSTEM_COLUMNS``."""
    wanted = list(SYSTEM_COLUMNS if columns is None else columns)
    table = rec.table("system")
    if table.num_rows == 0 or "t" not in table.column_names:
        return SystemSeries(np.array([]), np.array([], dtype=np.int64), {})
    t = np.asarray(table.column("t").to_numpy(), dtype=np.float64)
    if "tick" in table.column_names:
        tick = to_float(table.column("tick"), -1).astype(np.int64)
    else:
        tick = np.arange(len(t), dtype=np.int64)
    cols = {c: to_float(table.column(c)) for c in wanted if c in table.column_names}
    return SystemSeries(t=t, tick=tick, columns=cols)


def index_range(system: SystemSeries, t0: float, t1: float) -> slice:
    """System samples from the last one at or before ``t0`` (the state when the window
    opens) to the last one at or before ``t1``."""
    a = max(int(np.searchsorted(system.t, t0, side="right")) - 1, 0)
    b = int(np.searchsorted(system.t, t1, side="right"))
    return slice(a, b)


def index_at(system: SystemSeries, t: float) -> int:
    """Index of the last system sample at or before ``t`` (the first one if none)."""
    i = int(np.searchsorted(system.t, t, side="right")) - 1
    return min(max(i, 0), len(system.t) - 1)


def tick_at(system: SystemSeries, t: float) -> int:
    """Recorder tick of the last system sample at or before ``t`` (the first one if none)."""
    return int(system.tick[index_at(system, t)])
