"""List recordings: label, start time, target, duration and headline figures.

Cheap by design: reads meta.json, the system table's memory columns and the small
requests table; it never runs the full analysis (use `loadmem analyze REC` for the
verdict). "used Δ" is the change of system used memory (MemTotal - MemAvailable) over the
window `loadmem analyze` judges (for a `loadmem run` recording: from just before the load to
the end; else the whole recording): the same figure as the analysis' window.used_delta_bytes.
A directory that is itself a recording lists just that one.

examples:
  loadmem ls                    # ./recordings
  loadmem ls /srv/perf/recordings --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from loadmem.analysis.figures import format_figure
from loadmem.presentation.escape import terminal
from loadmem.recording.catalog import list_recordings
from loadmem.units import format_duration


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, nargs="?", default=Path("recordings"),
                        help="directory holding recordings (default: ./recordings)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per line")


def run(args: argparse.Namespace) -> int:
    entries = list_recordings(args.directory)
    if args.json:
        for e in entries:
            print(json.dumps(e.to_dict(), default=str))
        return 0
    if not entries:
        print(f"no recordings in {terminal(args.directory)}", file=sys.stderr)
        return 0
    header = ["recording", "label", "started (UTC)", "target", "duration", "used Δ",
              "requests", "failures", "status"]
    rows = [header]
    for e in entries:
        rows.append([terminal(cell) for cell in (
            e.path.name,
            e.label or "-",
            (e.started or "-").replace("T", " ").rstrip("Z"),
            e.target,
            format_duration(e.duration_s),
            format_figure("window.used_delta_bytes", e.used_delta_bytes),
            "-" if e.requests is None else str(e.requests),
            "-" if e.failures is None else str(e.failures),
            e.status + (f" ({e.problem})" if e.problem else ""),
        )])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for i, r in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    return 0
