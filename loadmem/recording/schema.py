"""The recording's tables, declared once.

Every table a recording holds is declared here as a pyarrow schema; the writer, the reader,
the docs (``docs/recording-format.md``) and the tests all take their column lists from this
module. Bump ``SCHEMA_VERSION`` when a column changes meaning or is removed; adding a
nullable column keeps the version (readers fill it with nulls for older files).

Units: sizes are bytes (int64), times are seconds (float64) or UTC timestamps (``ts``),
counters are plain integers. ``t`` is seconds since the recording started, on the
machine's monotonic clock, so that ``t`` from different writers of one recording agree.
"""

from __future__ import annotations

import re

import pyarrow as pa

SCHEMA_VERSION = 1

#: A small dictionary-encoded string: names, roles, reasons, phases.
DICT = pa.dictionary(pa.int32(), pa.string())
TS = pa.timestamp("us", tz="UTC")

_COMMON = [
    pa.field("ts", TS, nullable=False),
    pa.field("t", pa.float64(), nullable=False),
    pa.field("tick", pa.int32(), nullable=False),
]

#: smaps_rollup field -> column. Rss and Swap collide with status figures, so they get
#: a ``smaps_`` prefix; the others are their kernel names in snake case.
SMAPS_COLUMNS: dict[str, str] = {
    "Rss": "smaps_rss",
    "Pss": "pss",
    "Pss_Dirty": "pss_dirty",  # kernel >= 6.0
    "Pss_Anon": "pss_anon",  # kernel >= 5.8
    "Pss_File": "pss_file",  # kernel >= 5.8
    "Pss_Shmem": "pss_shmem",  # kernel >= 5.8
    "Shared_Clean": "shared_clean",
    "Shared_Dirty": "shared_dirty",
    "Private_Clean": "private_clean",
    "Private_Dirty": "private_dirty",
    "Referenced": "referenced",
    "Anonymous": "anonymous",
    "KSM": "ksm",  # kernel >= 6.6
    "LazyFree": "lazyfree",
    "AnonHugePages": "anon_huge_pages",
    "ShmemPmdMapped": "shmem_pmd_mapped",
    "FilePmdMapped": "file_pmd_mapped",  # kernel >= 5.4
    "Shared_Hugetlb": "shared_hugetlb",
    "Private_Hugetlb": "private_hugetlb",
    "Swap": "smaps_swap",
    "SwapPss": "swap_pss",
    "Locked": "locked",
}

PROCESS_FIELDS = [
    pa.field("pid", pa.int32(), nullable=False),
    # Clock ticks since boot (field 22 of /proc/PID/stat): with pid, the process identity.
    pa.field("start_time", pa.int64(), nullable=False),
    pa.field("ppid", pa.int32()),
    pa.field("name", DICT),  # comm
    pa.field("cmdline", DICT),  # redacted unless --no-redact
    pa.field("role", DICT),  # "target" | "loadgen" | "proxy"
    pa.field("cgroup", DICT),  # its memory cgroup (read when it started being watched)
    pa.field("depth", pa.int16()),  # 0 = selected process, 1 = its child, ...
    pa.field("state", DICT),  # R, S, D, Z, ...
    pa.field("threads", pa.int32()),
    # cheap tier, every tick: /proc/PID/stat and /proc/PID/status
    pa.field("rss", pa.int64()),  # VmRSS
    pa.field("rss_anon", pa.int64()),  # RssAnon
    pa.field("rss_file", pa.int64()),  # RssFile
    pa.field("rss_shmem", pa.int64()),  # RssShmem
    pa.field("vm_size", pa.int64()),  # VmSize
    pa.field("swap", pa.int64()),  # VmSwap
    pa.field("minflt", pa.int64()),  # cumulative minor faults
    pa.field("majflt", pa.int64()),  # cumulative major faults
    pa.field("utime", pa.float64()),  # cumulative user CPU seconds
    pa.field("stime", pa.float64()),  # cumulative system CPU seconds
    # smaps_rollup tier, budgeted: values from the read at pss_read_t (carried forward when
    # pss_fresh is false; null when never read)
    *[pa.field(col, pa.int64()) for col in SMAPS_COLUMNS.values()],
    pa.field("pss_fresh", pa.bool_()),  # true: read during this tick
    pa.field("pss_read_t", pa.float64()),  # t at which these smaps figures were read
    pa.field("pss_read_us", pa.int32()),  # how long that read took (the stall it imposed)
    # how far PSS may have moved since that read, from what the cheap tier saw (bytes), and
    # how long the figure has gone unconfirmed (0: current; see docs/recorder.md)
    pa.field("pss_drift", pa.int64()),
    pa.field("pss_stale_s", pa.float64()),
    # an estimate, not a figure: the PSS most likely now, from the read and what moved since
    pa.field("pss_est", pa.int64()),
    pa.field("error", DICT),  # why a tier failed on this row: "smaps:access-denied", ...
]

