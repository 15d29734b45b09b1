"""The writer/reader pair: segments, merge, killed writers, foreign readers."""

import json
import os
import subprocess
import sys
import textwrap

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from loadmem.errors import LoadmemError
from loadmem.recording import open_recording
from loadmem.recording.schema import EVENTS, system_schema
from loadmem.recording.writer import TableWriter, finalize, write_meta


def _rows(n, t0=0.0):
    import datetime as dt

    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return [
        {"ts": base + dt.timedelta(seconds=t0 + i), "t": t0 + i, "tick": int(t0 + i),
         "MemTotal": 1 << 30, "MemAvailable": (1 << 29) - i * 4096, "Active_anon": i}
        for i in range(n)
    ]


def test_segments_then_merge(tmp_path):
    write_meta(tmp_path, {"schema_version": 1, "status": "recording"})
    w = TableWriter(tmp_path, "system", system_schema(["MemTotal", "MemAvailable", "Active(anon)"]))
    w.extend(_rows(3))
    w.flush()
    w.extend(_rows(2, t0=3))
    w.flush()
    assert len(list((tmp_path / "system").glob("*.parquet"))) == 2
    rec = open_recording(tmp_path)
    assert rec.table("system").num_rows == 5
    assert any("not finished cleanly" in n for n in rec.notes)
    # foreign readers open the segment directory as it is
    assert ds.dataset(tmp_path / "system").to_table().num_rows == 5
    assert finalize(tmp_path) == ["system"]
    assert not (tmp_path / "system").exists()
    table = pq.read_table(tmp_path / "system.parquet")
    assert table.column("t").to_pylist() == [0, 1, 2, 3, 4]
    assert table.schema.metadata[b"loadmem.schema_version"] == b"1"
    assert open_recording(tmp_path).table("system").num_rows == 5


def test_missing_table_is_empty_with_schema(tmp_path):
    write_meta(tmp_path, {"schema_version": 1, "status": "complete"})
    w = TableWriter(tmp_path, "events", EVENTS)
    w.close()  # nothing appended: no segment
    w2 = TableWriter(tmp_path, "system", system_schema(["MemTotal"]))
    w2.append(_rows(1)[0])
    w2.close()
    rec = open_recording(tmp_path)
    assert rec.table("events").num_rows == 0
    assert "kind" in rec.table("events").column_names
    assert rec.phases() == []


def test_errors(tmp_path):
    with pytest.raises(LoadmemError, match="no recording"):
        open_recording(tmp_path / "nope")
    with pytest.raises(LoadmemError, match="no recorded data"):
        open_recording(tmp_path)
    write_meta(tmp_path, {"schema_version": 99})
    w = TableWriter(tmp_path, "system", system_schema(["MemTotal"]))
    w.append(_rows(1)[0])
    w.close()
    with pytest.raises(LoadmemError, match="newer"):
        open_recording(tmp_path)


