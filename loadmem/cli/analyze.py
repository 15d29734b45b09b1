"""Explain what happened to memory in a recording: the verdict, then the evidence.

Reads a recording made by `loadmem run` or `loadmem record` and says whether system memory
drained over the window and why: copy-on-write unsharing after fork (PSS up, shared pages
down, RSS flat), RSS growth, page cache (benign), shared memory / tmpfs, kernel slab, page
tables, swap, transparent huge pages, or other processes nobody watched. Every finding has
a severity (ok, info, warning, critical) and a sentence with the numbers.

The window is the observe phase (after load) when the recording has phases, else the whole
recording; --window picks another: a phase name (baseline, load, observe) or START:END
durations from the recording start (30s:5m, :10m, 2m:).

exit codes: 0 no finding reached --fail-on; 1 one did; 2 bad input (missing, corrupt or empty
recording, bad --window).

examples:
  loadmem analyze recordings/demo-20260101T120000Z
  loadmem analyze rec/ --window 2m:20m            # a window of a plain `loadmem record`
  loadmem analyze rec/ --window load --json > analysis.json
  loadmem analyze rec/ --markdown --fail-on critical >> "$GITHUB_STEP_SUMMARY"
"""

from __future__ import annotations

import argparse
import sys

from loadmem.analysis import analyze
from loadmem.analysis.model import SEVERITIES, severity_rank
from loadmem.errors import EXIT_FINDING, EXIT_OK
from loadmem.units import duration_arg


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recording", metavar="RECORDING",
                        help="recording directory written by `loadmem run` or `loadmem record`")
    parser.add_argument("--window", metavar="WINDOW",
                        help="phase name (baseline, load, observe) or START:END durations from "
                             "the recording start, e.g. 30s:5m, :10m, 2m: (default: the observe "
                             "phase, else the whole recording)")
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true",
                     help="print the analysis as JSON (schema in docs/analysis.md)")
    fmt.add_argument("--markdown", action="store_true",
                     help="print a Markdown summary (for CI step summaries)")
    parser.add_argument("--limit-horizon", type=duration_arg, default=None, metavar="D",
                        help="a container (memory cgroup) predicted to reach its limit within "
                             "D is critical (default 1h; see docs/containers.md)")
    parser.add_argument("--fail-on", choices=[*SEVERITIES[2:], "never"], default="warning",
                        help="exit 1 when a finding reaches this severity (default warning; "
                             "never: always exit 0 on a readable recording)")


def run(args: argparse.Namespace) -> int:
    analysis = analyze(args.recording, window=args.window,
                       **({"limit_horizon": args.limit_horizon}
                          if args.limit_horizon is not None else {}))
    if args.json:
        from loadmem.presentation.json_report import render
    elif args.markdown:
        from loadmem.presentation.markdown import render
    else:
        from loadmem.presentation.text import render
    render(analysis, sys.stdout)
    if args.fail_on != "never" and severity_rank(analysis.severity) >= severity_rank(
        args.fail_on
    ):
        return EXIT_FINDING
    return EXIT_OK
