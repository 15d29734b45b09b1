"""Ctrl-C (SIGINT to the ``loadmem run`` parent) keeps the recording, as docs/run.md says."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from _run_support import http_server, loadmem_cmd, meta, phase_started, wait_for, write_scenario

from loadmem.recording import open_recording

pytestmark = pytest.mark.slow


def _start(scenario: Path, port: int, out: Path, load: str, observe: str) -> subprocess.Popen:
    return subprocess.Popen(
        loadmem_cmd(str(scenario), "--target", f"http://127.0.0.1:{port}", "--users", "2",
                    "--baseline", "1s", "--load", load, "--observe", observe,
                    "--interval", "0.5s", "--out", str(out), "--label", "sig"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_ctrl_c_during_observe_ends_it_early_and_keeps_everything(tmp_path: Path):
    scenario = write_scenario(tmp_path, wait=0.05)
    out = tmp_path / "rec"
    with http_server() as (_srv, port):
        proc = _start(scenario, port, out, "2s", "10m")
        try:
            wait_for(lambda: phase_started(out, "observe"), 60, "the observe phase")
            time.sleep(2.0)  # let the recorder sample the observe phase a few times
            assert proc.poll() is None
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, stderr
    rec = open_recording(out)
    assert rec.complete and not rec.notes
    phases = {p[0]: p for p in rec.phases()}
    assert set(phases) == {"baseline", "load", "observe"}
    ends = {e["phase"]: e["data"]["reason"] for e in rec.events("phase_end")}
    assert ends["observe"] == "interrupted" and ends["load"] == "duration"
    # The recording covers the run up to the signal: samples through the observe phase.
    t = rec.table("system", ["t"]).column("t").to_pylist()
    assert t and max(t) >= phases["observe"][1]
    assert phases["observe"][2] - phases["observe"][1] < 600
    assert rec.table("requests").num_rows > 0
    assert "recording: " in stdout


def test_second_ctrl_c_stops_at_once_recording_readable(tmp_path: Path):
    scenario = write_scenario(tmp_path, wait=0.05)
    out = tmp_path / "rec"
    with http_server() as (_srv, port):
        proc = _start(scenario, port, out, "10m", "10m")
        try:
            wait_for(lambda: phase_started(out, "load"), 60, "the load phase")
            time.sleep(1.5)  # let a request or two complete
            proc.send_signal(signal.SIGINT)  # 1st: stop the load, go on to a short observe
            wait_for(lambda: phase_started(out, "observe"), 30, "the short observe phase")
            proc.send_signal(signal.SIGINT)  # 2nd: stop now
            _stdout, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130, stderr
    assert meta(out)["status"] == "interrupted"
    rec = open_recording(out)
    ends = {e["phase"]: e["data"]["reason"] for e in rec.events("phase_end")}
    assert ends == {"baseline": "duration", "load": "interrupted", "observe": "aborted"}
    assert rec.table("system").num_rows > 0 and rec.table("requests").num_rows > 0
    observe = rec.events("phase_start")[-1]
    assert observe["phase"] == "observe" and observe["data"]["duration_s"] == 60


def test_ctrl_c_during_baseline_stops_before_any_load(tmp_path: Path):
    scenario = write_scenario(tmp_path, wait=0.05)
    out = tmp_path / "rec"
    with http_server() as (_srv, port):
        proc = subprocess.Popen(
            loadmem_cmd(str(scenario), "--target", f"http://127.0.0.1:{port}",
                        "--baseline", "10m", "--load", "1m", "--interval", "0.5s",
                        "--out", str(out)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: phase_started(out, "baseline"), 60, "the baseline phase")
            proc.send_signal(signal.SIGINT)
            _stdout, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, stderr
    rec = open_recording(out)
    assert rec.complete
    assert [p[0] for p in rec.phases()] == ["baseline"]
    assert rec.events("phase_end")[0]["data"]["reason"] == "interrupted"
    assert rec.table("requests").num_rows == 0  # no load was sent
    # The Locust child waited in its init event (the preflight) and was told to abort:
    # recorded as loadgen, it never started a test.
    assert not rec.events("load_stats") and not rec.events("load_failed")
