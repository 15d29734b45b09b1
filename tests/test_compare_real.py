"""`loadmem compare` on real recordings: a copy-on-write drain is a regression, repeats are not.

Recordings: forked children sharing 32 MiB each, under the real recorder; "drain" children
overwrite every inherited page after a quiet lead-in, "flat" children only sleep.
"""

from __future__ import annotations

import json
import shutil

import pytest
from gates_recordings import run_cli, shared_recording

MIB = 2**20


@pytest.fixture(scope="module")
def recs(tmp_path_factory):
    return {
        "flat": shared_recording(tmp_path_factory, "flat-a", overwrite=False),
        "flat2": shared_recording(tmp_path_factory, "flat-b", overwrite=False),
        "drain": shared_recording(tmp_path_factory, "drain-a", overwrite=True),
    }


def test_drain_is_a_regression_with_the_mb_figure(recs, tmp_path):
    plot = tmp_path / "cmp.png"
    done = run_cli("compare", str(recs["flat"]), str(recs["drain"]),
                   "--fail-on-regression", "10%", "--plot", str(plot))
    assert done.returncode == 1, done.stderr
    headline = done.stdout.splitlines()[0]
    assert "regression(s): cow.unshared_bytes +" in headline
    row = next(ln for ln in done.stdout.splitlines()
               if ln.strip().startswith("cow.unshared_bytes"))
    assert "WORSE REGRESSION" in row
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:4] == b"\x89PNG"

    done = run_cli("compare", str(recs["flat"]), str(recs["drain"]), "--json")
    assert done.returncode == 0  # no allowance given: informative only
    data = json.loads(done.stdout)
    figs = {f["metric"]: f for f in data["figures"]}
    cow = figs["cow.unshared_bytes"]
    assert cow["verdict"] == "worse" and 40 * MIB < cow["delta"] < 90 * MIB
    assert figs["watched.pss_delta_bytes"]["verdict"] == "worse"
    assert figs["watched.rss_end_bytes"]["verdict"] == "within noise"  # RSS flat
    assert figs["shared_fraction.end"]["verdict"] == "worse"
    assert [r["side"] for r in data["recordings"]] == ["base", "new"]


def test_same_behaviour_is_within_noise(recs):
    done = run_cli("compare", str(recs["flat"]), str(recs["flat2"]),
                   "--fail-on-regression", "10%", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(done.stdout)
    assert data["regressions"] == []
    figs = {f["metric"]: f for f in data["figures"]}
    for name in ("cow.unshared_bytes", "watched.pss_delta_bytes", "watched.pss_end_bytes",
                 "watched.rss_end_bytes", "workers.pss_per_worker_end_bytes",
                 "sharing_ratio.end"):
        assert figs[name]["verdict"] == "within noise", figs[name]


def test_repeats_per_side_and_markdown(recs):
    # two flat recordings as the base side: their spread is the noise of each figure
    done = run_cli("compare", str(recs["flat"]), str(recs["flat2"]), str(recs["drain"]),
                   "--base", "2", "--markdown", "--fail-on-regression", "10%")
    assert done.returncode == 1
    assert done.stdout.startswith("### ❌ loadmem compare")
    row = next(ln for ln in done.stdout.splitlines() if ln.startswith("| `cow.unshared_bytes`"))
    assert row.count("|") == 9  # figure, 3 recordings, change, rel, noise, verdict
    assert "worse" in row.lower()


def test_schema_mismatch_and_bad_input_exit_2(recs, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(recs["flat"], old)
    meta = json.loads((old / "meta.json").read_text())
    meta["schema_version"] = 0
    (old / "meta.json").write_text(json.dumps(meta))
    done = run_cli("compare", str(old), str(recs["flat2"]))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "different schema versions" in done.stderr
    assert "old (v0)" in done.stderr
    done = run_cli("compare", str(recs["flat"]), str(tmp_path / "missing"))
    assert done.returncode == 2 and "no recording at" in done.stderr
    done = run_cli("compare", str(recs["flat"]), str(recs["flat2"]), "--base", "2")
    assert done.returncode == 2 and "--base 2" in done.stderr
