"""The figure catalogue is the contract: every published figure is in it, and every output
prints a figure the same way (its catalogue formatter).

Published figures: ``Analysis.figures``, the run summary's rows, ``loadmem ls``'s column,
everything ``loadmem compare`` and the gates know. Outputs: the text report, Markdown, the
HTML report, the JSON report (``figures_text``), a gate's message and a comparison row.
"""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import pytest

from loadmem.analysis import analyze
from loadmem.analysis.figures import BY_NAME, METRICS, format_figure, lookup
from loadmem.compare.comparison import compare, summarise
from loadmem.gates.config import Gate
from loadmem.gates.evaluate import evaluate
from loadmem.load.summary import MEMORY_ROWS, memory_lines
from loadmem.presentation import json_report, markdown, text
from loadmem.presentation.compare_render import render_text as compare_text
from loadmem.presentation.html import format_value as html_value

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from synth import synthesise  # noqa: E402


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    path = synthesise(tmp_path_factory.mktemp("catalogue") / "rec", hours=0.1, processes=4,
                      interval=1.0)
    return path, analyze(path)


def test_every_published_figure_is_catalogued(synthetic):
    path, a = synthetic
    missing = [k for k in a.figures if k not in BY_NAME]
    assert missing == [], missing
    # the run summary and ls print catalogue figures
    for _, *names in MEMORY_ROWS:
        assert all(n in BY_NAME for n in names), names
    from loadmem.recording import catalog

    assert "window.used_delta_bytes" in (catalog.__doc__ or "")
    # compare and the gates know exactly the catalogue (and its aliases)
    s = summarise(path, "base")
    assert set(BY_NAME) >= {k for k in s.figures if s.figures.get(k) is not None}
    assert lookup("observe.used_delta_bytes") is BY_NAME["window.used_delta_bytes"]


def test_a_figure_reads_the_same_in_every_output(synthetic):
    path, a = synthetic
    out = io.StringIO()
    text.render(a, out)
    txt = out.getvalue()
    md_buf = io.StringIO()
    markdown.render(a, md_buf)
    md = md_buf.getvalue()
    js = json_report.to_json_dict(a)
    base, new = summarise(path, "base"), summarise(path, "new")
    comp_buf = io.StringIO()
    compare_text(compare([base, new]), comp_buf)
    comp = comp_buf.getvalue()
    checked = 0
    for name, value in a.figures.items():
        if value is None:
            continue
        shown = format_figure(name, value)
        assert js["figures_text"][name] == shown, name
        assert html_value(name, value) == shown, name
        rows = [re.split(r"\s{2,}", ln.strip()) for ln in txt.splitlines()
                if ln.rstrip().endswith(f"  {name}")]
        if rows:  # the text evidence table lists most figures: label, value, name
            assert rows[0][1] == shown, (name, rows[0], shown)
            assert f"| {shown} | `{name}` |" in md, name
            checked += 1
        cmp_row = re.search(rf"^\s+{re.escape(name)}\s+(\S+(?: \S+)?)\s", comp, re.M)
        assert cmp_row is not None and cmp_row.group(1) == shown, (name, shown)
        metric = BY_NAME[name]
        if metric.unit != "count":  # a gate prints the measured figure the same way
            report = evaluate(a, [Gate(name="g", metric=metric, comparison="max",
                                       budget=1e30, budget_text="x")], "test")
            assert report.results[0].measured_text == shown, name
    assert checked >= 20
    # the sharing ratio is a ratio (0.33), the same in every output
    assert format_figure("sharing_ratio.end", 0.3349) == "0.33"
    assert format_figure("requests.failure_ratio", 0.05) == "5.0%"


def test_summary_memory_rows_are_catalogue_figures(synthetic):
    _, a = synthetic
    lines = memory_lines(a)
    used = next(ln for ln in lines if "used (system)" in ln)
    for name in ("window.used_start_bytes", "window.used_end_bytes", "window.used_delta_bytes"):
        assert format_figure(name, a.figures[name]) in used, (name, used)


def test_directions_of_better_are_those_a_fix_produces():
    # a fix keeps pages shared: what is still shared rises, and that is not worse
    assert BY_NAME["cow.remaining_bytes"].better == "neutral"
    assert BY_NAME["cow.unshared_bytes"].better == "lower"
    assert BY_NAME["shared_fraction.end"].better == "higher"
    assert BY_NAME["sharing_ratio.end"].better == "lower"
    for m in METRICS:  # every old observe.* name is an alias of a window.* figure
        for alias in m.aliases:
            if alias.startswith("observe."):
                assert m.name == "window." + alias.removeprefix("observe.")
    old = json.loads('{"observe.used_delta_bytes": 5.0}')
    from loadmem.analysis.figures import with_derived

    assert with_derived(old)["window.used_delta_bytes"] == 5.0
