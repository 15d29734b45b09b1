"""Where, which runtime, which remedy, on real ``loadmem run`` recordings of the bundled demo
server (recorded once per session by ``conftest.demo_pair``): the default variant's workers
run ``gc.collect()`` when idle after the load (copy-on-write unsharing of the preloaded
table); the frozen variant called ``gc.freeze()`` before forking."""

from __future__ import annotations

import json
import sys

import pytest
from demo_support import DEMO_TABLE_MB, DEMO_WORKERS
from gates_recordings import run_cli

from loadmem.analysis import analyze
from loadmem.analysis.remedies import PY_GC_FREEZE
from loadmem.recording import open_recording

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
MIB = 1 << 20


def test_a_run_snapshots_at_each_phase_end(demo_pair):
    rec = open_recording(demo_pair["default"])
    snaps = rec.table("snapshots").to_pylist()
    reasons = sorted({(s["snapshot"], s["reason"]) for s in snaps})
    assert [r for _, r in reasons] == ["start", "baseline_end", "load_end", "observe_end"]
    assert all(s["error"] is None and s["read_us"] > 0 for s in snaps)
    assert {s["depth"] for s in snaps} == {0, 1}
    assert len({s["pid"] for s in snaps}) == DEMO_WORKERS + 1
    phases = {name: (t0, t1) for name, t0, t1 in rec.phases()}
    ends = {r: min(s["t"] for s in snaps if s["reason"] == r)
            for r in ("baseline_end", "load_end", "observe_end")}
    assert ends["baseline_end"] >= phases["baseline"][1] - 1.0
    assert ends["load_end"] >= phases["load"][1] - 1.0
    assert ends["observe_end"] >= phases["observe"][1] - 1.0


def test_the_default_demo_unshares_in_anonymous_mappings_and_names_gc_freeze(demo_pair):
    a = analyze(demo_pair["default"])
    att = a.attribution
    assert att is not None
    assert (att["start"]["reason"], att["end"]["reason"]) == ("baseline_end", "observe_end")
    workers = next(g for g in att["groups"] if g["group"] == "worker")
    assert workers["processes"] == DEMO_WORKERS
    assert workers["unshared_bytes"] >= 0.25 * DEMO_TABLE_MB * MIB
    assert workers["places"][0]["kind"] == "anon"
    assert workers["places"][0]["unshared_share"] >= 0.8
    rt = workers["runtime"]
    assert rt["name"] == "cpython"
    assert rt["version"].startswith(f"{sys.version_info.major}.{sys.version_info.minor}")
    assert workers["remedy"]["applies"] is True
    cow = a.finding("cow-unsharing")
    assert cow is not None
    assert "anonymous mappings (CPython object arenas)" in cow.statement
    assert "gc.freeze()" in cow.statement and PY_GC_FREEZE in cow.statement


def test_the_fix_shows_in_the_where_figures(demo_pair):
    default = analyze(demo_pair["default"]).figures
    frozen = analyze(demo_pair["frozen"]).figures
    assert default["where.unshared_bytes"] >= 0.25 * DEMO_TABLE_MB * MIB
    assert frozen["where.unshared_bytes"] is not None
    assert frozen["where.unshared_bytes"] < 0.25 * default["where.unshared_bytes"]
    done = run_cli("compare", str(demo_pair["default"]), str(demo_pair["frozen"]), "--json")
    data = json.loads(done.stdout)
    figs = {f["metric"]: f for f in data["figures"]}
    assert figs["where.unshared_bytes"]["verdict"] == "better"
    assert figs["where.unshared_anon_bytes"]["verdict"] == "better"
