"""`loadmem compare` on real `loadmem run` recordings of the bundled demo server.

The default variant's workers run a full gc.collect() when idle after the load, writing to
every inherited object header: copy-on-write unsharing. The frozen variant (gc.freeze()
before fork) does not. Compared with frozen as the base, default must show the drain as a
regression with its MB figure while its RSS stays within noise. Both runs go at once to
keep the test short; the figures compared are per process, so they do not disturb each
other.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from gates_recordings import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
MIB = 2**20
TABLE_MB = 32


def _cmd(out: Path, variant: str) -> list[str]:
    return [sys.executable, "-m", "loadmem", "run", "demo", "--target", "demo",
            "--demo-variant", variant, "--demo-workers", "2",
            "--demo-table-mb", str(TABLE_MB), "--demo-idle-gc-after", "1s",
            "--demo-idle-gc-stagger", "1s", "--baseline", "2s", "--load", "4s",
            "--observe", "8s", "--users", "5", "--interval", "0.5s", "--pss-budget", "25%",
            "--out", str(out), "--label", variant,
            "--fail-on", "never"]  # the verdict's exit code is test_run_demo_e2e's


def test_default_vs_frozen_reports_the_drain(tmp_path):
    outs = {v: tmp_path / v for v in ("frozen", "default")}
    procs = {v: subprocess.Popen(_cmd(o, v), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for v, o in outs.items()}
    for v, p in procs.items():
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, f"{v}: {err}\n{out}"

    done = run_cli("compare", str(outs["frozen"]), str(outs["default"]),
                   "--fail-on-regression", "10%", "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    data = json.loads(done.stdout)
    figs = {f["metric"]: f for f in data["figures"]}
    cow = figs["cow.unshared_bytes"]
    assert cow["regression"] and cow["verdict"] == "worse"
    assert cow["delta"] > 0.25 * TABLE_MB * MIB  # workers unshared a good part of the table
    assert "cow.unshared_bytes" in data["regressions"]
    assert data["headline"].startswith(f"{len(data['regressions'])} regression(s): "
                                       "cow.unshared_bytes +")
    assert " MB" in data["headline"]
    assert figs["watched.rss_end_bytes"]["verdict"] == "within noise"
    # the labels name the sides, and noise came from the baseline phases
    assert [r["label"] for r in data["recordings"]] == ["frozen", "default"]
    assert {r["noise_window"] for r in data["recordings"]} == {"baseline phase"}
    # the load side was measured on both: latency and request rate are compared
    assert figs["latency.p95_ms"]["base"] is not None and figs["requests.rps"]["new"] > 0
