"""Attach a run's events and request stats to a recording made on another machine.

When the server under test runs elsewhere, its memory is recorded there with
``loadmem record`` while the load comes from here with ``loadmem run ... --no-record``. The
run then writes a run-only recording: ``events`` (phases, Locust totals) and ``requests``,
each row with its wall-clock ``ts``. ``attach_run`` copies those rows into the server's
recording, re-computing ``t`` on that recording's clock from ``ts``:

    t_server = ts - server_meta["start_epoch"]

so phases line up with the memory samples as closely as the two machines' clocks agree
(NTP keeps them within milliseconds; the offset, if known, can be given as
``clock_offset_s`` = server clock minus load machine clock). The rows go in as a new
segment (writer id ``attach``) and the recording is merged again, so it can be run on a
finished recording or on one still being written (its recorder merges the segment when it
stops). The server recording's ``meta.json`` gains the run's metadata under ``run``.

Command line: ``python -m loadmem.load.attach RUN_DIR SERVER_RECORDING [--offset SECONDS]``,
or ``loadmem run ... --no-record --attach-to SERVER_RECORDING`` to do it at the end of a run.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from loadmem.errors import LoadmemError
from loadmem.recording.reader import open_recording
from loadmem.recording.schema import EVENTS, REQUESTS
from loadmem.recording.writer import META_FILE, TableWriter, finalize, update_meta

RUN_META_KEYS = ("scenario", "target", "target_url", "phases", "users", "spawn_rate", "label",
                 "argv", "start_epoch", "host", "status")


def attach_run(run_dir: str | Path, recording: str | Path,
               clock_offset_s: float = 0.0) -> dict[str, int]:
    """Copy ``run_dir``'s events and requests into ``recording``; return rows per table."""
    run = open_recording(run_dir)
    target = Path(recording)
    meta_path = target / META_FILE
    if not meta_path.exists():
        raise LoadmemError(f"no recording at {target} (no {META_FILE})",
                           "give the directory `loadmem record` wrote on the server")
    meta = json.loads(meta_path.read_text())
    start_epoch = meta.get("start_epoch")
    if start_epoch is None:
        raise LoadmemError(f"{target} has no start_epoch in {META_FILE}",
                           "was it written by `loadmem record`?")
    if run.path.resolve() == target.resolve():
        raise LoadmemError("the run and the recording are the same directory")
    previous = (meta.get("run") or {}).get("attached_from")
    if previous and Path(previous).resolve() == run.path.resolve():
        raise LoadmemError(f"{run.path} is already attached to {target}",
                           "attaching twice would duplicate its events")
    offset = timedelta(seconds=clock_offset_s)
    counts: dict[str, int] = {}
    for name, schema in (("events", EVENTS), ("requests", REQUESTS)):
        rows = run.table(name).to_pylist()
        writer = TableWriter(target, name, schema, writer_id="attach")
        for row in rows:
            ts: datetime = row["ts"] + offset
            row["ts"] = ts
            row["t"] = ts.timestamp() - float(start_epoch)
            if name == "events" and row.get("kind") in ("recording_start", "recording_stop"):
                continue  # the server recording has its own
            writer.append(row)
        counts[name] = writer.pending
        writer.close()
    run_meta: dict[str, Any] = {k: run.meta.get(k) for k in RUN_META_KEYS if k in run.meta}
    run_meta["attached_from"] = str(run.path)
    run_meta["clock_offset_s"] = clock_offset_s
    if meta.get("status") != "recording":  # a finished recording: merge the new segments now
        finalize(target)
    update_meta(target, run=run_meta, label=meta.get("label") or run.meta.get("label"))
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadmem.load.attach",
                                description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run_dir", help="the run-only recording of `loadmem run --no-record`")
    p.add_argument("recording", help="the server's `loadmem record` recording")
    p.add_argument("--offset", type=float, default=0.0,
                   help="server clock minus this machine's clock, in seconds (default 0)")
    args = p.parse_args(argv)
    try:
        counts = attach_run(args.run_dir, args.recording, args.offset)
    except LoadmemError as e:
        print(f"attach: error: {e}", file=sys.stderr)
        return e.exit_code
    print(f"attached {counts.get('events', 0)} events and {counts.get('requests', 0)} request "
          f"rows to {args.recording}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
