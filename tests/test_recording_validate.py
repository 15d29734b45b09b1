"""The validation edge of a recording (``loadmem.recording.validate``) and the reader's
de-duplication: what is a note, what is an error, and the merged file winning."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from loadmem.errors import LoadmemError
from loadmem.recording import open_recording
from loadmem.recording.schema import EVENTS, PROCESSES, system_schema
from loadmem.recording.validate import check_file, check_meta, read_meta
from loadmem.recording.writer import TableWriter, _merge_table, finalize, write_meta

BASE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _system_rows(n: int, t0: float = 0.0) -> list[dict]:
    return [{"ts": BASE + dt.timedelta(seconds=t0 + i), "t": t0 + i, "tick": int(t0 + i),
             "MemTotal": 1 << 30, "MemAvailable": (1 << 29) - i * 4096} for i in range(n)]


def _event(t: float, message: str) -> dict:
    return {"ts": BASE + dt.timedelta(seconds=t), "t": t, "kind": "note", "message": message}


def _recording(root: Path, status: str = "complete") -> Path:
    write_meta(root, {"schema_version": 1, "status": status, "rows": {"system": 4}})
    w = TableWriter(root, "system", system_schema(["MemTotal", "MemAvailable"]))
    w.extend(_system_rows(4))
    w.flush()
    if status == "complete":
        finalize(root)
    return root


# --- meta.json --------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("raw", "kept", "note"),
    [
        ({"schema_version": "one"}, {}, 'schema_version is "one", not an integer'),
        ({"interval_s": "abc"}, {}, 'interval_s is "abc", not a number above 0'),
        ({"interval_s": 0}, {}, "interval_s is 0, not a number above 0"),
        ({"interval_s": float("nan")}, {}, "interval_s is NaN"),
        ({"label": 12345}, {"label": "12345"}, None),  # a number is read as its text
        ({"label": None}, {"label": None}, None),
        ({"label": ["a"]}, {}, 'label is ["a"], not text'),
        ({"selection": "pid=3"}, {}, "selection is"),
        ({"argv_redacted": "yes"}, {}, "argv_redacted is"),
        ({"custom_key": [1, {"x": 2}]}, {"custom_key": [1, {"x": 2}]}, None),  # unknown: kept
        ({"schema_version": 1.0, "cpus": 2}, {"schema_version": 1, "cpus": 2}, None),
    ],
)
def test_meta_keys_of_the_wrong_type_are_dropped_with_a_note(raw, kept, note) -> None:
    meta, notes = check_meta(raw)
    assert meta == kept
    if note is None:
        assert notes == []
    else:
        assert len(notes) == 1 and note in notes[0] and notes[0].startswith("meta.json: ")


@pytest.mark.parametrize(
    ("content", "note"),
    [
        (b"[1, 2]", "meta.json holds a list, not an object"),
        (b'"text"', "meta.json holds a string"),
        (b"{not json", "unreadable meta.json (not valid JSON"),
        (b"\xff\xfe\x00garbage", "unreadable meta.json (not valid JSON"),
        (b"", "unreadable meta.json"),
    ],
)
def test_unreadable_meta_is_a_note(tmp_path: Path, content: bytes, note: str) -> None:
    (tmp_path / "meta.json").write_bytes(content)
    meta, notes = read_meta(tmp_path)
    assert meta == {} and len(notes) == 1 and notes[0].startswith(note), notes


def test_a_bom_and_utf16_meta_are_read(tmp_path: Path) -> None:
    for encoding in ("utf-8-sig", "utf-16"):
        (tmp_path / "meta.json").write_bytes(json.dumps({"label": "é"}).encode(encoding))
        assert read_meta(tmp_path) == ({"label": "é"}, [])


def test_damaged_meta_is_analysed_with_the_note(tmp_path: Path) -> None:
    rec = _recording(tmp_path)
    (rec / "meta.json").write_text("[1, 2]")
    opened = open_recording(rec)
    assert opened.table("system").num_rows == 4
    assert opened.label is None and opened.schema_version == 1  # from the files' metadata
    assert any("holds a list" in n for n in opened.notes)


def test_a_newer_schema_in_the_files_is_refused_when_meta_is_lost(tmp_path: Path) -> None:
    rec = _recording(tmp_path)
    table = pq.read_table(rec / "system.parquet")
    meta = dict(table.schema.metadata)
    meta[b"loadmem.schema_version"] = b"7"
    pq.write_table(table.replace_schema_metadata(meta), rec / "system.parquet")
    (rec / "meta.json").unlink()
    with pytest.raises(LoadmemError, match="schema 7, newer"):
        open_recording(rec)


# --- table files ------------------------------------------------------------------------

def test_file_checks_name_the_problem(tmp_path: Path) -> None:
    good = _recording(tmp_path / "r") / "system.parquet"
    assert check_file(good, "system") is None
    data = good.read_bytes()
    cases = {
        "empty": (b"", "is empty (0 bytes)"),
        "cut": (data[: len(data) // 2], "is truncated"),
        "noise": (b"\x01" * 300, "is not a Parquet file (300 bytes"),
    }
    for name, (content, problem) in cases.items():
        f = tmp_path / f"{name}.parquet"
        f.write_bytes(content)
        assert problem in (check_file(f, "system") or ""), name
    typed = tmp_path / "typed.parquet"
    pq.write_table(pa.table({"t": [0.0], "tick": [0], "pid": [1], "start_time": [2],
                             "rss": ["a lot"]}), typed)
    assert check_file(typed, "processes") == "has column rss of type string, expected int64"
    pq.write_table(pa.table({"t": [0.0], "MemTotal": [1]}), typed)
    assert check_file(typed, "processes") == "has no column tick, pid, start_time"
    assert check_file(typed, "system") is None


def test_a_broken_segment_next_to_good_ones_is_a_note(tmp_path: Path) -> None:
    write_meta(tmp_path, {"schema_version": 1, "status": "recording"})
    w = TableWriter(tmp_path, "system", system_schema(["MemTotal", "MemAvailable"]))
    for seg in range(3):
        w.extend(_system_rows(2, t0=2 * seg))
        w.flush()
    broken = sorted((tmp_path / "system").glob("*.parquet"))[1]
    broken.write_bytes(broken.read_bytes()[:40])
    rec = open_recording(tmp_path)
    assert rec.table("system").column("t").to_pylist() == [0, 1, 4, 5]
    assert any(f"system/{broken.name}: it is truncated" in n for n in rec.notes), rec.notes


def test_an_unreadable_processes_table_is_an_error_naming_the_file(tmp_path: Path) -> None:
    rec = _recording(tmp_path)
    (rec / "processes.parquet").write_bytes(b"\x00" * 2000)
    with pytest.raises(LoadmemError, match=r"processes\.parquet is not a Parquet file") as e:
        open_recording(rec)
    assert "\n" not in str(e.value)


def test_a_missing_table_that_meta_promises_is_an_error(tmp_path: Path) -> None:
    rec = _recording(tmp_path)
    (rec / "system.parquet").unlink()
    (rec / "events.parquet").write_bytes(b"")  # something is left, so it is a recording
    with pytest.raises(LoadmemError, match=r"system\.parquet and system/ are missing "
                                           r"\(meta\.json says 4 rows were written\)"):
        open_recording(rec)


def test_a_bad_data_page_behind_a_good_footer_is_an_error_for_system(tmp_path: Path) -> None:
    rec = _recording(tmp_path)
    f = rec / "system.parquet"
    data = bytearray(f.read_bytes())
    footer_len = int.from_bytes(data[-8:-4], "little")
    for i in range(4, len(data) - footer_len - 8):  # scramble every data page
        data[i] = 0xFF
    f.write_bytes(bytes(data))
    opened = open_recording(rec)  # the footer is fine
    with pytest.raises(LoadmemError, match="the system table cannot be read"):
        opened.table("system")


# --- de-duplication: the merged file wins -----------------------------------------------

def test_an_interrupted_merge_reads_every_row_once(tmp_path: Path) -> None:
    """Issue 11 item 8: merged file renamed into place, segments not yet deleted."""
    write_meta(tmp_path, {"schema_version": 1, "status": "complete"})
    w = TableWriter(tmp_path, "events", EVENTS)
    for i in range(5):
        w.append(_event(float(i), f"e{i}"))
        if i % 2:
            w.flush()
    w.flush()
    segments = sorted((tmp_path / "events").glob("*.parquet"))
    _merge_table("events", segments, tmp_path / "events.parquet")  # ...then killed
    assert len(list((tmp_path / "events").glob("*.parquet"))) == 3
    rec = open_recording(tmp_path)
    events = rec.table("events")
    assert events.num_rows == 5
    assert events.column("message").to_pylist() == [f"e{i}" for i in range(5)]
    assert any("merge was interrupted" in n for n in rec.notes)


def test_segments_added_to_a_merged_recording_are_kept(tmp_path: Path) -> None:
    """Rows attached later (another writer, the same time span) are new, not duplicates."""
    write_meta(tmp_path, {"schema_version": 1, "status": "complete"})
    w = TableWriter(tmp_path, "events", EVENTS)
    w.extend([_event(float(i), f"rec{i}") for i in range(4)])
    w.flush()
    finalize(tmp_path)
    attach = TableWriter(tmp_path, "events", EVENTS, writer_id="attach")
    attach.extend([_event(i + 0.5, f"att{i}") for i in range(3)])
    attach.flush()
    rec = open_recording(tmp_path)
    assert rec.table("events").num_rows == 7
    assert not any("merge was interrupted" in n for n in rec.notes)


def test_partly_merged_process_rows(tmp_path: Path) -> None:
    """A merged processes file holding ticks 0-2, and segments holding ticks 0-4: the rows of
    ticks 3-4 are read from the segments, ticks 0-2 once."""
    write_meta(tmp_path, {"schema_version": 1, "status": "recording"})
    w = TableWriter(tmp_path, "processes", PROCESSES)
    for tick in range(5):
        for pid in (10, 11):
            w.append({"ts": BASE + dt.timedelta(seconds=tick), "t": float(tick), "tick": tick,
                      "pid": pid, "start_time": 1, "rss": 4096 * tick})
        w.flush()
    sys_w = TableWriter(tmp_path, "system", system_schema(["MemTotal", "MemAvailable"]))
    sys_w.extend(_system_rows(5))
    sys_w.flush()
    segments = sorted((tmp_path / "processes").glob("*.parquet"))
    _merge_table("processes", segments[:3], tmp_path / "processes.parquet")
    rec = open_recording(tmp_path)
    table = rec.table("processes")
    assert table.num_rows == 10
    assert sorted(zip(table.column("tick").to_pylist(), table.column("pid").to_pylist(),
                      strict=True)) == [(t, p) for t in range(5) for p in (10, 11)]
