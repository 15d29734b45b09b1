"""Per-mapping snapshots: what a read of /proc/PID/smaps costs, and what snapshots cost the
recorder at its defaults.

Part 1, the read: processes with a given resident size (one bytearray, 4-KiB pages) and
processes with a given number of mappings (alternately writable and read-only pages, so the
kernel cannot merge them). For each, the median over ``--reads`` reads of

- ``smaps_rollup`` (the recorder's PSS read, for scale),
- ``smaps`` (the snapshot's read: the page walk, the stall the process sees),
- parsing, classifying and building the rows (``MappingSnapshots.snapshot_process``),

reported per GiB resident and per mapping.

Part 2, the recorder: a parent touches SIZE of memory and forks N idle workers (sharing it
copy-on-write, as a pre-fork server does). ``loadmem record --pid PARENT`` runs at its
defaults (interval 1 s, PSS budget 2 %, max age 15 s) for ``--window`` seconds three ways,
one after the other: ``--no-mappings``; the defaults (a snapshot at the start and at the
stop); and ``--mappings-every`` (``--every``, default 60 s). Reported: the recorder's CPU
per second over the window after the start snapshot (from its own ``recorder`` table), how
long each snapshot took to get through the budget, the longest stall (``read_us``), the
oldest PSS figure, the budget-exhausted warnings, and the ``mappings`` table's size (rows
per process per snapshot, bytes per row, merged file).

Run (about 25 minutes at the defaults; up to 1.3 GiB of memory; keep the machine quiet)::

    .venv/bin/python benchmarks/bench_mappings.py                 # 4 x 1 GiB, 64 x 256 MiB
    .venv/bin/python benchmarks/bench_mappings.py --quick --no-write   # a 2-minute smoke test

Results go to ``benchmarks/RESULTS-mappings.md`` (unless ``--no-write``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from machine import machine_lines, publish  # noqa: E402

from loadmem.procfs.reader import ProcFS  # noqa: E402
from loadmem.recorder.mappings import MappingSnapshots  # noqa: E402
from loadmem.recording import open_recording  # noqa: E402

RESULTS = HERE / "RESULTS-mappings.md"
MIB = 1 << 20
GIB = 1 << 30

#: A process holding SIZE bytes resident, or N mappings; prints "ready" and waits.
HOLDER = textwrap.dedent(
    """
    import ctypes, mmap, os, signal, sys
    signal.alarm(int(sys.argv[3]))
    kind, n = sys.argv[1], int(sys.argv[2])
    if kind == "size":
        buf = bytearray(n)
        buf[::4096] = b"\\x01" * len(range(0, n, 4096))
    else:  # n mappings: 2n pages, every other one read-only, so no two merge
        libc = ctypes.CDLL(None, use_errno=True)
        m = mmap.mmap(-1, 2 * n * 4096)
        m[::4096] = b"\\x01" * (2 * n)
        base = ctypes.addressof(ctypes.c_char.from_buffer(m))
        for i in range(1, 2 * n, 2):
            libc.mprotect(ctypes.c_void_p(base + i * 4096), 4096, 1)
    print("ready", flush=True)
    signal.pause()
    """
)

#: A parent touching SIZE, forking N idle workers; prints the pids.
PREFORK = textwrap.dedent(
    """
    import os, signal, sys
    size, workers, life = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    signal.alarm(life)
    buf = bytearray(size)
    buf[::4096] = b"\\x01" * len(range(0, size, 4096))
    pids = [os.getpid()]
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            signal.alarm(life)
            while True:
                signal.pause()
        pids.append(pid)
    print(" ".join(map(str, pids)), flush=True)
    while True:
        signal.pause()
    """
)


@dataclass(frozen=True)
class _W:
    pid: int
    start_time: int
    role: str = "target"


def _start_time(pid: int) -> int:
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text[text.rindex(")") + 2:].split()[19])


def _timed_read(path: str) -> float:
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        while f.read(1 << 16):
            pass
    return (time.perf_counter() - t0) * 1e6


def measure_read(kind: str, n: int, reads: int) -> dict[str, float]:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, kind, str(n), "600"],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        pid = p.pid
        rollup = statistics.median(_timed_read(f"/proc/{pid}/smaps_rollup") for _ in range(reads))
        smaps = statistics.median(_timed_read(f"/proc/{pid}/smaps") for _ in range(reads))
        snaps = MappingSnapshots(ProcFS())
        got = []
        for i in range(reads):
            got.append(snaps.snapshot_process(pid, _start_time(pid), i, "bench"))
            snaps.take()
        status = Path(f"/proc/{pid}/status").read_text()
        rss = int(status.split("VmRSS:")[1].split()[0]) * 1024
    finally:
        p.kill()
        p.wait()
    ok = [g for g in got if g is not None]
    return {"rss": rss, "mappings": statistics.median(g.mappings for g in ok),
            "rows": statistics.median(g.rows for g in ok), "rollup_us": rollup,
            "smaps_us": smaps, "read_us": statistics.median(g.read_us for g in ok),
            "parse_us": statistics.median(g.parse_us for g in ok)}


def part1(args: argparse.Namespace) -> list[str]:
    sizes = [16 * MIB, 64 * MIB] if args.quick else [64 * MIB, 256 * MIB, GIB]
    counts = [100, 1000] if args.quick else [100, 1000, 10000]
    out = ["| process | resident | mappings | smaps_rollup read (µs) | smaps read (µs) | "
           "parse + classify + rows (µs) | rows |", "|---|---|---|---|---|---|---|"]
    per_gib, per_map_read, per_map_parse = [], [], []
    for size in sizes:
        r = measure_read("size", size, args.reads)
        print(f"size {size >> 20} MiB: {r}", flush=True)
        out.append(f"| one {size >> 20} MiB buffer | {r['rss'] / MIB:.0f} MiB | "
                   f"{r['mappings']:.0f} | {r['rollup_us']:.0f} | {r['read_us']:.0f} | "
                   f"{r['parse_us']:.0f} | {r['rows']:.0f} |")
        if size >= 64 * MIB:
            per_gib.append(r["read_us"] / (r["rss"] / GIB))
    for n in counts:
        r = measure_read("maps", n, args.reads)
        print(f"{n} mappings: {r}", flush=True)
        out.append(f"| {2 * n} small mappings | {r['rss'] / MIB:.0f} MiB | {r['mappings']:.0f} | "
                   f"{r['rollup_us']:.0f} | {r['read_us']:.0f} | {r['parse_us']:.0f} | "
                   f"{r['rows']:.0f} |")
        if n >= 1000:
            per_map_read.append(r["read_us"] / r["mappings"])
            per_map_parse.append(r["parse_us"] / r["mappings"])
    out += ["", f"- smaps read: **{statistics.median(per_gib):.0f} µs per GiB resident** "
                "(the page walk; the process's mmap lock is held meanwhile), "
                f"**{statistics.median(per_map_read):.1f} µs per mapping** (rendering)",
            f"- recorder CPU on top: **{statistics.median(per_map_parse):.1f} µs per mapping** "
            "(parse, classify, rows)"]
    return out


def _record(out: Path, parent: int, window: float, *extra: str) -> dict[str, object]:
    cmd = [sys.executable, "-m", "loadmem", "record", "--pid", str(parent), "--out", str(out),
           "--duration", f"{window}s", *extra]
    subprocess.run(cmd, check=True, capture_output=True, timeout=window + 600)
    rec = open_recording(out)
    r = rec.table("recorder").to_pylist()
    snaps = rec.table("snapshots").to_pylist()
    ends = [e["data"] for e in rec.events("snapshot_end")]
    first_end_t = min((e["t"] for e in rec.events("snapshot_end")), default=0.0)
    rows = [x for x in r if x["t"] >= first_end_t + 1.0]
    cpu = (rows[-1]["cpu_user"] + rows[-1]["cpu_system"] - rows[0]["cpu_user"]
           - rows[0]["cpu_system"]) / (rows[-1]["t"] - rows[0]["t"])
    warnings = [e for e in rec.events("warning")
                if e["data"].get("reason") == "budget-exhausted"]
    mfile = out / "mappings.parquet"
    mrows = rec.table("mappings").num_rows
    return {
        "cpu_pct": 100 * cpu,
        "rounds": [(d["reason"], d["seconds"]) for d in ends],
        "max_read_us": max((s["read_us"] or 0 for s in snaps), default=0),
        "median_read_us": statistics.median([s["read_us"] for s in snaps if s["read_us"]] or [0]),
        "median_parse_us": statistics.median([s["parse_us"] for s in snaps if s["parse_us"]]
                                             or [0]),
        "pss_oldest_s": max((x["pss_oldest_s"] or 0 for x in rows), default=0),
        "budget_warnings": len(warnings),
        # a snapshot's CPU: its reads (kernel time) and the parse, per round
        "round_cpu_ms": sum((s["read_us"] or 0) + (s["parse_us"] or 0) for s in snaps)
        / 1000 / max(len(ends), 1),
        "life_cpu_s": rec.meta.get("recorder_cpu_s"),
        "mapping_rows": mrows,
        "rows_per_process_snapshot": mrows / max(len(snaps), 1),
        "mappings_bytes": mfile.stat().st_size if mfile.exists() else 0,
    }


def part2(args: argparse.Namespace) -> list[str]:
    sets = ([(4, 32 * MIB), (16, 16 * MIB)] if args.quick else [(4, GIB), (64, 256 * MIB)])
    window = min(args.window, 40.0) if args.quick else args.window
    every = 15.0 if args.quick else args.every
    out = ["| process set | snapshots | recorder CPU (% of a core) | snapshot durations (s) | "
           "CPU per snapshot (ms) | longest stall (ms) | median read / parse (ms) | "
           "oldest PSS (s) | budget warnings | rows per process per snapshot | "
           "mappings.parquet |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for workers, size in sets:
        p = subprocess.Popen([sys.executable, "-c", PREFORK, str(size), str(workers),
                              str(int(3 * window + 900))], stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
        try:
            assert p.stdout is not None
            parent = int(p.stdout.readline().split()[0])
            for label, extra in (("none (--no-mappings)", ("--no-mappings",)),
                                 ("start + stop (defaults)", ()),
                                 (f"every {every:g} s", ("--mappings-every", f"{every}s"))):
                with tempfile.TemporaryDirectory(prefix="bench-mappings-") as d:
                    r = _record(Path(d) / "rec", parent, window, *extra)
                print(f"{workers} x {size >> 20} MiB, {label}: {json.dumps(r)}", flush=True)
                rounds = ", ".join(f"{reason} {s:.1f}" for reason, s in r["rounds"]) or "-"
                out.append(
                    f"| {workers + 1} processes ({workers} workers) x {size >> 20} MiB | {label} | "
                    f"{r['cpu_pct']:.2f} | {rounds} | {r['round_cpu_ms']:.0f} | "
                    f"{r['max_read_us'] / 1000:.1f} | "
                    f"{r['median_read_us'] / 1000:.1f} / {r['median_parse_us'] / 1000:.1f} | "
                    f"{r['pss_oldest_s']:.1f} | {r['budget_warnings']} | "
                    f"{r['rows_per_process_snapshot']:.0f} | {r['mappings_bytes']} B |")
        finally:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reads", type=int, default=15, help="reads per process in part 1")
    ap.add_argument("--window", type=float, default=240.0, help="seconds per recording")
    ap.add_argument("--every", type=float, default=60.0, help="--mappings-every of the third")
    ap.add_argument("--quick", action="store_true", help="small sizes, short windows")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    t0 = time.time()
    window = min(args.window, 40.0) if args.quick else args.window
    p1 = part1(args)
    p2 = part2(args)
    text = "\n".join([
        "## Per-mapping snapshots: the smaps read and the recorder with snapshots on", "",
        f"Generated by `benchmarks/bench_mappings.py{' --quick' if args.quick else ''}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        f"(total run time {time.time() - t0:.0f} s).", "", "### Machine", "", *machine_lines(), "",
        "### The read", "", *p1, "",
        "### The recorder at its defaults with snapshots on", "",
        f"`loadmem record --pid PARENT --duration {window:g}s` "
        "(interval 1 s, PSS budget 2 %, max age 15 s), the parent's memory shared by its "
        "idle workers. CPU over the window after the start snapshot ended.", "", *p2, "",
    ])
    publish(text, RESULTS, write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