def test_sigkill_loses_at_most_the_unflushed_rows(tmp_path):
    """A writer killed with SIGKILL mid-run: every flushed segment reads back."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {os.getcwd()!r})
        from tests.test_recording_storage import _rows
        from loadmem.recording.schema import system_schema
        from loadmem.recording.writer import TableWriter, write_meta
        write_meta({str(tmp_path)!r}, {{"schema_version": 1, "status": "recording"}})
        w = TableWriter({str(tmp_path)!r}, "system", system_schema(["MemTotal", "MemAvailable"]))
        for seg in range(4):
            w.extend(_rows(10, t0=seg * 10))
            w.flush()
        w.extend(_rows(7, t0=40))  # never flushed
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], check=False)
    assert proc.returncode == -9
    rec = open_recording(tmp_path)
    assert rec.table("system").num_rows == 40
    assert json.loads((tmp_path / "meta.json").read_text())["status"] == "recording"


def test_merge_streams_many_segments_and_interleaves_writers(tmp_path, monkeypatch):
    """Segments of two writers merge into one file sorted by t, in bounded row groups."""
    import datetime as dt

    from loadmem.recording import writer as writer_mod

    monkeypatch.setattr(writer_mod, "MERGE_ROW_GROUP", 25)
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    write_meta(tmp_path, {"schema_version": 1, "status": "recording"})
    rec_w = TableWriter(tmp_path, "events", EVENTS, writer_id="rec")
    run_w = TableWriter(tmp_path, "events", EVENTS, writer_id="run")
    for seg in range(10):
        for i in range(10):
            t = seg * 10 + i
            w = rec_w if i % 2 else run_w
            w.append({"ts": base + dt.timedelta(seconds=t), "t": float(t), "kind": "note",
                      "message": f"{w.writer_id}-{t}"})
        rec_w.flush()
        run_w.flush()
    finalize(tmp_path)
    f = pq.ParquetFile(tmp_path / "events.parquet")
    assert f.metadata.num_rows == 100
    assert f.metadata.num_row_groups >= 4  # streamed in groups, not one big table
    rec = open_recording(tmp_path)
    assert rec.table("events").column("t").to_pylist() == [float(i) for i in range(100)]


def test_periodic_compaction_keeps_every_row_once(tmp_path):
    """Every ``compact_every`` segments become one file; a kill mid-compaction doubles nothing."""
    import shutil

    write_meta(tmp_path, {"schema_version": 1, "status": "recording"})
    w = TableWriter(tmp_path, "system", system_schema(["MemTotal", "MemAvailable"]),
                    light_segments=True, compact_every=4)
    for seg in range(10):
        w.extend(_rows(3, t0=seg * 3))
        w.flush()
    names = sorted(p.name for p in (tmp_path / "system").glob("*.parquet"))
    assert names == ["rec-000001-000004.parquet", "rec-000005-000008.parquet",
                     "rec-000009.parquet", "rec-000010.parquet"]
    assert open_recording(tmp_path).table("system").column("t").to_pylist() == list(range(30))

    # A writer killed after renaming the compacted file but before deleting its segments:
    # the segments are still there, and must not be read twice.
    seg_dir = tmp_path / "system"
    keep = tmp_path / "keep"
    keep.mkdir()
    for p in seg_dir.glob("rec-00000[9]*.parquet"):
        shutil.copy(p, keep / p.name)
    for p in sorted(seg_dir.glob("rec-0000??.parquet")):
        shutil.copy(p, keep / p.name)
    w.extend(_rows(3, t0=30))
    w.flush()  # segment 11
    w.extend(_rows(3, t0=33))
    w.flush()  # segment 12: compacts 9..12
    for p in keep.glob("*.parquet"):
        shutil.copy(p, seg_dir / p.name)  # the segments it replaced "survive" the kill
    rec = open_recording(tmp_path)
    assert rec.table("system").column("t").to_pylist() == list(range(36))
    # a restarted writer continues the numbering after the compacted range
    w2 = TableWriter(tmp_path, "system", system_schema(["MemTotal", "MemAvailable"]))
    w2.extend(_rows(1, t0=36))
    w2.flush()
    assert (seg_dir / "rec-000013.parquet").exists()
    finalize(tmp_path)
    assert pq.read_table(tmp_path / "system.parquet").column("t").to_pylist() == list(range(37))


def test_finalize_after_an_interrupted_merge_writes_each_row_once(tmp_path, monkeypatch):
    """A merge interrupted after its merged file was renamed into place, before the segments
    were removed: merging again keeps each row once (the merged file wins), and takes the
    rows of a segment written after it."""
    from loadmem.recording import writer as writer_mod

    write_meta(tmp_path, {"schema_version": 1, "status": "recording"})
    w = TableWriter(tmp_path, "system", system_schema(["MemTotal", "MemAvailable"]))
    for seg in range(3):
        w.extend(_rows(4, t0=seg * 4))
        w.flush()
    real_rmtree = writer_mod.shutil.rmtree

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(writer_mod.shutil, "rmtree", interrupted)
    with pytest.raises(KeyboardInterrupt):
        finalize(tmp_path)
    assert (tmp_path / "system.parquet").exists() and (tmp_path / "system").is_dir()
    monkeypatch.setattr(writer_mod.shutil, "rmtree", real_rmtree)
    w.extend(_rows(2, t0=12))  # a segment after the interrupted merge
    w.flush()
    finalize(tmp_path)
    assert pq.read_table(tmp_path / "system.parquet").column("t").to_pylist() == list(range(14))
