"""`loadmem gate` on real recordings of forked children, through the real analyzer.

The draining recording (children overwrite 32 MiB each: ~64 MiB copied while RSS stays
flat) must fail a copy-on-write budget; the flat one must pass the same config. Exit
codes, JUnit, Markdown and the bad-input paths (exit 2, one line) are checked on the CLI.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from gates_recordings import run_cli, shared_recording
from test_gates_report import check_junit_shape

from loadmem.gates import run_gates

MIB = 2**20
CONFIG = """\
[gates]
cow_unshared = { metric = "cow.unshared_bytes", max = "24M" }
pss_growth = { metric = "watched.pss_growth_ratio", max = "30%" }
rss_growth = { max = "16M" }
p95 = { metric = "latency.p95_ms", max = "250ms", missing = "skip" }
"""


@pytest.fixture(scope="module")
def recs(tmp_path_factory):
    return {
        "flat": shared_recording(tmp_path_factory, "flat-a", overwrite=False),
        "drain": shared_recording(tmp_path_factory, "drain-a", overwrite=True),
    }


@pytest.fixture
def config(tmp_path):
    p = tmp_path / "loadmem.toml"
    p.write_text(CONFIG)
    return p


def test_run_gates_pass_and_fail(recs, config):
    flat = run_gates(recs["flat"], config_path=config)
    assert flat.passed and flat.exit_code == 0, [r.message for r in flat.results]
    drain = run_gates(recs["drain"], config_path=config)
    assert not drain.passed and drain.exit_code == 1
    by = {r.name: r for r in drain.results}
    assert by["cow_unshared"].status == "fail"
    # two children each copied ~32 MiB: the drain is measured, not guessed
    assert 40 * MIB < by["cow_unshared"].measured < 90 * MIB
    assert by["pss_growth"].status == "fail"
    assert by["rss_growth"].status == "pass"  # RSS stayed flat: that is the puzzle
    assert by["p95"].status == "skip"


def test_cli_exit_codes_junit_markdown_json(recs, config, tmp_path):
    junit = tmp_path / "gates.xml"
    done = run_cli("gate", str(recs["drain"]), "--config", str(config), "--junit", str(junit))
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    cow = next(ln for ln in lines if "cow_unshared" in ln)
    assert cow.strip().startswith("FAIL") and "MB" in cow and "24.0 MB" in cow
    assert lines[-1].startswith("gates FAILED")
    root = ET.parse(junit).getroot()
    check_junit_shape(root)
    suite = root.find("testsuite")
    assert suite is not None and suite.get("tests") == "4"
    assert int(suite.get("failures", "0")) == 2
    failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed == ["cow_unshared", "pss_growth"]

    done = run_cli("gate", str(recs["flat"]), "--config", str(config), "--markdown")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("### ✅ loadmem gates passed")
    assert "| ✅ | cow_unshared | `cow.unshared_bytes` |" in done.stdout

    done = run_cli("gate", str(recs["flat"]), "--config", str(config), "--json")
    data = json.loads(done.stdout)
    assert data["passed"] is True and len(data["results"]) == 4


def test_bad_input_is_one_line_exit_2(recs, tmp_path):
    bad = tmp_path / "loadmem.toml"
    bad.write_text('[gates]\ncow = { metric = "cow.unshared_bytes", max = "24M" }\n'
                   'leak = { metric = "heap.size", max = "1G" }\n')
    done = run_cli("gate", str(recs["flat"]), "--config", str(bad))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and f"{bad}:3:" in done.stderr
    assert "unknown metric 'heap.size'" in done.stderr
    done = run_cli("gate", str(tmp_path / "nope"), "--config", str(bad))
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    done = run_cli("gate", str(tmp_path / "nope"))
    assert done.returncode == 2 and "no recording at" in done.stderr


def test_catalogue_matches_the_analyzer(recs):
    """Every catalogued figure is one the analyzer really publishes (names are a contract)."""
    from loadmem.analysis import analyze
    from loadmem.analysis.figures import METRICS

    published = set(analyze(recs["drain"]).figures)
    catalogued = {m.name for m in METRICS if not m.derived}
    assert catalogued <= published, catalogued - published


def test_default_gates_and_window(recs, tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')  # root, no config
    whole = run_gates(recs["drain"], start_dir=tmp_path)
    assert "no gates config found" in whole.notes[0]
    assert not whole.passed
    assert [r.name for r in whole.failed] == ["pss_growth"]
    # the children start overwriting after a quiet lead-in: the first second is clean
    lead_in = run_gates(recs["drain"], start_dir=tmp_path, window=":1s")
    assert lead_in.passed, [r.message for r in lead_in.results]
