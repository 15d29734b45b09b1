"""Gate evaluation and its renderings (text, Markdown, JSON, JUnit) on Analysis values.

These pin the rules (budgets, comparisons, missing figures, exit codes, the JUnit shape);
tests/test_gates_real.py runs the same code on real recordings through the real analyzer.
"""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET

import pytest

from loadmem.analysis.model import Analysis, Window
from loadmem.gates import render_json, render_markdown, render_text, write_junit
from loadmem.gates.config import load_config
from loadmem.gates.evaluate import evaluate

MIB = 2**20

# Element -> (required attributes, allowed attributes, allowed children), from the JUnit
# XSD that Jenkins, GitLab and the GitHub test-report actions read (junit-10.xsd shape).
JUNIT = {
    "testsuites": ({"name"}, {"name", "time", "tests", "failures", "disabled", "errors"},
                   {"testsuite"}),
    "testsuite": ({"name", "tests"},
                  {"name", "tests", "failures", "errors", "group", "time", "disabled",
                   "skipped", "timestamp", "hostname", "id", "package", "file", "log", "url",
                   "version"},
                  {"properties", "testcase", "system-out", "system-err"}),
    "properties": (set(), set(), {"property"}),
    "property": ({"name", "value"}, {"name", "value"}, set()),
    "testcase": ({"name"}, {"name", "assertions", "time", "classname", "status"},
                 {"skipped", "error", "failure", "system-out", "system-err"}),
    "failure": (set(), {"message", "type"}, set()),
    "skipped": (set(), {"message"}, set()),
    "system-out": (set(), set(), set()),
}


def check_junit_shape(el: ET.Element) -> None:
    required, allowed, children = JUNIT[el.tag]
    assert required <= set(el.attrib), (el.tag, el.attrib)
    assert set(el.attrib) <= allowed, (el.tag, set(el.attrib) - allowed)
    for child in el:
        assert child.tag in children, (el.tag, child.tag)
        check_junit_shape(child)


def analysis(**figures: float | None) -> Analysis:
    return Analysis(recording="/rec/x", label="v1.2.3", window=Window("observe", 10, 70),
                    headline="Used memory rose 40 MB.", findings=[], figures=dict(figures))


CONFIG = """\
[gates]
memory_growth = { max = "200M" }
worker_pss = { metric = "workers.pss_per_worker_end_bytes", max = "50M" }
sharing = { metric = "shared_fraction.end", min = "40%" }
p95 = { metric = "latency.p95_ms", max = "250ms" }
p99 = { metric = "latency.p99_ms", max = "1s", missing = "skip" }
"""


@pytest.fixture
def gates(tmp_path):
    p = tmp_path / "loadmem.toml"
    p.write_text(CONFIG)
    return load_config(p)


def test_pass_fail_skip_and_exit_codes(gates):
    a = analysis(**{
        "observe.used_delta_bytes": 40.0 * MIB,
        "workers.pss_per_worker_end_bytes": 80.0 * MIB,
        "sharing_ratio.end": 0.3,
        "latency.p95_ms": None,
    })
    report = evaluate(a, gates.gates, gates.source)
    by = {r.name: r for r in report.results}
    assert [r.name for r in report.results] == ["memory_growth", "worker_pss", "sharing", "p95",
                                                "p99"]
    assert by["memory_growth"].status == "pass" and by["memory_growth"].margin == 160 * MIB
    assert by["worker_pss"].status == "fail"
    assert "80.0 MB" in by["worker_pss"].message and "50.0 MB" in by["worker_pss"].message
    assert "30.0 MB over budget" in by["worker_pss"].message
    assert by["sharing"].status == "pass" and by["sharing"].measured == pytest.approx(0.7)
    assert by["p95"].status == "fail" and "not measured" in by["p95"].message
    assert by["p99"].status == "skip" and by["p99"].passed
    assert not report.passed and report.exit_code == 1
    ok = evaluate(a, [g for g in gates.gates if g.name in ("memory_growth", "sharing", "p99")])
    assert ok.passed and ok.exit_code == 0


def test_min_gate_fails_below_budget(gates):
    a = analysis(**{"sharing_ratio.end": 0.75})  # only 25% still shared
    r = evaluate(a, [g for g in gates.gates if g.name == "sharing"]).results[0]
    assert r.status == "fail" and r.measured == pytest.approx(0.25)
    assert "25.0%" in r.message and ">= 40.0%" in r.message and "under budget" in r.message


def test_text_markdown_json(gates):
    a = analysis(**{"observe.used_delta_bytes": 300.0 * MIB,
                    "workers.pss_per_worker_end_bytes": 10.0 * MIB,
                    "sharing_ratio.end": 0.5, "latency.p95_ms": 120.0})
    report = evaluate(a, gates.gates, gates.source)
    out = io.StringIO()
    render_text(report, out)
    lines = out.getvalue().splitlines()
    assert any(ln.strip().startswith("FAIL  memory_growth") and "+300 MB" in ln
               and "200 MB" in ln for ln in lines)
    assert any(ln.strip().startswith("PASS  p95") and "120.0 ms" in ln for ln in lines)
    assert lines[-1].startswith("gates FAILED: 3 passed, 1 failed, 1 skipped")
    md = io.StringIO()
    render_markdown(report, md)
    text = md.getvalue()
    assert text.startswith("### ❌ loadmem gates failed — `v1.2.3`")
    table = [ln for ln in text.splitlines() if ln.startswith("|")]
    assert len(table) == 2 + len(report.results)
    assert all(ln.count("|") - ln.count("\\|") == 7 for ln in table)
    assert "`window.used_delta_bytes`" in text and "≤ 200 MB" in text
    js = io.StringIO()
    render_json(report, js)
    data = json.loads(js.getvalue())
    assert data["passed"] is False and data["exit_code"] == 1
    assert data["results"][0]["measured"] == 300 * MIB


def test_junit_shape_and_numbers(gates, tmp_path):
    a = analysis(**{"observe.used_delta_bytes": 300.0 * MIB,
                    "workers.pss_per_worker_end_bytes": 10.0 * MIB,
                    "sharing_ratio.end": 0.5, "latency.p95_ms": 120.0})
    report = evaluate(a, gates.gates, gates.source)
    path = write_junit(report, tmp_path / "out" / "gates.xml")
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    check_junit_shape(root)
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("5", "1", "1")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [r.name for r in report.results]
    failure = cases[0].find("failure")
    assert failure is not None and "+300 MB" in failure.get("message", "")
    assert "budget: max 200 MB" in (failure.text or "")
    assert cases[4].find("skipped") is not None
    assert all(c.find("failure") is None for c in cases[1:])
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["recording"] == "/rec/x" and props["label"] == "v1.2.3"
