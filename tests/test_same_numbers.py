"""One recording, the same used / RSS / PSS numbers everywhere (issue 11, item 9).

The run summary ``loadmem run`` printed, ``loadmem analyze`` (text and JSON), ``loadmem ls``,
the plot and the HTML report of one real demo recording all show the same change of used
memory, sum RSS and sum PSS, with the same label: from just before the load to the end of
the recording, the same processes at both ends, printed by the figure catalogue.
"""

from __future__ import annotations

import html
import io
import json
import re

import pytest
from gates_recordings import run_cli

from loadmem.analysis import analyze
from loadmem.analysis.analyze import analyze_with_series
from loadmem.analysis.figures import format_figure
from loadmem.presentation import text
from loadmem.presentation.html import render_report
from loadmem.presentation.plot import TITLE_SYSTEM, TITLE_TRUTH, render_figure
from loadmem.recording import open_recording

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ROWS = {  # summary row -> (start, end, change) figures
    "used (system)": ("window.used_start_bytes", "window.used_end_bytes",
                      "window.used_delta_bytes"),
    "sum RSS": ("watched.rss_start_bytes", "watched.rss_end_bytes", "watched.rss_delta_bytes"),
    "sum PSS": ("watched.pss_start_bytes", "watched.pss_end_bytes", "watched.pss_delta_bytes"),
}


def _shown(a, name: str) -> str:
    return format_figure(name, a.figures[name])


def test_summary_analyze_ls_plot_report_agree(demo_pair, tmp_path):
    rec = demo_pair["default"]
    a = analyze(rec)
    assert a.window.name == "load+observe"
    f = a.figures
    # the identity the summary shows: start + change = end for the same processes
    assert f["watched.same_count"] == f["watched.count"]
    for start, end, change in ROWS.values():
        assert f[end] - f[start] == pytest.approx(f[change], abs=64 * 1024), (start, f)

    # 1. the run summary (printed by `loadmem run` at the end of the run)
    run_out = demo_pair["default.stdout"].read_text()
    header = next(ln for ln in run_out.splitlines() if ln.startswith("memory:"))
    assert "before load" in header and "at end" in header and "change" in header
    for label, names in ROWS.items():
        line = next(ln for ln in run_out.splitlines() if ln.strip().startswith(label))
        cells = re.split(r"\s{2,}", line.strip())[1:]
        assert cells == [_shown(a, n) for n in names], (label, line)

    # 2. loadmem analyze: the evidence table and the JSON
    buf = io.StringIO()
    text.render(a, buf)
    report_text = buf.getvalue()
    for names in ROWS.values():
        for n in names:
            row = next(ln for ln in report_text.splitlines() if ln.rstrip().endswith(f"  {n}"))
            assert re.split(r"\s{2,}", row.strip())[1] == _shown(a, n), row
    js = json.loads(run_cli("analyze", str(rec), "--json", "--fail-on", "never").stdout)
    for names in ROWS.values():
        for n in names:
            assert js["figures_text"][n] == _shown(a, n)
            assert js["figures"][n] == pytest.approx(f[n])

    # 3. loadmem ls: the same used-memory change, the same way
    ls = json.loads(run_cli("ls", str(rec), "--json").stdout.splitlines()[0])
    assert ls["used_delta_bytes"] == pytest.approx(f["window.used_delta_bytes"], abs=1)
    assert ls["used_start_bytes"] == pytest.approx(f["window.used_start_bytes"], abs=1)
    ls_text = run_cli("ls", str(rec)).stdout.splitlines()[2]
    assert f" {_shown(a, 'window.used_delta_bytes')} " in f" {ls_text} ", ls_text

    # 4. the plot: the legends give the window's changes, the used line starts from the same
    # level
    result = analyze_with_series(open_recording(rec))
    fig = render_figure(rec, result.analysis, series=result.series)
    axes = {ax.get_title(loc="left"): ax for ax in fig.axes if ax.get_title(loc="left")}
    labels = [ln.get_label() for ln in axes[TITLE_SYSTEM].get_lines()]
    used_label = next(lb for lb in labels if lb.startswith("used (total - available)"))
    assert _shown(a, "window.used_delta_bytes") in used_label, used_label
    assert format_figure("window.used_start_bytes", f["window.used_start_bytes"]) in used_label
    pss_label = next(ln.get_label() for ln in axes[TITLE_TRUTH].get_lines()
                     if ln.get_label().startswith("sum PSS"))
    assert _shown(a, "watched.pss_delta_bytes") in pss_label, pss_label

    # 5. the report: the key figures table and the verdict
    doc = html.unescape(render_report(rec, result.analysis, series=result.series))
    for names in ROWS.values():
        for n in names:
            assert re.search(rf"<td>{re.escape(n)}</td><td[^>]*>"
                             rf"{re.escape(_shown(a, n))}</td>", doc), n
