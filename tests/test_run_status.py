"""The live status line's text and the end-of-run memory summary, on a real recording."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

from loadmem.load.status import StatusLine, status_text
from loadmem.load.summary import memory_lines
from loadmem.recording import open_recording
from loadmem.recording.schema import PROCESSES, system_schema
from loadmem.recording.writer import TableWriter, finalize, write_meta

MiB = 1 << 20


def test_status_text_shows_phase_rate_and_memory():
    load = SimpleNamespace(last_total={"requests": 500, "interval_s": 0.5, "users": 7},
                           failures=3)
    rec = {"mem_available": 2048 * MiB, "sum_rss": 300 * MiB, "sum_pss": 120 * MiB,
           "processes": 5}
    text = status_text("load", 12.0, 48.0, rec, load)
    assert text.startswith("load 12s (48s left)")
    assert "1,000 req/s" in text and "3 fail" in text and "7 users" in text
    assert "avail 2.00 GB, RSS 300 MB, PSS 120 MB (5 procs)" in text
    assert "req/s" not in status_text("observe", 5.0, None, rec, load)


def test_status_line_writes_only_with_a_stream():
    StatusLine(None).render("baseline", 1.0, 2.0, None, None)  # no terminal: nothing, no error
    buf = io.StringIO()
    line = StatusLine(buf, min_interval=0.0)
    line.render("baseline", 1.0, 2.0, None, None)
    line.clear()
    assert buf.getvalue().startswith("\rbaseline 1.0s (2.0s left)")


def test_summary_memory_is_the_analysis_figures_target_processes_only(tmp_path: Path):
    """The run summary's memory table is the analysis' own figures: before load = the level
    when the load starts, the load generator left out."""
    import datetime as dt

    from loadmem.analysis import analyze
    from loadmem.recording.schema import EVENTS

    write_meta(tmp_path, {"start_monotonic": 0.0, "start_epoch": 0.0, "status": "complete"})
    now = dt.datetime.now(dt.UTC)
    system = TableWriter(tmp_path, "system", system_schema(["MemTotal", "MemAvailable"]))
    procs = TableWriter(tmp_path, "processes", PROCESSES)
    for tick in range(12):
        t = float(tick)
        used = 100 if tick <= 5 else 100 + 10 * (tick - 5)  # flat, then +10 MiB per tick
        system.append({"ts": now, "t": t, "tick": tick, "MemTotal": 1000 * MiB,
                       "MemAvailable": (1000 - used) * MiB})
        pss = 10 if tick <= 5 else 10 + 5 * (tick - 5)
        for pid, role, p in ((1, "target", pss), (2, "target", pss), (3, "loadgen", 500)):
            procs.append({"ts": now, "t": t, "tick": tick, "pid": pid, "start_time": 1,
                          "role": role, "rss": 50 * MiB, "pss": p * MiB})
    events = TableWriter(tmp_path, "events", EVENTS)
    for kind, phase, t in (("phase_start", "baseline", 0.0), ("phase_end", "baseline", 5.0),
                           ("phase_start", "load", 5.0), ("phase_end", "load", 11.0)):
        events.append({"ts": now, "t": t, "kind": kind, "phase": phase, "message": None,
                       "data": None})
    for w in (system, procs, events):
        w.close()
    finalize(tmp_path)
    a = analyze(open_recording(tmp_path))
    f = a.figures
    assert a.window.name == "load+observe"
    assert f["window.used_start_bytes"] == 100 * MiB and f["window.used_end_bytes"] == 160 * MiB
    assert f["watched.rss_start_bytes"] == f["watched.rss_end_bytes"] == 100 * MiB  # no loadgen
    assert (f["watched.pss_start_bytes"], f["watched.pss_end_bytes"]) == (20 * MiB, 80 * MiB)
    lines = memory_lines(a)
    assert lines[0].split()[1:] == ["before", "load", "at", "end", "change"]
    assert lines[1].split() == ["used", "(system)", "100", "MB", "160", "MB", "+60.0", "MB"]
    assert lines[2].split() == ["sum", "RSS", "100", "MB", "100", "MB", "0", "B"]
    assert lines[3].split() == ["sum", "PSS", "20.0", "MB", "80.0", "MB", "+60.0", "MB"]
    assert "sums over 2 target processes, the same at both ends" in lines[4]