PROCESSES = pa.schema([*_COMMON, *PROCESS_FIELDS])

CGROUP = pa.schema(
    [
        *_COMMON,
        pa.field("cgroup", DICT),  # path under the controller mount
        pa.field("version", pa.int8()),  # 1 or 2
        # "usage", "limit", "effective_limit", "peak", "events.*", "pressure.*" (see
        # loadmem/recorder/cgroup_rows.py) or a memory.stat key as the kernel names it
        pa.field("key", DICT),
        pa.field("value", pa.int64()),  # null when the read failed (error says why)
        pa.field("error", DICT),  # "memory.current:gone", ... ; null when read
    ]
)

RECORDER = pa.schema(
    [
        *_COMMON,
        pa.field("pid", pa.int32()),
        pa.field("cpu_user", pa.float64()),  # cumulative seconds
        pa.field("cpu_system", pa.float64()),  # cumulative seconds
        pa.field("rss", pa.int64()),
        pa.field("pss", pa.int64()),  # the recorder's own PSS, when read
        pa.field("tick_us", pa.int32()),  # wall time this tick's sampling took
        pa.field("cheap_us", pa.int32()),  # of which: cheap tier and process discovery
        pa.field("smaps_reads", pa.int16()),
        pa.field("smaps_us", pa.int32()),  # sum of smaps_rollup read durations this tick
        pa.field("smaps_max_us", pa.int32()),  # longest single read (max stall) this tick
        pa.field("processes", pa.int16()),  # watched processes this tick
        pa.field("pss_oldest_s", pa.float64()),  # age of the oldest smaps_rollup read held
        pa.field("pss_stale_s", pa.float64()),  # longest a PSS figure went unconfirmed
        pa.field("pss_drift", pa.int64()),  # sum of pss_drift: how far sum PSS may be off
        pa.field("budget_s", pa.float64()),  # CPU budget balance after this tick (seconds)
        pa.field("errors", pa.int16()),  # failed reads this tick
        pa.field("lag_s", pa.float64()),  # how late this tick started
        pa.field("missed_ticks", pa.int32()),  # ticks that could not happen just before this one
        pa.field("cpu_children", pa.float64()),  # cumulative CPU of compaction children
    ]
)

EVENTS = pa.schema(
    [
        pa.field("ts", TS, nullable=False),
        pa.field("t", pa.float64(), nullable=False),
        pa.field("kind", DICT, nullable=False),  # see docs/recording-format.md
        pa.field("phase", DICT),  # baseline | load | observe (phase events)
        pa.field("message", pa.string()),
        pa.field("data", pa.string()),  # JSON object
    ]
)

REQUESTS = pa.schema(
    [
        pa.field("ts", TS, nullable=False),
        pa.field("t", pa.float64(), nullable=False),
        pa.field("name", DICT),  # endpoint name; "Aggregated" for the total row
        pa.field("method", DICT),  # "" on the total row
        pa.field("interval_s", pa.float64()),  # length of the interval these counts cover
        pa.field("requests", pa.int32()),  # completed in the interval
        pa.field("failures", pa.int32()),
        pa.field("p50_ms", pa.float64()),  # over the interval's requests
        pa.field("p95_ms", pa.float64()),
        pa.field("p99_ms", pa.float64()),
        pa.field("avg_ms", pa.float64()),
        pa.field("max_ms", pa.float64()),
        pa.field("users", pa.int32()),
    ]
)

#: Per-mapping figures of the ``mappings`` table: smaps field -> column (bytes).
MAPPING_FIGURES: dict[str, str] = {
    "Size": "size",
    "Rss": "rss",
    "Pss": "pss",
    "Pss_Dirty": "pss_dirty",  # kernel >= 6.0
    "Shared_Clean": "shared_clean",
    "Shared_Dirty": "shared_dirty",
    "Private_Clean": "private_clean",
    "Private_Dirty": "private_dirty",
    "Anonymous": "anonymous",
    "AnonHugePages": "anon_huge_pages",
    "Swap": "swap",
    "SwapPss": "swap_pss",
}

