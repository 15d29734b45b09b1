"""End to end: a real short `loadmem run --target demo ... --gate ci/loadmem.toml`.

The run starts the bundled pre-fork demo server (frozen variant: gc.freeze() before fork,
so its workers keep sharing; 2 workers, small table), loads it for a
few seconds on 127.0.0.1, observes, analyses and evaluates the example gates of
``ci/loadmem.toml``: the exit code must be the gates' verdict. Then ``loadmem gate`` on the
same recording with an impossible budget must fail with exit 1 and a JUnit file.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from gates_recordings import run_cli
from test_gates_report import check_junit_shape

from loadmem.gates.config import load_config

ROOT = Path(__file__).resolve().parent.parent
CI_CONFIG = ROOT / "ci" / "loadmem.toml"

pytestmark = pytest.mark.slow


@pytest.mark.timeout(180)
def test_run_with_gate_then_gate_again(tmp_path):
    out = tmp_path / "run"
    done = run_cli(
        "run", "demo", "--target", "demo", "--demo-variant", "frozen",
        "--demo-workers", "2", "--demo-table-mb", "24",
        "--users", "5", "--baseline", "2s", "--load", "4s", "--observe", "6s",
        "--out", str(out), "--label", "e2e", "--gate", str(CI_CONFIG),
        "--fail-on", "never",  # the exit code is the gates' alone
        cwd=ROOT,
    )
    assert done.returncode in (0, 1), done.stderr
    gates = load_config(CI_CONFIG).gates
    lines = {ln.split()[1]: ln.split()[0] for ln in done.stdout.splitlines()
             if ln.strip().startswith(("PASS ", "FAIL ", "SKIP "))}
    assert set(lines) == {g.name for g in gates}, done.stdout
    # The exit code is the gates' verdict.
    assert done.returncode == (1 if "FAIL" in lines.values() else 0), done.stdout
    # Figures of the watched service and of the load do not depend on what else runs on
    # this machine: with the example budgets they must pass (system-wide used memory can
    # be moved by other processes, so memory_growth is only checked for consistency).
    for name in ("pss_growth", "rss_growth", "cow_unshared", "failure_ratio", "p95", "rps"):
        assert lines[name] == "PASS", done.stdout

    strict = tmp_path / "strict.toml"
    strict.write_text('[gates]\nrps = { metric = "requests.rps", min = 1000000 }\n'
                      'p95 = { metric = "latency.p95_ms", max = "1s" }\n')
    junit = tmp_path / "junit.xml"
    done = run_cli("gate", str(out), "--config", str(strict), "--junit", str(junit))
    assert done.returncode == 1, done.stderr
    assert "FAIL  rps" in done.stdout and "PASS  p95" in done.stdout
    root = ET.parse(junit).getroot()
    check_junit_shape(root)
    failures = [c.get("name") for c in root.iter("testcase") if c.find("failure") is not None]
    assert failures == ["rps"]
