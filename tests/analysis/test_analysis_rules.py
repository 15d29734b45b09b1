"""Detector rules for the kernel-side mechanisms the corpus cannot provoke safely on a shared
2-core CI machine (slab, page tables, swap, huge pages), plus page cache and shmem, on small
system-only recordings written with the real ``TableWriter`` and schema.

Each recording starts from this machine's own /proc/meminfo, has a quiet baseline phase and an
observe phase during which one kernel figure ramps; the matching finding must fire with the
documented severity, and no other attribution may claim the change.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from loadmem.analysis import analyze
from loadmem.recording import schema
from loadmem.recording.writer import TableWriter, write_meta

MiB = 1 << 20
N, BASE = 60, 15  # ticks in all, of which baseline
INTERVAL = 0.5


def _meminfo() -> dict[str, int]:
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        out[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    out.setdefault("SwapTotal", 0)
    return out


def _recording(path: Path, ramps: dict[str, float], offsets: dict[str, float]) -> Path:
    """Write a recording whose meminfo ``ramps`` change linearly over the observe phase
    (``offsets`` are added throughout, e.g. swap for a machine without any)."""
    base = _meminfo()
    for k, v in offsets.items():
        base[k] = base.get(k, 0) + int(v)
    keys = list(base)
    rng = np.random.default_rng(7)
    write_meta(path, {"status": "complete", "schema_version": schema.SCHEMA_VERSION,
                      "start_monotonic": 0.0, "interval_s": INTERVAL})
    w = TableWriter(path, "system", schema.system_schema(keys))
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for i in range(N):
        frac = max(0.0, (i - BASE) / (N - 1 - BASE))
        row: dict[str, object] = {"ts": t0 + dt.timedelta(seconds=i * INTERVAL),
                                  "t": i * INTERVAL, "tick": i}
        for k in keys:
            v = base[k] + ramps.get(k, 0.0) * frac
            if k in ("MemFree", "MemAvailable", "Cached", "AnonPages"):
                v += rng.normal(0, 256 * 1024)  # a little noise where the kernel has some
            row[schema.meminfo_column(k)] = int(v)
        w.append(row)
    w.close()
    ev = TableWriter(path, "events", schema.EVENTS)
    for kind, phase, t in (("phase_start", "baseline", 0.0),
                           ("phase_end", "baseline", BASE * INTERVAL),
                           ("phase_start", "observe", BASE * INTERVAL),
                           ("phase_end", "observe", (N - 1) * INTERVAL)):
        ev.append({"ts": t0 + dt.timedelta(seconds=t), "t": t, "kind": kind, "phase": phase})
    ev.close()
    return path


CASES = {
    "slab-unreclaimable": ({"SUnreclaim": 300 * MiB, "Slab": 300 * MiB,
                            "MemAvailable": -300 * MiB, "MemFree": -300 * MiB},
                           "kernel-slab", "warning"),
    "slab-reclaimable": ({"SReclaimable": 100 * MiB, "Slab": 100 * MiB, "MemFree": -100 * MiB},
                         "kernel-slab", "info"),
    "threads": ({"KernelStack": 32 * MiB, "MemAvailable": -32 * MiB, "MemFree": -32 * MiB},
                "page-tables", "info"),
    "page-tables": ({"PageTables": 300 * MiB, "MemAvailable": -300 * MiB,
                     "MemFree": -300 * MiB}, "page-tables", "warning"),
    "swap-out": ({"SwapFree": -64 * MiB, "MemAvailable": 64 * MiB}, "swap", "warning"),
    "huge-pages": ({"AnonHugePages": 64 * MiB, "AnonPages": 64 * MiB,
                    "MemAvailable": -64 * MiB, "MemFree": -64 * MiB}, "huge-pages", "info"),
    "tmpfs": ({"Shmem": 200 * MiB, "Cached": 200 * MiB, "MemAvailable": -200 * MiB,
               "MemFree": -200 * MiB}, "shmem", "warning"),
    "page-cache": ({"Cached": 100 * MiB, "MemFree": -100 * MiB}, "page-cache", "info"),
}
KERNEL_SIDE = ("kernel-slab", "page-tables", "swap", "huge-pages", "shmem", "page-cache")


@pytest.mark.parametrize("case", list(CASES))
def test_kernel_side_rule(tmp_path: Path, case: str) -> None:
    ramps, expected, severity = CASES[case]
    offsets = {"SwapTotal": 4 << 30, "SwapFree": 4 << 30}  # swap available in every case
    a = analyze(_recording(tmp_path / case, ramps, offsets))
    f = a.finding(expected)
    assert f is not None, (case, a.headline)
    assert f.severity == severity, f.statement
    assert "MB" in f.statement
    others = [g.id for g in a.findings if g.id in KERNEL_SIDE and g.id != expected
              and g.severity != "ok"]
    assert others == [], (case, others)
    assert a.finding("cow-unsharing") is None and a.finding("rss-growth") is None
