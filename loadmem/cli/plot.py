"""Draw the recording as one PNG/SVG/PDF figure: system memory, RSS, PSS/USS and load.

Panels share the time axis, with the phases (baseline, load, observe) shaded and labelled:
system memory as change since start (used, free, page cache; MemTotal noted), RSS of the
watched processes stacked by group (master, workers, other), the truth panel (sum RSS vs sum
PSS vs sum USS, private pages stacked under shared ones: private growing into shared is
copy-on-write unsharing), and requests/s, failures, users and p95 latency when the
recording has load. The analyzer's findings are marked where they start, with their size.
How to read it: docs/plots.md.

examples:
  loadmem plot recordings/demo-20261125T2200Z                 # -> .../plot.png
  loadmem plot recordings/demo-20261125T2200Z -o drain.svg
  loadmem plot recordings/nightly --window observe             # zoom into one phase
  loadmem plot recordings/nightly --window 2h:3h30m            # or START:END from the start
"""

from __future__ import annotations

import argparse
from pathlib import Path

from loadmem.analysis.analyze import Result
from loadmem.errors import LoadmemError
from loadmem.presentation.escape import terminal
from loadmem.recording.reader import Recording, open_recording

WINDOW_HELP = (
    "draw only this part of the recording, and give the verdict about it: START:END as "
    "durations from the recording start (30s:5m, :10m, 2m:) or a phase name (baseline, "
    "load, observe). Default: the whole recording (the verdict is about the observe phase)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recording", metavar="RECORDING", help="recording directory")
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        type=Path,
        help="image to write; the format follows the extension: .png, .svg or .pdf "
        "(default: RECORDING/plot.png)",
    )
    parser.add_argument("--window", metavar="START:END|PHASE", help=WINDOW_HELP)


def analysed(path: str, window: str | None) -> tuple[Recording, Result]:
    """Open the recording once and analyse it; the figure and the report share the recording,
    the analysis and its series (one pass over the processes table)."""
    from loadmem.analysis.analyze import analyze_with_series

    rec = open_recording(path)
    return rec, analyze_with_series(rec, window=window)


def run(args: argparse.Namespace) -> int:
    from loadmem.presentation.plot import SUFFIXES, save_plot

    if args.output is not None and args.output.suffix.lower() not in SUFFIXES:
        raise LoadmemError(  # before the analysis, which takes seconds on a long recording
            f"cannot write a plot to {args.output.name}: unknown format "
            f"{args.output.suffix or '(none)'}",
            "give a file name ending in .png, .svg or .pdf",
        )
    rec, result = analysed(args.recording, args.window)
    analysis = result.analysis
    out = args.output or rec.path / "plot.png"
    save_plot(rec, analysis, out, window=analysis.window if args.window else None,
              series=result.series)
    print(f"wrote {terminal(out)}")
    print(f"next: loadmem report {terminal(rec.path)}   "
          "(one HTML file: verdict, findings, figure, tables)")
    return 0
