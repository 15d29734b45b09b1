"""Corpus: a Node.js server leaking during the load, flat afterwards (a step, not a slope).

``servers/leak.js`` keeps 48 KiB per request in a global array. The server's own count of
what it kept (requests × 48 KiB) and its VmRSS read by the test before and after the run
are the independent measures. Right verdict: growth flagged by the run's verdict and on the
whole recording, sized near what was kept; the load generator (Locust) never among the
growers.

The observe phase is 10 times the load, as in real runs: the recording is mostly flat.
"""

from __future__ import annotations

import re

import pytest
from corpus_support import GROWTH, MiB, near

pytestmark = [pytest.mark.slow, pytest.mark.corpus]


def test_node_kept_memory_during_load(node_leak_run):
    f = node_leak_run.facts
    assert f["kept_bytes"] > 24 * MiB, f
    assert near(f["node_rss_delta_bytes"], f["kept_bytes"], 0.35), f


@pytest.mark.parametrize("window", [None, "whole"])
def test_node_leak_flagged(node_leak_run, window):
    a = node_leak_run.analyze(window)
    kept = node_leak_run.facts["kept_bytes"]
    growth = a.require(GROWTH, at_least="info")
    assert growth["t_start"] < node_leak_run.phase("load")[1] - 1.0, a.describe()
    assert near(growth["explained_bytes"] or 0, kept, 0.35), (kept, a.describe())
    assert str(node_leak_run.facts["node_pid"]) in growth["statement"], a.describe()


def _loadgen_pids(a) -> list[int]:
    return [p["pid"] for p in a.data["processes"] if p["role"] == "loadgen"]


@pytest.mark.parametrize("window", [None, "whole", "load"])
def test_node_loadgen_never_a_grower(node_leak_run, window):
    a = node_leak_run.analyze(window)
    loadgen = _loadgen_pids(a)
    assert loadgen, "the run recorded no load generator process"
    for f in a.data["findings"]:
        text = f["statement"] + " " + " ".join(
            str(k) for v in f["evidence"].values() if isinstance(v, dict) for k in v)
        for pid in loadgen:
            assert not re.search(rf"\b{pid}\b", text), (f["id"], pid, a.describe())
