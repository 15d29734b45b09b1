"""A scenario with a LoadTestShape drives the load phase and ends it by itself."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pytest
from _run_support import SHAPE_SCENARIO, http_server, run_loadmem, write_scenario

from loadmem.recording import open_recording

pytestmark = pytest.mark.slow


def test_shape_scenario_runs_and_ends_by_itself(tmp_path: Path):
    scenario = write_scenario(tmp_path, SHAPE_SCENARIO, name="steps.py")
    out = tmp_path / "rec"
    with http_server() as (_srv, port):
        # No --load: the shape decides. The run must end without any signal.
        done = run_loadmem(str(scenario), "--target", f"http://127.0.0.1:{port}",
                           "--baseline", "1s", "--observe", "1s", "--interval", "0.5s",
                           "--out", str(out), timeout=90)
    assert done.returncode == 0, done.stderr
    rec = open_recording(out)
    start = next(e for e in rec.events("phase_start") if e["phase"] == "load")
    assert start["data"]["shape"] == "TwoSteps" and start["data"]["duration_s"] is None
    end = next(e for e in rec.events("phase_end") if e["phase"] == "load")
    assert end["data"]["reason"] == "shape"
    req = rec.table("requests")
    agg = req.filter(pc.equal(req.column("name").cast("string"), "Aggregated"))
    users = [u for u in agg.column("users").to_pylist() if u]
    assert max(users) == 4 and min(users) <= 2  # both steps of the shape ran
    assert rec.meta["scenario_shape"] == "TwoSteps"
