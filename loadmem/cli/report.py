"""Write one self-contained HTML report: verdict, findings, figure, phase and process tables.

The file holds everything (figure inlined as PNG, CSS inline, no script, no external URL),
so it can be attached to a CI job, mailed or opened offline: the verdict and findings
first, then the figure (see `loadmem plot`), the phases (duration, requests, failures,
latency), each watched process (RSS, PSS, USS, private/shared at baseline, end of load, end
of observe), and the recording's metadata with what observing cost.

examples:
  loadmem report recordings/demo-20261125T2200Z               # -> .../report.html
  loadmem report recordings/nightly -o artifacts/memory.html
  loadmem report recordings/nightly --window 1h:2h
"""

from __future__ import annotations

import argparse
from pathlib import Path

from loadmem.cli.plot import WINDOW_HELP, analysed
from loadmem.presentation.escape import terminal


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recording", metavar="RECORDING", help="recording directory")
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        type=Path,
        help="HTML file to write (default: RECORDING/report.html)",
    )
    parser.add_argument("--window", metavar="START:END|PHASE", help=WINDOW_HELP)


def run(args: argparse.Namespace) -> int:
    from loadmem.presentation.html import write_report

    rec, result = analysed(args.recording, args.window)
    analysis = result.analysis
    out = args.output or rec.path / "report.html"
    write_report(rec, analysis, out, window=analysis.window if args.window else None,
                 series=result.series)
    print(f"wrote {terminal(out)}  [{analysis.severity.upper()}] {terminal(analysis.headline)}")
    print(f"next: open {terminal(out)} in a browser, or keep it as a CI artifact")
    return 0
