"""How long does ``loadmem plot`` take on a day of 1 Hz samples of 100 processes?

Target: at most 10 s for ``loadmem plot`` (open + the whole analysis + figure + PNG) on a
24 h x 1 Hz x 100-process recording (8.64 M process rows), synthesised with
``benchmarks/synth.py`` (the real schema and writer settings; a pre-forking service whose
workers unshare their pages through a 23 h observe phase).

Each round runs the real command in a fresh interpreter (``python -m loadmem plot REC -o
OUT.png``, imports included), times it from outside, and has the child report its own peak
RSS (``resource.getrusage``) and the split between analysis and drawing. Also ``loadmem
report`` (the same figure inlined into HTML) once, for reference. Prints a Markdown table;
exit status 1 when the median plot time is over the target.

    .venv/bin/python benchmarks/bench_plot.py --rounds 3             # synthesises to a tmp dir
    .venv/bin/python benchmarks/bench_plot.py --recording /tmp/synth-24h --rounds 5
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET_S = 10.0

# Runs in the child: the CLI itself, plus a timed split of the same two steps it performs.
CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from loadmem.cli.main import main
rc = main(sys.argv[1:])
total = time.perf_counter() - t0
print(json.dumps({"rc": rc, "inside_s": total,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

SPLIT = r"""
import json, sys, time
from loadmem.recording.reader import open_recording
from loadmem.analysis.analyze import analyze_with_series
from loadmem.presentation.plot import save_plot
t0 = time.perf_counter()
rec = open_recording(sys.argv[1])
r = analyze_with_series(rec)
t1 = time.perf_counter()
save_plot(rec, r.analysis, sys.argv[2], series=r.series)
t2 = time.perf_counter()
print(json.dumps({"analyze_s": t1 - t0, "figure_s": t2 - t1}))
"""


def _child(code: str, *args: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    )
    wall = time.perf_counter() - t0
    return wall, json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recording", type=Path, help="existing synthetic recording to reuse")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hours", type=float, default=24)
    ap.add_argument("--processes", type=int, default=100)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="loadmem-bench-plot-"))
    try:
        rec = args.recording
        if rec is None or not (rec / "meta.json").exists():
            sys.path.insert(0, str(HERE))
            from synth import synthesise

            rec = rec or tmp / "synth"
            t0 = time.perf_counter()
            synthesise(rec, hours=args.hours, processes=args.processes, interval=1.0)
            print(f"synthesised {rec} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        rows = []
        for i in range(args.rounds):
            wall, info = _child(CHILD, "plot", str(rec), "-o", str(tmp / f"plot{i}.png"))
            assert info["rc"] == 0, info
            rows.append((wall, info["peak_rss_mb"]))
            print(f"round {i + 1}: {wall:.2f} s, peak RSS {info['peak_rss_mb']:.0f} MB",
                  file=sys.stderr)  # fmt: skip
        _, split = _child(SPLIT, str(rec), str(tmp / "split.png"))
        report_wall, _ = _child(CHILD, "report", str(rec), "-o", str(tmp / "r.html"))
        walls = [w for w, _ in rows]
        median = statistics.median(walls)
        host = f"{platform.node()}, {platform.machine()}, Python {platform.python_version()}"
        print(
            f"\n`loadmem plot` on {args.hours:g} h x 1 Hz x {args.processes} processes ({host})\n"
        )
        print("| measure | value | target |")
        print("|---|---|---|")
        print(f"| `loadmem plot` wall time, median of {len(walls)} | {median:.2f} s | "
              f"<= {TARGET_S:.0f} s |")  # fmt: skip
        print(f"| `loadmem plot` wall time, min / max | {min(walls):.2f} / {max(walls):.2f} s | |")
        print(f"| of which `analyze()` | {split['analyze_s']:.2f} s | |")
        print(f"| of which figure + PNG | {split['figure_s']:.2f} s | |")
        print(f"| peak RSS (max over rounds) | {max(r for _, r in rows):.0f} MB | |")
        print(f"| `loadmem report` wall time (same figure, HTML) | {report_wall:.2f} s | |")
        print(f"| PNG size | {(tmp / 'plot0.png').stat().st_size / 1024:.0f} KB | |")
        ok = median <= TARGET_S
        print(f"\n{'PASS' if ok else 'FAIL'}: median {median:.2f} s vs target {TARGET_S:.0f} s")
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