#: One row per mapping (resident or swapped) of a target process per mapping snapshot
#: (``/proc/PID/smaps``, read at phase boundaries and on demand; see docs/recorder.md).
MAPPINGS = pa.schema(
    [
        *_COMMON,  # t, tick: when this process's smaps was read
        pa.field("snapshot", pa.int32(), nullable=False),  # round number, from 0
        pa.field("reason", DICT),  # start, baseline_end, load_end, observe_end, every, stop
        pa.field("pid", pa.int32(), nullable=False),
        pa.field("start_time", pa.int64(), nullable=False),
        # identity: (address, size, perms, offset, path); null on an aggregated row
        pa.field("address", pa.uint64()),  # start address (the end is address + size)
        pa.field("perms", DICT),  # rw-p, r-xp, rw-s...
        pa.field("offset", pa.int64()),  # file offset
        pa.field("dev", DICT),  # "fe:00"
        pa.field("inode", pa.int64()),
        pa.field("path", DICT),  # as the kernel prints it: a file, [heap], [stack], "" ...
        pa.field("kind", DICT),  # loadmem.procfs.mapkind: anon, heap, data, stack, shmem...
        pa.field("file", DICT),  # the file the memory belongs to (for a .bss: its program)
        pa.field("mappings", pa.int32()),  # 1, or how many mappings an aggregated row sums
        *[pa.field(col, pa.int64()) for col in MAPPING_FIGURES.values()],
    ]
)

#: One row per target process per mapping snapshot: the read, its cost, the runtime facts.
SNAPSHOTS = pa.schema(
    [
        *_COMMON,
        pa.field("snapshot", pa.int32(), nullable=False),
        pa.field("reason", DICT),
        pa.field("pid", pa.int32(), nullable=False),
        pa.field("start_time", pa.int64(), nullable=False),
        pa.field("ppid", pa.int32()),
        pa.field("depth", pa.int16()),  # as in processes: 0 = a selected process, 1 = its child
        pa.field("exe", DICT),  # the target of /proc/PID/exe
        pa.field("cmdline", DICT),  # as in processes (redacted unless --no-redact)
        pa.field("read_us", pa.int32()),  # the smaps read: the stall imposed on the process
        pa.field("parse_us", pa.int32()),  # parsing, classifying, ELF headers (recorder CPU)
        pa.field("mappings", pa.int32()),  # mappings the process had
        pa.field("rows", pa.int32()),  # rows it got in ``mappings``
        pa.field("rss", pa.int64()),  # sums over its mappings
        pa.field("pss", pa.int64()),
        pa.field("error", DICT),  # smaps:access-denied, smaps:gone, zombie; null when read
    ]
)


#: meminfo key -> column name: "Active(anon)" -> "Active_anon".
def meminfo_column(key: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]+", "_", key).strip("_")


def system_schema(meminfo_keys: list[str]) -> pa.Schema:
    """The system table: one row per tick, one int64 column per /proc/meminfo field."""
    return pa.schema([*_COMMON, *[pa.field(meminfo_column(k), pa.int64()) for k in meminfo_keys]])


#: Table name -> fixed schema (``system`` depends on the kernel's meminfo fields).
FIXED_TABLES: dict[str, pa.Schema] = {
    "processes": PROCESSES,
    "cgroup": CGROUP,
    "recorder": RECORDER,
    "events": EVENTS,
    "requests": REQUESTS,
    "mappings": MAPPINGS,
    "snapshots": SNAPSHOTS,
}
TABLES = ("system", *FIXED_TABLES)

#: Event kinds the project writes (the ``kind`` column of ``events``).
EVENT_KINDS = {
    "recording_start": "the recorder started; data: selection, interval, budget",
    "recording_stop": "the recorder stopped; data: reason (duration, signal, stop)",
    "phase_start": "a phase began; phase: baseline | load | observe",
    "phase_end": "a phase ended; phase as above",
    "process_start": "a watched process appeared; data: pid, start_time, ppid, role",
    "process_exit": "a watched process vanished; data: pid, start_time",
    "warning": "something the reader should know (permission denied, budget exhausted)",
    "snapshot_start": "a mapping snapshot began; data: snapshot, reason, processes",
    "snapshot_end": "a mapping snapshot ended; data: snapshot, reason, read, failed, seconds",
    "gap": "ticks that could not happen; data: missed, from_t, to_t, cause (recorder | host)",
    "load_stats": "final Locust totals at the end of load; data: JSON of the totals",
    "load_ended_by_scenario": "a listener ended the load (runner.quit()); data: elapsed_s",
    "load_failed": "the load failed as Locust decides it; data: exit_code, errors",
    "note": "free text, e.g. attached from another machine",
}
