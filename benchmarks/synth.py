"""Synthesise a long recording: the benchmark input for ``loadmem analyze`` and the plots.

``synthesise(path, hours=24, processes=100, interval=1.0) -> Path`` writes a complete
recording directory with the real schema (``loadmem.recording.schema``), the writer's Parquet
settings and file metadata, and ``meta.json``: one pre-forking service (a master and
``processes - 1`` workers) through a baseline (10 min), a load phase (1 h) and an observe phase
(the rest) during which every worker slowly unshares its inherited pages (copy-on-write), plus
a little page-cache growth, noise on every figure, PSS read every 15 s per process (carried
forward in between, as the recorder writes it), the recorder's own rows, phase events and
per-second request statistics during the load.

Everything is built with numpy over whole columns, one hour of rows at a time, and written as
one ``processes.parquet`` with a row group per hour, so synthesising 8.6 M process rows takes
seconds and a few hundred MB.

    python benchmarks/synth.py /tmp/synth-24h --hours 24 --processes 100
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from loadmem import __version__
from loadmem.recording import schema
from loadmem.recording.writer import COMPRESSION, _file_metadata, _write_parquet, write_meta

MiB = 1 << 20
GiB = 1 << 30
MEMINFO_KEYS = [
    "MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached", "SwapCached", "Active",
    "Inactive", "Active(anon)", "Inactive(anon)", "Active(file)", "Inactive(file)",
    "Unevictable", "Mlocked", "SwapTotal", "SwapFree", "Dirty", "Writeback", "AnonPages",
    "Mapped", "Shmem", "KReclaimable", "Slab", "SReclaimable", "SUnreclaim", "KernelStack",
    "PageTables", "CommitLimit", "Committed_AS", "VmallocTotal", "VmallocUsed", "AnonHugePages",
    "ShmemHugePages", "HugePages_Total", "HugePages_Free", "Hugepagesize",
]
BASELINE_S = 600.0
LOAD_S = 3600.0
PSS_EVERY = 15  # ticks between two smaps_rollup reads of one process
SHARED = 100 * MiB  # inherited from the master, per process
OWN = 20 * MiB  # each process's own private memory
UNSHARE_FRACTION = 0.5  # share of SHARED each worker has copied by the end
SEED = 1234


def _ts(start: dt.datetime, t: np.ndarray) -> pa.Array:
    us = int(start.timestamp() * 1e6) + (t * 1e6).astype(np.int64)
    return pa.array(us, type=pa.int64()).cast(schema.TS)


def _unshared(t: np.ndarray, duration: float) -> np.ndarray:
    """Bytes each worker has copied at time t: zero before observe, then linear."""
    obs = BASELINE_S + LOAD_S
    frac = np.clip((t - obs) / max(duration - obs, 1.0), 0.0, 1.0) * UNSHARE_FRACTION
    return frac * SHARED


def _table(columns: dict[str, object], sch: pa.Schema, n: int) -> pa.Table:
    arrays = []
    for f in sch:
        v = columns.get(f.name)
        if v is None:
            arrays.append(pa.nulls(n, f.type))
        elif isinstance(v, pa.Array):
            arrays.append(v.cast(f.type))
        else:
            arrays.append(pa.array(v).cast(f.type))
    return pa.Table.from_arrays(arrays, schema=sch)


def synthesise(path: str | Path, hours: float = 24, processes: int = 100,
               interval: float = 1.0) -> Path:
    """Write the recording; return its directory."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    n_ticks = max(int(hours * 3600 / interval), 10)
    duration = n_ticks * interval
    t_all = np.arange(n_ticks) * interval
    workers = processes - 1
    pids = np.arange(processes, dtype=np.int64) + 4000
    start_times = np.full(processes, 123456, dtype=np.int64)
    u_all = _unshared(t_all, duration)
    pss_total = processes * OWN + SHARED + workers * u_all  # see the docstring maths
    write_meta(root, {
        "status": "complete", "kind": "synthetic", "schema_version": schema.SCHEMA_VERSION,
        "loadmem_version": __version__, "interval": interval, "start_monotonic": 0.0,
        "start_epoch": start.timestamp(), "label": f"synth-{hours:g}h-{processes}p",
        "hostname": "synth", "page_size": 4096, "clock_ticks": 100,
    })

    # system: one row per tick
    total = 24 * GiB
    cached = 3 * GiB + 200 * MiB * (t_all / duration) + rng.normal(0, 2 * MiB, n_ticks)
    used = 2 * GiB + pss_total + rng.normal(0, 4 * MiB, n_ticks)
    avail = total - used
    sysc = {k: np.full(n_ticks, 0.0) for k in MEMINFO_KEYS}
    sysc.update({
        "MemTotal": np.full(n_ticks, float(total)), "MemAvailable": avail,
        "MemFree": avail - cached, "Cached": cached, "Buffers": np.full(n_ticks, 64.0 * MiB),
        "AnonPages": 1 * GiB + pss_total + rng.normal(0, 2 * MiB, n_ticks),
        "Shmem": np.full(n_ticks, 50.0 * MiB), "SReclaimable": np.full(n_ticks, 300.0 * MiB),
        "SUnreclaim": np.full(n_ticks, 150.0 * MiB), "PageTables": np.full(n_ticks, 40.0 * MiB),
        "KernelStack": np.full(n_ticks, 12.0 * MiB), "Committed_AS": np.full(n_ticks, 8.0 * GiB),
        "SwapTotal": np.zeros(n_ticks), "SwapFree": np.zeros(n_ticks),
        "Hugepagesize": np.full(n_ticks, 2048.0 * 1024),
    })
    sys_schema = schema.system_schema(MEMINFO_KEYS)
    cols: dict[str, object] = {"ts": _ts(start, t_all), "t": t_all,
                               "tick": np.arange(n_ticks, dtype=np.int32)}
    cols.update({schema.meminfo_column(k): sysc[k].astype(np.int64) for k in MEMINFO_KEYS})
    _write_parquet(_table(cols, sys_schema, n_ticks), root / "system.parquet", "system")

    # processes: one row per process per tick, written an hour of ticks at a time
    per_chunk = max(int(3600 / interval), 1)
    writer = pq.ParquetWriter(root / "processes.parquet",
                              schema.PROCESSES.with_metadata(_file_metadata("processes")),
                              compression=COMPRESSION, use_dictionary=True)
    names = pa.array(["synth-master"] + ["synth-worker"] * workers)
    is_worker = np.arange(processes) > 0
    try:
        for c0 in range(0, n_ticks, per_chunk):
            ticks = np.arange(c0, min(c0 + per_chunk, n_ticks), dtype=np.int64)
            k = len(ticks)
            tick = np.repeat(ticks, processes)
            p = np.tile(np.arange(processes), k)
            t = tick * interval + 0.001 * p  # a tick's reads spread over a few ms
            n = len(tick)
            # PSS read every PSS_EVERY ticks per process, staggered; carried forward between
            read_tick = np.maximum(tick - (tick + p) % PSS_EVERY, 0)
            u = _unshared(read_tick * interval, duration)
            wk = is_worker[p]
            sharers = 1 + workers  # pages not yet copied are shared by everyone
            rss = (OWN + SHARED + rng.normal(0, 64 * 1024, n)).astype(np.int64)
            pss = OWN + u + (SHARED - u) / sharers
            shared_dirty = SHARED - u
            private_dirty = OWN + u
            fresh = (tick + p) % PSS_EVERY == 0
            cols = {
                "ts": _ts(start, t), "t": t, "tick": tick.astype(np.int32),
                "pid": pids[p].astype(np.int32), "start_time": start_times[p],
                "ppid": np.where(wk, pids[0], 1).astype(np.int32),
                "name": names.take(pa.array(p)),
                "cmdline": pa.array(np.where(wk, "synth worker", "synth master")),
                "role": pa.array(np.full(n, "target")), "depth": wk.astype(np.int16),
                "state": pa.array(np.full(n, "S")), "threads": np.ones(n, np.int32),
                "rss": rss, "rss_anon": rss - 4 * MiB, "rss_file": np.full(n, 4 * MiB),
                "rss_shmem": np.zeros(n, np.int64), "vm_size": np.full(n, 600 * MiB),
                "swap": np.zeros(n, np.int64), "minflt": tick * 10, "majflt": np.zeros(n),
                "utime": tick * 0.01, "stime": tick * 0.002,
                "smaps_rss": np.full(n, OWN + SHARED, np.int64), "pss": pss.astype(np.int64),
                "pss_anon": (pss - 2 * MiB).astype(np.int64), "pss_file": np.full(n, 2 * MiB),
                "pss_shmem": np.zeros(n, np.int64), "pss_dirty": pss.astype(np.int64),
                "shared_clean": np.zeros(n, np.int64),
                "shared_dirty": shared_dirty.astype(np.int64),
                "private_clean": np.zeros(n, np.int64),
                "private_dirty": private_dirty.astype(np.int64),
                "anonymous": np.full(n, OWN + SHARED, np.int64),
                "pss_fresh": fresh, "pss_read_t": read_tick * interval,
                "pss_read_us": np.where(fresh, 1500, 0).astype(np.int32),
            }
            writer.write_table(_table(cols, schema.PROCESSES, n))
    finally:
        writer.close()

    # recorder: one row per tick
    rec_cols = {
        "ts": _ts(start, t_all), "t": t_all, "tick": np.arange(n_ticks, dtype=np.int32),
        "pid": np.full(n_ticks, 999, np.int32), "cpu_user": t_all * 0.004,
        "cpu_system": t_all * 0.006, "rss": np.full(n_ticks, 60 * MiB, np.int64),
        "tick_us": np.full(n_ticks, 3000, np.int32),
        "smaps_reads": np.full(n_ticks, processes // PSS_EVERY, np.int16),
        "smaps_max_us": rng.integers(1000, 4000, n_ticks).astype(np.int32),
        "processes": np.full(n_ticks, processes, np.int16),
    }
    _write_parquet(_table(rec_cols, schema.RECORDER, n_ticks), root / "recorder.parquet",
                   "recorder")

    # events: recording and phase boundaries
    obs0 = BASELINE_S + LOAD_S
    ev = [("recording_start", None, 0.0), ("phase_start", "baseline", 0.0),
          ("phase_end", "baseline", BASELINE_S), ("phase_start", "load", BASELINE_S),
          ("phase_end", "load", obs0), ("phase_start", "observe", obs0),
          ("phase_end", "observe", duration - interval), ("recording_stop", None, duration)]
    ev = [e for e in ev if e[2] <= duration]
    et = np.array([e[2] for e in ev])
    _write_parquet(_table({
        "ts": _ts(start, et), "t": et, "kind": pa.array([e[0] for e in ev]),
        "phase": pa.array([e[1] for e in ev], pa.string()),
        "data": pa.array([json.dumps({}) for _ in ev]),
    }, schema.EVENTS, len(ev)), root / "events.parquet", "events")

    # requests: an Aggregated row per second of load
    rt = np.arange(BASELINE_S + 1, min(obs0, duration) + 1)
    m = len(rt)
    if m:
        _write_parquet(_table({
            "ts": _ts(start, rt), "t": rt, "name": pa.array(np.full(m, "Aggregated")),
            "method": pa.array(np.full(m, "")), "interval_s": np.ones(m),
            "requests": rng.poisson(900, m).astype(np.int32),
            "failures": rng.poisson(1, m).astype(np.int32),
            "p50_ms": rng.normal(8, 0.5, m), "p95_ms": rng.normal(20, 1, m),
            "p99_ms": rng.normal(35, 2, m), "avg_ms": rng.normal(9, 0.5, m),
            "max_ms": rng.normal(60, 5, m), "users": np.full(m, 50, np.int32),
        }, schema.REQUESTS, m), root / "requests.parquet", "requests")
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--hours", type=float, default=24)
    ap.add_argument("--processes", type=int, default=100)
    ap.add_argument("--interval", type=float, default=1.0)
    a = ap.parse_args()
    t0 = time.perf_counter()
    p = synthesise(a.out, a.hours, a.processes, a.interval)
    print(f"{p}: {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
