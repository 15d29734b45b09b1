"""Check a recording against memory and latency budgets (CI gate): exit 0 pass, 1 fail.

Budgets come from --config, else the nearest loadmem.toml ([gates]) or pyproject.toml
([tool.loadmem.gates]) from the current directory upwards, else built-in defaults
(failure ratio <= 1%, watched PSS and RSS growth <= 10%). Each gate names a metric, max or
min, and a budget in the metric's unit:

  [gates]
  memory_growth = { max = "200M" }                       # window.used_delta_bytes
  worker_pss    = { metric = "workers.pss_per_worker_end_bytes", max = "150M" }
  sharing       = { metric = "shared_fraction.end", min = "40%" }
  p95           = { metric = "latency.p95_ms", max = "250ms" }

A gate whose figure is not in the recording fails unless it says missing = "skip".
Exit codes: 0 all gates passed, 1 a gate failed, 2 bad input (recording, config).

examples:
  loadmem gate recordings/demo-20260101T120000Z
  loadmem gate REC --config ci/loadmem.toml --junit gates.xml
  loadmem gate REC --markdown >> "$GITHUB_STEP_SUMMARY"
See docs/gates.md for every metric.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loadmem.gates import render_json, render_markdown, render_text, run_gates, write_junit
from loadmem.presentation.escape import terminal


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recording", type=Path, help="recording directory to check")
    parser.add_argument(
        "--config", type=Path, metavar="FILE",
        help="gates config (loadmem.toml with [gates], or pyproject.toml with "
        "[tool.loadmem.gates]); default: the nearest one, else built-in defaults",
    )
    parser.add_argument("--window", metavar="START:END|PHASE",
                        help="judge this part of the recording (as in `loadmem analyze`: "
                        "30s:5m, :10m, 2m:, or a phase name); default: the observe phase")
    parser.add_argument("--junit", type=Path, metavar="FILE",
                        help="also write a JUnit XML file (one testcase per gate)")
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--markdown", action="store_true",
                     help="print a Markdown table (for $GITHUB_STEP_SUMMARY)")
    fmt.add_argument("--json", action="store_true", help="print the results as JSON")


def run(args: argparse.Namespace) -> int:
    report = run_gates(args.recording, config_path=args.config, window=args.window)
    if args.junit:
        write_junit(report, args.junit)
    if args.json:
        render_json(report, sys.stdout)
    elif args.markdown:
        render_markdown(report, sys.stdout)
    else:
        for note in report.notes:
            print(f"note: {terminal(note)}", file=sys.stderr)
        render_text(report, sys.stdout)
        if args.junit:
            print(f"JUnit report written to {args.junit}", file=sys.stderr)
    return report.exit_code
