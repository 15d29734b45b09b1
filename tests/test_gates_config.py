"""Gates config loading: budgets in each unit, errors that name the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadmem.errors import LoadmemError
from loadmem.gates.config import find_config, load_config, resolve_config

GOOD = """\
# budgets for CI
[gates]
memory_growth = { max = "200M" }
worker_pss = { metric = "workers.pss_per_worker_end_bytes", max = "150MiB" }
sharing = { metric = "shared_fraction.end", min = "40%" }
p95 = { metric = "latency.p95_ms", max = "250ms", missing = "skip" }
rate = { metric = "requests.rps", min = 50 }
drain = { metric = "cow.rate_bytes_per_s", max = "1M/s" }
available = { metric = "observe.available_delta_bytes", min = "-300M" }

[gates.exhaust]
metric = "cow.time_to_exhaust_s"
min = "2h"

[compare]
fail_on_regression = "10%"
budgets = { "cow.unshared_bytes" = "16M", "latency.p95_ms" = "20%" }
"""


def write(tmp_path: Path, text: str, name: str = "loadmem.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_every_unit_is_parsed_with_the_shared_parsers(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    g = {x.name: x for x in cfg.gates}
    assert g["memory_growth"].metric.name == "window.used_delta_bytes"
    assert g["available"].metric.name == "window.available_delta_bytes"  # an old name
    assert (g["memory_growth"].comparison, g["memory_growth"].budget) == ("max", 200 * 2**20)
    assert g["worker_pss"].budget == 150 * 2**20
    assert (g["sharing"].comparison, g["sharing"].budget) == ("min", pytest.approx(0.40))
    assert g["p95"].budget == pytest.approx(250.0) and g["p95"].missing == "skip"
    assert g["rate"].budget == 50
    assert g["drain"].budget == 2**20
    assert g["available"].budget == -300 * 2**20
    assert g["exhaust"].budget == 7200
    assert g["memory_growth"].line == 3 and g["exhaust"].line == 11
    assert cfg.fail_on_regression == pytest.approx(0.10)
    assert cfg.regression_budgets["cow.unshared_bytes"].absolute == 16 * 2**20
    assert cfg.regression_budgets["latency.p95_ms"].relative == pytest.approx(0.20)


@pytest.mark.parametrize(
    ("body", "line", "words"),
    [
        ('rss = { max = "1G" }\nbogus = { metric = "memory.nope", max = "1G" }\n', 3,
         "unknown metric 'memory.nope'"),
        ('rss = { max = "1G" }\n\n[gates.pss_growth]\nmax = "lots"\n', 5, "malformed budget"),
        ('p95 = { metric = "latency.p95_ms", max = 250 }\n', 2, "no unit"),
        ('x = { metric = "watched.rss_end_bytes", max = "1G", min = "1M" }\n', 2,
         "exactly one of max or min"),
        ('x = { metric = "watched.rss_end_bytes", maximum = "1G" }\n', 2, "unknown key"),
        ('x = "200M"\n', 2, "must be a table"),
        ('x = { metric = "watched.rss_end_bytes", max = "1G", missing = "maybe" }\n', 2,
         "missing must be"),
    ],
)
def test_bad_config_names_file_and_line(tmp_path, body, line, words):
    path = write(tmp_path, "[gates]\n" + body)
    with pytest.raises(LoadmemError) as e:
        load_config(path)
    assert f"{path}:{line}:" in str(e.value)
    assert words in str(e.value)


def test_pyproject_table_and_line(tmp_path):
    text = (
        '[project]\nname = "x"\n\n[tool.loadmem.gates]\n'
        'memory_growth = { max = "100M" }\nwat = { metric = "nope", max = 1 }\n'
    )
    path = write(tmp_path, text, "pyproject.toml")
    with pytest.raises(LoadmemError, match=r"pyproject.toml:6: gate 'wat': unknown metric"):
        load_config(path)


def test_invalid_toml_and_missing_table(tmp_path):
    with pytest.raises(LoadmemError, match="invalid TOML"):
        load_config(write(tmp_path, "[gates\n"))
    with pytest.raises(LoadmemError, match=r"has no \[gates\] table"):
        load_config(write(tmp_path, "[other]\nx = 1\n"))
    with pytest.raises(LoadmemError, match="no gates config at"):
        load_config(tmp_path / "absent.toml")


def test_search_order_and_defaults(tmp_path):
    project = tmp_path / "proj"
    sub = project / "a" / "b"
    sub.mkdir(parents=True)
    # A pyproject without [tool.loadmem] is the project root: search stops, defaults apply.
    write(project, '[project]\nname = "x"\n', "pyproject.toml")
    write(tmp_path, GOOD)  # outside the project: must not be picked up
    assert find_config(sub) is None
    cfg = resolve_config(None, sub)
    assert cfg.is_default and {g.metric.name for g in cfg.gates} == {
        "requests.failure_ratio", "watched.pss_growth_ratio", "watched.rss_growth_ratio",
        "cgroup.oom_kills"}
    write(project, '[tool.loadmem.gates]\nrss = { max = "1G" }\n', "pyproject.toml")
    assert find_config(sub) == project / "pyproject.toml"
    write(project / "a", '[gates]\npss = { max = "2G" }\n')
    cfg = resolve_config(None, sub)
    assert cfg.source == str(project / "a" / "loadmem.toml")
    assert cfg.gates[0].metric.name == "watched.pss_end_bytes"


def test_ci_example_config_is_accepted():
    path = Path(__file__).resolve().parent.parent / "ci" / "loadmem.toml"
    cfg = load_config(path)
    assert len(cfg.gates) >= 5
    assert cfg.fail_on_regression is not None


def test_docs_list_every_metric_and_alias():
    from loadmem.analysis.figures import METRICS

    docs = (Path(__file__).resolve().parent.parent / "docs" / "gates.md").read_text()
    for m in METRICS:
        assert f"`{m.name}`" in docs, m.name
        for a in m.aliases:
            assert f"`{a}`" in docs, a
