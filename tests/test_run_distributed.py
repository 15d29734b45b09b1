"""``--processes N``: Locust's own master/worker mode, the workers recorded as load generator."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pytest
from _run_support import http_server, run_loadmem, write_scenario

from loadmem.recording import open_recording

pytestmark = pytest.mark.slow


def test_processes_runs_locust_workers_under_the_child(tmp_path: Path):
    scenario = write_scenario(tmp_path, wait=0.05)
    out = tmp_path / "rec"
    with http_server() as (_srv, port):
        done = run_loadmem(str(scenario), "--target", f"http://127.0.0.1:{port}",
                           "--processes", "2", "--users", "4", "--baseline", "1s",
                           "--load", "5s", "--observe", "1s", "--interval", "0.5s",
                           "--out", str(out), timeout=120)
    assert done.returncode == 0, done.stderr
    rec = open_recording(out)
    loadgen = {(r["pid"], r["depth"]) for r in rec.table("processes").to_pylist()
               if r["role"] == "loadgen"}
    assert sum(1 for _, d in loadgen if d == 0) == 1  # the Locust master (our child)
    assert sum(1 for _, d in loadgen if d == 1) >= 2  # its two worker processes
    req = rec.table("requests")
    agg = req.filter(pc.equal(req.column("name").cast("string"), "Aggregated"))
    assert sum(agg.column("requests").to_pylist()) > 0
    totals = rec.events("load_stats")[0]["data"]["rows"]
    total = next(r for r in totals if r["name"] == "Aggregated")
    assert total["requests"] == sum(agg.column("requests").to_pylist())


def test_processes_and_master_conflict(tmp_path: Path):
    scenario = write_scenario(tmp_path)
    done = run_loadmem(str(scenario), "--target", "demo", "--processes", "2", "--master",
                       "--out", str(tmp_path / "rec"))
    assert done.returncode == 2 and "cannot be combined" in done.stderr
    assert not (tmp_path / "rec").exists()
