"""Does ``loadmem run`` cost the load test anything? Plain Locust vs ``loadmem run``, alternating.

One demo server (``loadmem.demo``, loopback only) serves every run. Each round runs the same
scenario for the same time with the same users twice, in alternating order:

- ``locust``: plain ``locust --headless -f SCENARIO --json`` (no recorder);
- ``loadmem``: ``loadmem run SCENARIO --target URL`` with the recorder at its defaults
  (1 s interval, 2 % PSS budget) watching the server by port and the Locust child.

Two figures, each the median over rounds of loadmem / locust:

- request rate (Locust's own definition: requests / (last request - first request)): the
  Locust child in loadmem must drive the target as hard as Locust alone (>= 0.95x);
- p99 latency (Locust's histogram percentile over the whole load): the recorder sampling
  the server must not slow it down (<= 1.05x).

Bounded: every run is ``--duration`` seconds of load against 127.0.0.1.

    .venv/bin/python benchmarks/bench_run.py --rounds 3 --duration 15 --markdown
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
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "scenarios" / "demo.py"


def _percentile(hist: dict[int, int], total: int, q: float) -> float:
    # Locust's own helper (imported here, in the benchmark process only, and only for this).
    from locust.stats import calculate_response_time_percentile

    return float(calculate_response_time_percentile(hist, total, q))


def run_locust(url: str, users: int, duration: float) -> dict[str, float]:
    cmd = [sys.executable, "-m", "locust", "--headless", "-f", str(SCENARIO), "--host", url,
           "-u", str(users), "-r", str(users), "-t", f"{duration:g}s", "--json",
           "--only-summary", "--loglevel", "WARNING"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    entries = json.loads(proc.stdout)
    n = sum(e["num_requests"] for e in entries)
    span = max(e["last_request_timestamp"] for e in entries) - min(e["start_time"] for e in entries)
    hist: dict[int, int] = {}
    for e in entries:
        for k, v in e["response_times"].items():
            hist[int(float(k))] = hist.get(int(float(k)), 0) + v
    timed = sum(hist.values())
    return {"requests": n, "rps": n / span, "p99_ms": _percentile(hist, timed, 0.99),
            "failures": sum(e["num_failures"] for e in entries)}


def run_loadmem(url: str, users: int, duration: float, out: Path) -> dict[str, float]:
    # The same Locust options as the plain run (loadmem passes them to Locust's own entry
    # point); --fail-on never: the demo's verdict is not what is measured here.
    cmd = [sys.executable, "-m", "loadmem", "run", str(SCENARIO), "--target", url,
           "-u", str(users), "-r", str(users), "--baseline", "2s",
           "--load", f"{duration:g}s", "--observe", "2s", "--out", str(out), "--label", "bench",
           "--fail-on", "never", "--only-summary", "--loglevel", "WARNING"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    if proc.returncode != 0:
        raise RuntimeError(f"loadmem run failed: {proc.stderr[-500:]}")
    from loadmem.recording import open_recording

    rec = open_recording(out)
    rows = rec.events("load_stats")[0]["data"]["rows"]
    total = next(r for r in rows if r["name"] == "Aggregated")
    recorder = rec.table("recorder", ["t", "cpu_user", "cpu_system"]).to_pylist()
    cpu = (recorder[-1]["cpu_user"] + recorder[-1]["cpu_system"]) - (
        recorder[0]["cpu_user"] + recorder[0]["cpu_system"]) if len(recorder) > 1 else 0.0
    span = recorder[-1]["t"] - recorder[0]["t"] if len(recorder) > 1 else 1.0
    return {"requests": total["requests"], "rps": total["rps"], "p99_ms": total["p99_ms"],
            "failures": total["failures"], "recorder_cpu_pct": 100 * cpu / span}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=15.0, help="seconds of load per run")
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--workers", type=int, default=2, help="demo server workers")
    p.add_argument("--table-mb", type=float, default=50.0)
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = p.parse_args(argv)
    if not 1 <= args.rounds <= 10 or not 1 <= args.duration <= 120:
        p.error("keep it bounded: 1-10 rounds of 1-120 s")

    from loadmem.demo.launch import start_demo

    results: dict[str, list[dict[str, float]]] = {"locust": [], "loadmem": []}
    # idle GC far away: housekeeping between runs would add noise unrelated to the recorder
    with start_demo(workers=args.workers, table_mb=args.table_mb, idle_gc_after=3600.0) as demo, \
            tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        for i in range(args.rounds):
            order = ("locust", "loadmem") if i % 2 == 0 else ("loadmem", "locust")
            for kind in order:
                if kind == "locust":
                    r = run_locust(demo.url, args.users, args.duration)
                else:
                    r = run_loadmem(demo.url, args.users, args.duration, Path(tmp) / f"r{i}")
                results[kind].append(r)
                print(f"round {i + 1} {kind:8} {r['rps']:8.0f} req/s  p99 {r['p99_ms']:5.0f} ms"
                      f"  ({r['requests']} requests, {r['failures']} failures)",
                      file=sys.stderr, flush=True)
                time.sleep(1.0)

    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in results[kind])

    rate_ratio = statistics.median(
        b["rps"] / a["rps"] for a, b in zip(results["locust"], results["loadmem"], strict=True))
    p99_ratio = statistics.median(
        b["p99_ms"] / a["p99_ms"] for a, b in zip(results["locust"], results["loadmem"],
                                                  strict=True))
    summary: dict[str, Any] = {
        "rounds": args.rounds, "duration_s": args.duration, "users": args.users,
        "locust_rps": med("locust", "rps"), "loadmem_rps": med("loadmem", "rps"),
        "locust_p99_ms": med("locust", "p99_ms"), "loadmem_p99_ms": med("loadmem", "p99_ms"),
        "rate_ratio": rate_ratio, "p99_ratio": p99_ratio,
        "recorder_cpu_pct": med("loadmem", "recorder_cpu_pct"),
        "rate_ok": rate_ratio >= 0.95, "p99_ok": p99_ratio <= 1.05,
    }
    if args.markdown:
        print("| round | locust req/s | loadmem req/s | locust p99 ms | loadmem p99 ms |")
        print("|---|---|---|---|---|")
        for i, (a, b) in enumerate(zip(results["locust"], results["loadmem"], strict=True)):
            print(f"| {i + 1} | {a['rps']:.0f} | {b['rps']:.0f} | {a['p99_ms']:.0f} | "
                  f"{b['p99_ms']:.0f} |")
        print(f"\nrate ratio (median) {rate_ratio:.3f} (target >= 0.95: "
              f"{'pass' if summary['rate_ok'] else 'FAIL'}); p99 ratio (median) {p99_ratio:.3f} "
              f"(target <= 1.05: {'pass' if summary['p99_ok'] else 'FAIL'}); recorder CPU "
              f"{summary['recorder_cpu_pct']:.2f}% of a core")
    print(json.dumps(summary))
    return 0 if summary["rate_ok"] and summary["p99_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
