"""Benchmark: ``loadmem analyze`` on 24 h × 1 Hz × 100 processes must take <= 5 s and
<= 1 GiB peak RSS.

Synthesises the recording once (``benchmarks/synth.py``, 8.64 M process rows), then runs the
analysis ROUNDS times, each in a fresh subprocess that measures its own wall time and peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, which includes the imports). Prints one line
per round and a summary; exits 1 if the median round misses a target.

    .venv/bin/python benchmarks/bench_analyze.py [--hours 24] [--processes 100] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synth import synthesise

TIME_LIMIT_S = 5.0
RSS_LIMIT = 1 << 30

CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
from loadmem.analysis import analyze
a = analyze(sys.argv[1])
wall = time.perf_counter() - t0
r = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall_s": wall, "cpu_s": r.ru_utime + r.ru_stime,
                  "max_rss_bytes": r.ru_maxrss * 1024, "severity": a.severity,
                  "findings": [f.id for f in a.findings]}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=float, default=24)
    ap.add_argument("--processes", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--recording", type=Path, help="reuse this synthesised recording")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="loadmem-bench-") as tmp:
        rec = a.recording
        if rec is None or not (rec / "meta.json").exists():
            rec = rec or Path(tmp) / "synth"
            t0 = time.perf_counter()
            synthesise(rec, hours=a.hours, processes=a.processes)
            print(f"synthesised {rec} in {time.perf_counter() - t0:.1f} s")
        size = sum(p.stat().st_size for p in rec.rglob("*") if p.is_file())
        print(f"recording: {a.hours:g} h x {a.processes} processes, {size / 2**20:.0f} MiB")
        results = []
        for i in range(a.rounds):
            out = subprocess.run([sys.executable, "-c", CHILD, str(rec)], capture_output=True,
                                 text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(r)
            print(f"round {i + 1}: {r['wall_s']:.2f} s wall, {r['cpu_s']:.2f} s CPU, "
                  f"{r['max_rss_bytes'] / 2**20:.0f} MiB peak RSS, verdict {r['severity']} "
                  f"({', '.join(r['findings'])})")
    wall = statistics.median(r["wall_s"] for r in results)
    cpu = statistics.median(r["cpu_s"] for r in results)
    rss = statistics.median(r["max_rss_bytes"] for r in results)
    ok = wall <= TIME_LIMIT_S and rss <= RSS_LIMIT
    print(f"median: {wall:.2f} s wall (limit {TIME_LIMIT_S:.0f} s), {cpu:.2f} s CPU, "
          f"{rss / 2**20:.0f} MiB peak RSS (limit {RSS_LIMIT / 2**20:.0f} MiB): "
          f"{'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
