"""Compare recordings of two releases: key figures side by side, changes vs run-to-run noise.

The first --base N recordings (default 1) are the base side (the last release), the rest
the new side. Give several recordings per side (repeats of one release) for the best noise
estimate; with one per side, the noise comes from each recording's baseline phase (or its
first 20%) and its per-second request figures. Every figure gets a verdict: better, worse,
within noise, or changed (no better direction).

With --fail-on-regression P (or [compare] fail_on_regression / budgets in the gates
config), a figure that is worse beyond the noise and by more than P of its base value (or
its budget) is a regression and the exit code is 1. Recordings of different schema
versions cannot be compared (exit 2).

examples:
  loadmem compare recordings/v1.4.2 recordings/v1.5.0
  loadmem compare old-1 old-2 old-3 new-1 new-2 new-3 --base 3
  loadmem compare BASE NEW --fail-on-regression 10% --markdown >> "$GITHUB_STEP_SUMMARY"
  loadmem compare BASE NEW --plot compare.png
See docs/compare.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loadmem.compare.comparison import compare_recordings
from loadmem.gates.config import load_config, resolve_config
from loadmem.presentation.compare_render import render_json, render_markdown, render_text
from loadmem.units import percent_arg


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recordings", type=Path, nargs="+", metavar="RECORDING",
                        help="BASE NEW [more...]: recording directories, base side first")
    parser.add_argument("--base", type=int, default=1, metavar="N",
                        help="how many of the first recordings are the base side (default 1)")
    parser.add_argument(
        "--fail-on-regression", type=percent_arg, metavar="PERCENT",
        help="exit 1 when a figure gets worse beyond noise by more than this share of its "
        "base value, e.g. 10%% (default: [compare] fail_on_regression of the config, else "
        "never)",
    )
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="gates config whose [compare] table gives per-figure budgets "
                        "(default: the nearest loadmem.toml / pyproject.toml)")
    parser.add_argument("--plot", type=Path, metavar="FILE",
                        help="write the recordings overlaid, aligned at load start (.png)")
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the comparison as JSON")
    fmt.add_argument("--markdown", action="store_true", help="print a Markdown table")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config else resolve_config(None)
    fail = args.fail_on_regression
    if fail is None:
        fail = config.fail_on_regression
    comparison = compare_recordings(
        args.recordings, base_count=args.base, fail_on_regression=fail,
        budgets=config.regression_budgets,
    )
    if args.plot:
        from loadmem.presentation.compare_plot import plot_comparison
        from loadmem.recording import open_recording

        plot_comparison(
            [open_recording(r.path) for r in comparison.recordings],
            [f"{r.side}: {r.name}" for r in comparison.recordings],
            args.plot,
        )
        print(f"plot written to {args.plot}", file=sys.stderr)
    if args.json:
        render_json(comparison, sys.stdout)
    elif args.markdown:
        render_markdown(comparison, sys.stdout)
    else:
        render_text(comparison, sys.stdout)
    return comparison.exit_code
