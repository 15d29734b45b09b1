"""Rows to Arrow, and the light segments they are written to: ``rows_to_table`` gives what
``pa.Table.from_pylist`` gives, on the recording's real schemas and on rows sampled from
real processes; a light segment reads back with its types, numbers not dictionary-encoded."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from loadmem.procfs.meminfo import parse_meminfo
from loadmem.procfs.reader import KeptOpenProcFS
from loadmem.recorder.sampler import Sampler
from loadmem.recorder.scheduler import TokenBucket
from loadmem.recorder.selection import ProcessSelector, Selection
from loadmem.recording import open_recording
from loadmem.recording.schema import (
    CGROUP,
    EVENTS,
    PROCESSES,
    RECORDER,
    REQUESTS,
    system_schema,
)
from loadmem.recording.writer import TableWriter, finalize, rows_to_table, write_meta

DICT_ENCODINGS = {"RLE_DICTIONARY", "PLAIN_DICTIONARY"}
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _same(rows: list[dict], schema: pa.Schema) -> pa.Table:
    got = rows_to_table(rows, schema)
    want = pa.Table.from_pylist(rows, schema=schema)
    assert got.schema.equals(want.schema, check_metadata=True)
    assert got.equals(want, check_metadata=True)
    assert got.to_pylist() == want.to_pylist()
    return got


@pytest.fixture(scope="module")
def sampled() -> dict[str, list[dict]]:
    """Rows of a few real ticks: a watched parent and child, the cgroup, system, events."""
    code = ("import os, sys, time\nbuf = b'x' * (4 << 20)\nif os.fork() == 0:\n"
            "    time.sleep(60)\nprint(os.getpid(), flush=True)\nsys.stdin.readline()")
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, start_new_session=True)
    fs = KeptOpenProcFS()
    out: dict[str, list[dict]] = {"processes": [], "cgroup": [], "system": [], "events": []}
    try:
        root = int(p.stdout.readline())
        sel = ProcessSelector(Selection(pids=[root]), fs)
        sel.check_initial()
        sampler = Sampler(sel, TokenBucket(1.0), fs, max_age=60.0, interval=0.1)
        for n in range(3):
            res = sampler.tick(n, n * 0.1, T0 + dt.timedelta(seconds=n * 0.1))
            out["processes"] += res.processes
            out["cgroup"] += res.cgroup
            out["system"].append(res.system)
            out["events"] += res.events
        out["meminfo_keys"] = list(sampler.meminfo_keys or [])
    finally:
        fs.close()
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
    assert len({r["pid"] for r in out["processes"]}) == 2
    assert any(r["pss"] for r in out["processes"])
    return out


def test_real_rows_of_every_table(sampled):
    _same(sampled["processes"], PROCESSES)
    _same(sampled["events"], EVENTS)
    if sampled["cgroup"]:  # a host without a readable memory cgroup has none
        _same(sampled["cgroup"], CGROUP)
    system = _same(sampled["system"], system_schema(sampled["meminfo_keys"]))
    assert system.column("MemTotal").to_pylist()[0] == parse_meminfo(
        Path("/proc/meminfo").read_text())["MemTotal"]


def test_recorder_and_requests_rows():
    rec = [{"ts": T0, "t": 0.0, "tick": 0, "pid": 4242, "cpu_user": 0.01, "cpu_system": 0.02,
            "rss": 80 << 20, "pss": None, "tick_us": 900, "cheap_us": 700, "smaps_reads": 2,
            "smaps_us": 5000, "smaps_max_us": 3000, "processes": 16, "pss_oldest_s": 0.0,
            "budget_s": 0.1, "errors": 0, "lag_s": 0.0},
           {"ts": T0 + dt.timedelta(seconds=1), "t": 1.0, "tick": 1, "pid": 4242}]
    _same(rec, RECORDER)
    req = [{"ts": T0, "t": 1.0, "name": "/items", "method": "GET", "requests": 10,
            "p95_ms": 1.5, "users": 4},
           {"ts": T0, "t": 1.0, "name": "Aggregated", "method": "", "requests": 10}]
    _same(req, REQUESTS)


def test_missing_extra_and_null_values():
    rows = [
        {"ts": T0, "t": 0.0, "kind": "warning", "message": "m", "unknown": 1, "data": None},
        {"ts": T0, "t": 1.0, "kind": "note"},  # phase, message, data missing: null
        {"t": 2.0, "kind": "note", "phase": "load", "extra": {"nested": [1, 2]}},  # no ts
    ]
    table = _same(rows, EVENTS)
    assert table.column_names == EVENTS.names  # the extra keys left no column
    assert table.column("message").to_pylist() == ["m", None, None]
    assert table.column("ts").null_count == 1
    assert pa.types.is_dictionary(table.schema.field("kind").type)
    assert table.column("kind").combine_chunks().dictionary.to_pylist() == ["warning", "note"]


def test_timestamps_keep_their_zone():
    other = dt.timezone(dt.timedelta(hours=2))
    rows = [{"ts": dt.datetime(2026, 1, 1, 2, 0, tzinfo=other), "t": 0.0, "kind": "note"},
            {"ts": T0 + dt.timedelta(microseconds=7), "t": 1.0, "kind": "note"}]
    table = _same(rows, EVENTS)
    assert table.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert table.column("ts").to_pylist() == [T0, T0 + dt.timedelta(microseconds=7)]


def test_schema_and_field_metadata_and_no_rows():
    schema = PROCESSES.with_metadata({"origin": "test"})
    schema = schema.set(0, schema.field("ts").with_metadata({"unit": "utc"}))
    table = _same([{"ts": T0, "t": 0.0, "tick": 0, "pid": 1, "start_time": 2}], schema)
    assert table.schema.metadata == {b"origin": b"test"}
    assert table.schema.field("ts").metadata == {b"unit": b"utc"}
    empty = _same([], schema)
    assert empty.num_rows == 0 and empty.schema.metadata == {b"origin": b"test"}


def _segment(tmp_path: Path, rows: list[dict], schema: pa.Schema, light: bool) -> Path:
    root = tmp_path / ("light" if light else "heavy")
    w = TableWriter(root, "processes", schema, light_segments=light)
    w.extend(rows)
    w.flush()
    files = list((root / "processes").iterdir())
    assert len(files) == 1 and not files[0].name.startswith("."), "no temporary file left"
    return files[0]


def _encodings(path: Path) -> dict[str, set[str]]:
    md = pq.ParquetFile(path).metadata
    rg = md.row_group(0)
    return {rg.column(i).path_in_schema: set(rg.column(i).encodings)
            for i in range(md.num_columns)}


def test_light_segment_round_trip_and_encodings(tmp_path, sampled):
    rows = sampled["processes"]
    path = _segment(tmp_path, rows, PROCESSES, light=True)
    pf = pq.ParquetFile(path)
    back = pf.read()
    assert back.schema.remove_metadata().equals(PROCESSES)  # dictionary columns stay so
    assert pf.schema_arrow.metadata[b"loadmem.table"] == b"processes"
    assert back.to_pylist() == rows_to_table(rows, PROCESSES).to_pylist()
    rg = pf.metadata.row_group(0)
    assert all(rg.column(i).compression == "UNCOMPRESSED" and not rg.column(i).is_stats_set
               for i in range(pf.metadata.num_columns))
    enc = _encodings(path)
    for field in PROCESSES:
        if pa.types.is_dictionary(field.type) or pa.types.is_string(field.type):
            if back.column(field.name).null_count < back.num_rows:
                assert enc[field.name] & DICT_ENCODINGS, field.name
        else:
            assert not enc[field.name] & DICT_ENCODINGS, f"{field.name} dictionary-encoded"
    # the plain text column of events keeps its dictionary too
    ev = _encodings(_segment(tmp_path / "ev", sampled["events"], EVENTS, light=True))
    assert ev["message"] & DICT_ENCODINGS and not ev["t"] & DICT_ENCODINGS


def test_full_segments_still_encode_numbers_with_dictionaries(tmp_path, sampled):
    """The contrast: without light_segments, every column may use a dictionary."""
    enc = _encodings(_segment(tmp_path, sampled["processes"], PROCESSES, light=False))
    assert enc["pid"] & DICT_ENCODINGS and enc["rss"] & DICT_ENCODINGS


def test_light_segments_merge_into_the_same_rows(tmp_path, sampled):
    rows = sampled["processes"]
    write_meta(tmp_path, {"schema_version": 1, "status": "recording"})
    w = TableWriter(tmp_path, "processes", PROCESSES, light_segments=True)
    half = len(rows) // 2
    w.extend(rows[:half])
    w.flush()
    w.extend(rows[half:])
    w.flush()
    assert finalize(tmp_path) == ["processes"]
    merged = open_recording(tmp_path).table("processes")
    assert merged.to_pylist() == rows_to_table(rows, PROCESSES).to_pylist()
    assert pa.types.is_dictionary(merged.schema.field("name").type)
