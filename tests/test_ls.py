"""`loadmem ls`: one line per recording from meta.json and a few columns, never an analysis."""

from __future__ import annotations

import json
import shutil

import pytest
from gates_recordings import run_cli, shared_recording

from loadmem.units import format_duration


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    flat = shared_recording(tmp_path_factory, "flat-a", overwrite=False)
    drain = shared_recording(tmp_path_factory, "drain-a", overwrite=True)
    root = tmp_path_factory.mktemp("ls")
    shutil.copytree(flat, root / "flat")
    shutil.copytree(drain, root / "nested" / "drain")  # recordings/<project>/<rec>
    # The processes table (the big one) is not read: a damaged one does not matter.
    shutil.copytree(flat, root / "damaged")
    (root / "damaged" / "processes.parquet").write_bytes(b"not parquet")
    (root / "broken").mkdir()
    (root / "broken" / "meta.json").write_text("{not json")
    (root / "not-a-recording").mkdir()
    return root


def test_lists_every_recording_with_its_figures(root):
    done = run_cli("ls", str(root))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:4] == ["recording", "label", "started", "(UTC)"]
    rows = {ln.split()[0]: ln for ln in lines[2:]}
    assert set(rows) == {"flat", "drain", "damaged", "broken"}
    assert "flat-a" in rows["flat"] and "drain-a" in rows["drain"]
    assert "pid=" in rows["flat"] or "pids=" in rows["flat"]
    assert "unreadable meta.json" in rows["broken"]

    done = run_cli("ls", str(root), "--json")
    entries = {json.loads(ln)["path"].rsplit("/", 1)[-1]: json.loads(ln)
               for ln in done.stdout.splitlines()}
    flat, damaged = entries["flat"], entries["damaged"]
    assert flat["label"] == "flat-a" and flat["schema_version"] == 1
    # ~3-4 s: the fixture stops the recorder once its children are done (longer when busy)
    assert 2.5 <= flat["duration_s"] <= 30.0
    assert "complete" in rows["flat"] and f" {format_duration(flat['duration_s'])} " in \
        rows["flat"]
    assert flat["process_rows"] > 10 and damaged["process_rows"] == 0
    assert damaged["duration_s"] == flat["duration_s"]
    assert flat["requests"] is None and flat["used_delta_bytes"] is not None


def test_a_single_recording_and_bad_paths(root, tmp_path):
    done = run_cli("ls", str(root / "flat"))
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 3
    done = run_cli("ls", str(tmp_path / "absent"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    done = run_cli("ls", str(tmp_path))
    assert done.returncode == 0 and "no recordings in" in done.stderr
