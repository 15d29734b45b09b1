"""The live status line's text and the end-of-run memory summary, on a real recording."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

from loadmem.load.status import StatusLine, status_text
from loadmem.load.summary import memory_before_after
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


def test_memory_before_after_uses_target_processes_only(tmp_path: Path):
    import datetime as dt

    write_meta(tmp_path, {"start_monotonic": 0.0, "start_epoch": 0.0, "status": "complete"})
    now = dt.datetime.now(dt.UTC)
    system = TableWriter(tmp_path, "system", system_schema(["MemTotal", "MemAvailable"]))
    procs = TableWriter(tmp_path, "processes", PROCESSES)
    for tick in range(6):
        t = float(tick)
        system.append({"ts": now, "t": t, "tick": tick, "MemTotal": 1000 * MiB,
                       "MemAvailable": (900 - 10 * tick) * MiB})
        for pid, role, pss in ((1, "target", 10 + 5 * tick), (2, "target", 10 + 5 * tick),
                               (3, "loadgen", 500)):
            procs.append({"ts": now, "t": t, "tick": tick, "pid": pid, "start_time": 1,
                          "role": role, "rss": 50 * MiB, "pss": pss * MiB})
    system.close()
    procs.close()
    finalize(tmp_path)
    before, after = memory_before_after(open_recording(tmp_path), t_load=2.5)
    assert before is not None and after is not None
    assert (before.t, after.t) == (2.0, 5.0)
    assert before.used == 120 * MiB and after.used == 150 * MiB
    assert before.sum_rss == after.sum_rss == 100 * MiB  # the loadgen is left out
    assert (before.sum_pss, after.sum_pss) == (40 * MiB, 70 * MiB)
    assert after.processes == 2
