"""End to end: ``loadmem run`` against the bundled demo server, default and frozen variants.

Small sizes (24 MiB table, 2 workers, baseline 2 s, load 4 s, observe 8 s, idle GC 1 s after
the load with a 1 s stagger). Both runs go at once to keep the test short; each run's
figures are per process, so they do not disturb each other's assertions. The recorder gets
``--interval 0.5s --pss-budget 25% --pss-max-age 2s`` so that smaps_rollup is re-read within
the 8 s observe phase even for a process that does not fault (the frozen variant's workers):
at the defaults (2 %, 15 s) an idle process is re-read every 15 s, right for hours of
observation, too slow for a test that lasts seconds.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pyarrow.compute as pc
import pytest
from _run_support import loadmem_cmd, write_scenario

from loadmem.recording import open_recording

MiB = 1 << 20
pytestmark = pytest.mark.slow


def _args(scenario: Path, out: Path, variant: str) -> list[str]:
    return [str(scenario), "--target", "demo", "--demo-variant", variant,
            "--demo-workers", "2", "--demo-table-mb", "24",
            "--demo-idle-gc-after", "1s", "--demo-idle-gc-stagger", "1s",
            "--baseline", "2s", "--load", "4s", "--observe", "8s", "--users", "5",
            "--interval", "0.5s", "--pss-budget", "25%", "--pss-max-age", "2s",
            "--out", str(out), "--label", variant]


CODES: dict[str, int] = {}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("run-demo")
    scenario = write_scenario(base, wait=0.01)
    procs = {}
    outs = {}
    for variant in ("default", "frozen"):
        outs[variant] = base / variant
        procs[variant] = subprocess.Popen(loadmem_cmd(*_args(scenario, outs[variant], variant)),
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True)
    for variant, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        # 0, or 1 when the verdict has a finding at or above --fail-on (warning)
        assert proc.returncode in (0, 1), f"{variant}: {stderr}\n{stdout}"
        assert f"recording: {outs[variant]}" in stdout
        CODES[variant] = proc.returncode
    return outs


def _worker_growth(path: Path) -> dict[int, tuple[int, int, int, int]]:
    """Per demo worker: (private_dirty at observe start, at end, rss at start, at end)."""
    rec = open_recording(path)
    observe = next(p for p in rec.phases() if p[0] == "observe")
    t0 = observe[1]
    rows = rec.table("processes").to_pylist()
    out = {}
    workers = {r["pid"] for r in rows if r["role"] == "target" and r["depth"] == 1}
    for pid in workers:
        fresh = [r for r in rows if r["pid"] == pid and r["pss_fresh"]]
        before = [r for r in fresh if r["t"] <= t0]
        assert before and fresh[-1]["t"] > t0, f"worker {pid}: no fresh smaps reads around t0"
        a, b = before[-1], fresh[-1]
        out[pid] = (a["private_dirty"], b["private_dirty"], a["rss"], b["rss"])
    return out


def test_recording_has_phases_requests_and_processes(runs: dict[str, Path]):
    rec = open_recording(runs["default"])
    assert rec.complete and rec.meta["kind"] == "run" and rec.meta["label"] == "default"
    assert rec.meta["target"] == "demo" and rec.meta["scenario"].endswith("scenario.py")
    assert "--out" in rec.meta["argv"]
    phases = {p[0]: p for p in rec.phases()}
    assert list(phases) == ["baseline", "load", "observe"]
    assert all(end is not None and end > start for _, start, end in phases.values())
    _, load_start, load_end = phases["load"]
    assert phases["baseline"][2] <= load_start and load_end <= phases["observe"][1]
    # observe ends at the recorder's last tick (the closing one, taken at its stop, which reads
    # every moved PSS figure): that tick is observe's last sample, every figure current, and
    # the stop snapshot after it is not counted in observe
    own = rec.table("recorder", ["t", "pss_stale_s"]).to_pylist()
    assert own[-1]["t"] == rec.duration <= phases["observe"][2] < rec.duration + 0.5
    assert own[-1]["pss_stale_s"] == 0.0

    req = rec.table("requests")
    agg = req.filter(pc.equal(req.column("name").cast("string"), "Aggregated")).to_pylist()
    busy = [r for r in agg if r["requests"] > 0]
    assert len(busy) >= 2, agg
    for r in busy:
        assert load_start < r["t"] <= load_end + 1.0
        assert r["p50_ms"] is not None and r["p95_ms"] >= r["p50_ms"]
        assert r["users"] > 0 and 0.5 < r["interval_s"] < 2.0
    endpoints = {r["name"] for r in req.to_pylist()} - {"Aggregated"}
    assert endpoints == {"/", "/health"}
    totals = rec.events("load_stats")[0]["data"]["rows"]
    total = next(r for r in totals if r["name"] == "Aggregated")
    assert total["requests"] == sum(r["requests"] for r in agg)
    assert total["failures"] == 0

    procs = rec.table("processes").to_pylist()
    targets = {(r["pid"], r["depth"]) for r in procs if r["role"] == "target"}
    assert sum(1 for _, d in targets if d == 0) == 1  # the master, found by port
    assert sum(1 for _, d in targets if d == 1) == 2  # its two workers
    loadgen_pid = rec.events("phase_start")[1]["data"]["loadgen_pid"]
    assert any(r["pid"] == loadgen_pid and r["role"] == "loadgen" for r in procs)


def test_default_variant_unshares_with_flat_rss_frozen_does_not(runs: dict[str, Path]):
    default = _worker_growth(runs["default"])
    frozen = _worker_growth(runs["frozen"])
    assert len(default) == 2 and len(frozen) == 2
    for pd0, pd1, rss0, rss1 in default.values():
        assert pd1 - pd0 >= 8 * MiB, default  # a good part of the 24 MiB table
        assert abs(rss1 - rss0) <= 0.05 * rss0, default  # RSS flat: the puzzle
    grew_default = sum(b - a for a, b, _, _ in default.values())
    grew_frozen = sum(max(0, b - a) for a, b, _, _ in frozen.values())
    assert grew_frozen < 0.2 * grew_default, (default, frozen)


def test_run_and_analyze_agree_on_the_exit_code(runs: dict[str, Path]):
    """One exit-code table: `run` exits as `analyze` does on the same recording (the
    default variant's copy-on-write drain is a warning: exit 1 at the default --fail-on)."""
    import sys

    assert CODES["default"] == 1
    for variant, path in runs.items():
        analyzed = subprocess.run([sys.executable, "-m", "loadmem", "analyze", str(path)],
                                  capture_output=True, text=True, timeout=60)
        assert analyzed.returncode == CODES[variant], (variant, analyzed.stdout)
