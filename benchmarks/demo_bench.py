"""Measure the demo server: table build, copy-on-write drain per variant, and request rate.

For each variant: start the server (``--table-mb``, ``--workers``), record the table's
build time and RSS from its ready line, send a little traffic, wait until every worker has
run its idle ``gc.collect()``, and read ``/proc/PID/smaps_rollup`` of master and workers
before and after (Private_Dirty per worker, group PSS, sum RSS). Then, on a fresh server,
drive ``scenarios/demo.py`` with one headless Locust process (loopback only) and report
its aggregated request rate and p99. Prints a Markdown table.

    python benchmarks/demo_bench.py                      # 100 MiB, 4 workers, 10 s of load
    python benchmarks/demo_bench.py --table-mb 24 --workers 2 --seconds 5
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from loadmem.demo.launch import DemoServer, start_demo
from loadmem.procfs.reader import ProcFS
from loadmem.procfs.smaps_rollup import parse_smaps_rollup

REPO = Path(__file__).resolve().parent.parent
LOCUST = Path(sys.executable).with_name("locust")
MIB = float(1 << 20)


def rollup(pid: int) -> dict[str, float]:
    """smaps_rollup fields in MiB, through the recorder's own reader and parser."""
    fields = parse_smaps_rollup(ProcFS().read_pid(pid, "smaps_rollup"))
    return {k: v / MIB for k, v in fields.items()}


def housekept(log: Path) -> set[str]:
    return set(re.findall(r"worker (\d+) \(pid \d+\): idle housekeeping", log.read_text()))


def drain(variant: str, table_mb: float, workers: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "demo.log"
        with start_demo(
            workers=workers,
            table_mb=table_mb,
            variant=variant,
            idle_gc_after=1.0,
            idle_gc_stagger=0.5,
            log_path=log,
        ) as server:
            group = [server.pid, *server.workers]
            before = {p: rollup(p) for p in group}
            deadline = time.monotonic() + 120
            while len(housekept(log)) < workers and time.monotonic() < deadline:
                for _ in range(4 * workers):
                    with urllib.request.urlopen(server.url + "/api/items", timeout=5) as r:
                        r.read()
                time.sleep(1.0 + 0.5 * workers + table_mb / 100)
            after = {p: rollup(p) for p in group}
            gc_seconds = [float(x) for x in re.findall(r"took ([\d.]+) s", log.read_text())]

    def total(snap: dict[int, dict[str, float]], key: str, pids: list[int]) -> float:
        return sum(snap[p][key] for p in pids)

    w = server.workers
    return {
        "table_rss_mb": server.ready["table_rss_mb"],
        "build_seconds": server.ready["build_seconds"],
        "entries": server.ready["table_entries"],
        "private_dirty_per_worker": (
            total(after, "Private_Dirty", w) - total(before, "Private_Dirty", w)
        )
        / workers,
        "group_pss_growth": total(after, "Pss", group) - total(before, "Pss", group),
        "sum_rss_before": total(before, "Rss", group),
        "sum_rss_growth": total(after, "Rss", group) - total(before, "Rss", group),
        "gc_seconds": max(gc_seconds, default=float("nan")),
    }


def no_wait_copy(directory: Path) -> Path:
    """scenarios/demo.py with ``wait_time = constant(0)``: the server's capacity, not the mix."""
    text = (REPO / "scenarios" / "demo.py").read_text()
    text = text.replace("wait_time = between(0.001, 0.01)", "wait_time = constant(0)")
    text = text.replace("import FastHttpUser, between,", "import FastHttpUser, between, constant,")
    assert "constant(0)" in text and "between, constant," in text, "demo.py changed: update me"
    path = directory / "demo_no_wait.py"
    path.write_text(text)
    return path


def locust_rate(
    server: DemoServer, seconds: int, users: int, scenario: Path | None = None
) -> dict[str, float]:
    scenario = scenario or REPO / "scenarios" / "demo.py"
    proc = subprocess.run(
        [str(LOCUST), "--headless", "-f", str(scenario), "--host", server.url,
         "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--json", "--only-summary",
         "--loglevel", "WARNING"],
        capture_output=True, text=True, timeout=seconds + 120, check=True,
    )  # fmt: skip
    stats = [s for s in json.loads(proc.stdout) if s["num_requests"]]
    requests = sum(s["num_requests"] for s in stats)
    failures = sum(s["num_failures"] for s in stats)
    elapsed = max(s["last_request_timestamp"] for s in stats) - min(s["start_time"] for s in stats)
    merged: dict[str, int] = {}
    for entry in stats:
        for ms, count in entry["response_times"].items():
            merged[ms] = merged.get(ms, 0) + count
    p99 = percentile(merged, 0.99)
    return {"requests": requests, "failures": failures, "rps": requests / elapsed, "p99": p99}


def percentile(histogram: dict[str, int], q: float) -> float:
    """Locust's JSON keeps a histogram {rounded ms: count}; read a percentile off it."""
    hist = sorted((float(k), v) for k, v in histogram.items())
    target, seen = q * sum(v for _, v in hist), 0
    for ms, count in hist:
        seen += count
        if seen >= target:
            return ms
    return hist[-1][0] if hist else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table-mb", type=float, default=100)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--seconds", type=int, default=10, help="length of the Locust run")
    p.add_argument("--users", type=int, default=20)
    args = p.parse_args()

    rows = []
    started = time.monotonic()
    for variant in ("default", "frozen"):
        d = drain(variant, args.table_mb, args.workers)
        with (
            start_demo(workers=args.workers, table_mb=args.table_mb, variant=variant) as s,
            tempfile.TemporaryDirectory() as tmp,
        ):
            r = locust_rate(s, args.seconds, args.users)
            r_max = locust_rate(s, args.seconds, args.users, no_wait_copy(Path(tmp)))
        rows.append((variant, d, r, r_max))

    print(
        f"demo server, {args.workers} workers, --table-mb {args.table_mb:g}; "
        f"Locust: scenarios/demo.py, 1 process, {args.users} users, {args.seconds} s\n"
    )
    print(
        "| variant | entries | table RSS MiB | build s | full gc s | unshared MiB/worker "
        "(Private_Dirty) | group PSS growth MiB | sum RSS MiB (growth) | req/s demo.py "
        "(p99 ms) | req/s no wait (p99 ms) | failures |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for variant, d, r, m in rows:
        print(
            f"| {variant} | {d['entries']} | {d['table_rss_mb']:.1f} | {d['build_seconds']:.2f} "
            f"| {d['gc_seconds']:.3f} | {d['private_dirty_per_worker']:.1f} "
            f"| {d['group_pss_growth']:.1f} | {d['sum_rss_before']:.0f} "
            f"({d['sum_rss_growth']:+.1f}) | {r['rps']:.0f} ({r['p99']:.0f}) "
            f"| {m['rps']:.0f} ({m['p99']:.0f}) | {r['failures'] + m['failures']} |"
        )
    with open("/proc/loadavg") as f:
        print(
            f"\nload average at the end: {' '.join(f.read().split()[:3])}; "
            f"took {time.monotonic() - started:.0f} s"
        )
    base = rows[0][1]["group_pss_growth"]
    if base > 0:
        print(f"\nfrozen growth / default growth: {rows[1][1]['group_pss_growth'] / base:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
