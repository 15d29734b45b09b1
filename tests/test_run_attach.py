"""``--no-record`` writes a run-only recording that joins a server-side recording by ``ts``."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _run_support import http_server, meta, run_loadmem, wait_for, write_scenario

from loadmem.errors import LoadmemError
from loadmem.load.attach import attach_run
from loadmem.load.attach import main as attach_main
from loadmem.recording import open_recording

pytestmark = pytest.mark.slow


def test_no_record_then_attach_to_a_server_recording(tmp_path: Path):
    scenario = write_scenario(tmp_path, wait=0.05)
    run_dir, server_rec = tmp_path / "run", tmp_path / "server"
    with http_server() as (_srv, port):
        # "The server's machine": a plain `loadmem record` of the server, found by port.
        recorder = subprocess.Popen(
            [sys.executable, "-m", "loadmem", "record", "--port", str(port), "--interval",
             "0.5s", "--out", str(server_rec)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_for(lambda: (server_rec / "meta.json").exists(), 30, "the server recording")
            done = run_loadmem(str(scenario), "--target", f"http://127.0.0.1:{port}",
                               "--no-record", "--users", "2", "--baseline", "1s", "--load", "2s",
                               "--observe", "1s", "--out", str(run_dir))
        finally:
            recorder.send_signal(signal.SIGTERM)
            recorder.communicate(timeout=30)
    assert done.returncode == 0, done.stderr
    assert "docs/multi-machine.md" in done.stdout

    run = open_recording(run_dir)
    assert run.meta["recorded"] is False and run.meta["kind"] == "run"
    assert not run.has("processes") and run.table("requests").num_rows > 0
    assert [p[0] for p in run.phases()] == ["baseline", "load", "observe"]

    assert attach_main([str(run_dir), str(server_rec)]) == 0
    rec = open_recording(server_rec)
    assert rec.complete
    assert meta(server_rec)["run"]["scenario"].endswith("scenario.py")
    phases = {p[0]: p for p in rec.phases()}
    assert list(phases) == ["baseline", "load", "observe"]
    # Phases land inside the server recording's time line, and keep their lengths.
    sys_t = rec.table("system", ["t"]).column("t").to_pylist()
    run_phases = {p[0]: p for p in run.phases()}
    for name, (_, t0, t1) in phases.items():
        assert min(sys_t) <= t0 < t1 <= max(sys_t) + 1.0
        r0, r1 = run_phases[name][1], run_phases[name][2]
        assert abs((t1 - t0) - (r1 - r0)) < 0.01
    req = rec.table("requests").to_pylist()
    assert req and all(phases["load"][1] <= r["t"] <= phases["load"][2] + 1.0 for r in req)
    # The load's requests hit the recorded server: its CPU time rose during the load phase.
    procs = [r for r in rec.table("processes").to_pylist() if r["role"] == "target"]
    before = max((r["utime"] + r["stime"] for r in procs if r["t"] <= phases["load"][1]),
                 default=0.0)
    after = max(r["utime"] + r["stime"] for r in procs)
    assert after > before

    # Attaching the same run twice would duplicate its rows: refused.
    with pytest.raises(LoadmemError, match="already attached"):
        attach_run(run_dir, server_rec)
