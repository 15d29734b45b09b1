"""``loadmem plot``: the figure drawn from real recordings (real recorder, real analyzer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from presentation_support import (
    cow_recording,
    killed_recording,
    system_only_recording,
)

from loadmem.analysis import analyze
from loadmem.cli.main import main
from loadmem.presentation import plot
from loadmem.presentation.plot import render_figure
from loadmem.recording.reader import open_recording


@pytest.fixture(scope="module")
def cow():
    rec = open_recording(cow_recording())
    return rec, analyze(rec)


def _axes_by_title(fig: Figure) -> dict[str, object]:
    return {ax.get_title(loc="left"): ax for ax in fig.axes if ax.get_title(loc="left")}


def _line(ax, label: str):
    lines = [ln for ln in ax.get_lines() if ln.get_label().split("\n")[0] == label]
    assert lines, f"no line {label!r} in {ax.get_title(loc='left')!r}"
    return lines[0]


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_panels_show_flat_rss_and_growing_pss(cow):
    rec, analysis = cow
    fig = render_figure(rec, analysis)
    axes = _axes_by_title(fig)
    assert {plot.TITLE_SYSTEM, plot.TITLE_RSS, plot.TITLE_TRUTH} <= set(axes)
    # no requests table in a plain `loadmem record` recording: no load panels
    assert plot.TITLE_LOAD not in axes and plot.TITLE_LATENCY not in axes
    truth = axes[plot.TITLE_TRUTH]
    rss = _line(truth, "sum RSS").get_ydata()
    pss = _line(truth, "sum PSS").get_ydata()
    # The workload's children rewrite 2 x 32 MiB they inherited: PSS must climb a lot
    # (axis unit is MB here) while RSS stays within a few percent.
    assert truth.get_ylabel().endswith("(MB)")
    assert np.nanmax(pss) - np.nanmin(pss) > 25
    assert np.nanmax(rss) - np.nanmin(rss) < 0.05 * np.nanmax(rss)
    # the RSS panel stacks the master under its workers
    labels = [c.get_label() for c in axes[plot.TITLE_RSS].collections]
    assert any(lb.startswith("master") for lb in labels)
    assert any(lb.startswith("workers") for lb in labels)
    # the x axis says its unit, the y axes say theirs
    assert fig.axes[-1].get_xlabel() == "time since recording start (s)"
    assert axes[plot.TITLE_SYSTEM].get_ylabel() in ("change (MB)", "change (GB)")


def test_findings_are_annotated_where_they_start(cow):
    rec, analysis = cow
    fig = render_figure(rec, analysis)
    drawn = [
        f
        for f in analysis.findings
        if f.severity != "ok" and plot.FINDING_PANEL.get(f.id, "system")
    ]
    # 64 MiB really unshared: the analyzer must say something, and the figure must show it
    assert drawn, f"no finding for a 64 MiB drain: {analysis.headline}"
    texts = _texts(fig)
    for f in drawn:
        match = [t for t in texts if f.id in t]
        assert match, f"finding {f.id} not annotated; texts: {texts}"
        if f.explained_bytes:
            assert "MB" in match[0] or "KB" in match[0] or "GB" in match[0]
    assert analysis.headline.split()[0] in fig.get_suptitle()


def test_legends_sit_outside_the_data(cow):
    rec, analysis = cow
    fig = render_figure(rec, analysis)
    fig.canvas.draw()
    legends = [(ax, ax.get_legend()) for ax in fig.axes if ax.get_legend() is not None]
    assert len(legends) >= 3
    for ax, legend in legends:
        box = legend.get_window_extent()
        assert box.x0 >= ax.get_window_extent().x1 - 1, ax.get_title(loc="left")


def test_downsampling_keeps_the_extremes_of_real_series(cow):
    rec, analysis = cow
    full = render_figure(rec, analysis)
    small = render_figure(rec, analysis, max_points=8)
    for label in ("sum PSS", "sum RSS"):
        a = _line(_axes_by_title(full)[plot.TITLE_TRUTH], label).get_ydata()
        b = _line(_axes_by_title(small)[plot.TITLE_TRUTH], label).get_ydata()
        assert len(b) < len(a)
        assert np.nanmax(b) == np.nanmax(a) and np.nanmin(b) == np.nanmin(a)


def test_window_zooms_the_time_axis(cow):
    rec, analysis = cow
    fig = render_figure(rec, analysis, window=(1.0, 3.0))
    lo, hi = fig.axes[-1].get_xlim()
    assert (lo, hi) == pytest.approx((1.0, 3.0))
    pss = _line(_axes_by_title(fig)[plot.TITLE_TRUTH], "sum PSS").get_xdata()
    assert np.min(pss) >= 1.0 and np.max(pss) <= 3.0


@pytest.mark.parametrize("suffix,magic", [(".png", b"\x89PNG"), (".svg", b"<?xml"),
                                          (".pdf", b"%PDF")])  # fmt: skip
def test_cli_writes_each_format(tmp_path: Path, capsys, suffix: str, magic: bytes):
    out = tmp_path / f"figure{suffix}"
    assert main(["plot", str(cow_recording()), "-o", str(out)]) == 0
    assert out.read_bytes().startswith(magic)
    stdout = capsys.readouterr().out
    assert str(out) in stdout and "loadmem report" in stdout


def test_cli_default_output_and_window(capsys):
    rec = cow_recording()
    assert main(["plot", str(rec), "--window", "1s:4s"]) == 0
    png = rec / "plot.png"
    from matplotlib import image

    pixels = image.imread(str(png))
    assert pixels.shape[1] >= 1000 and pixels.std() > 0.05  # a laptop-sized, non-blank figure
    assert str(png) in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["-o", "figure.txt"], "unknown format .txt"),
        (["--window", "9h:10h"], "outside the recording"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(capsys, argv: list[str], needle: str):
    assert main(["plot", str(cow_recording()), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_cli_missing_recording(tmp_path: Path, capsys):
    assert main(["plot", str(tmp_path / "nope")]) == 2
    assert "no recording" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_run_has_labelled_phases_and_load_panels(demo_pair):
    rec = open_recording(demo_pair["default"])
    analysis = analyze(rec)
    fig = render_figure(rec, analysis)
    axes = _axes_by_title(fig)
    assert {plot.TITLE_LOAD, plot.TITLE_LATENCY} <= set(axes)
    texts = _texts(fig)
    for phase in ("baseline", "load", "observe"):  # with its length when the label fits
        assert any(t == phase or t.startswith(f"{phase} ") for t in texts), texts
    # requests/s drawn as stairs over the load phase, with real traffic in it
    load_ax = axes[plot.TITLE_LOAD]
    rps = [p for p in load_ax.patches if p.get_label() == "requests/s"]
    assert rps and np.nanmax(rps[0].get_data().values) > 10
    # phases are shaded in every data panel
    for title in (plot.TITLE_SYSTEM, plot.TITLE_RSS, plot.TITLE_TRUTH):
        assert len(axes[title].patches) >= 3


def test_system_only_recording_says_what_is_missing(tmp_path: Path):
    rec = open_recording(system_only_recording())
    fig = render_figure(rec, analyze(rec))
    axes = _axes_by_title(fig)
    assert len(_line(axes[plot.TITLE_SYSTEM], "used (total - available)").get_xdata()) > 3
    texts = _texts(fig)
    assert "no watched processes in this range" in texts
    assert any("no phases recorded" in t for t in texts)
    assert main(["plot", str(rec.path), "-o", str(tmp_path / "s.svg")]) == 0


def test_recording_cut_short_by_sigkill_still_plots(tmp_path: Path):
    path = killed_recording()
    assert not (path / "processes.parquet").exists()  # never merged: segments only
    out = tmp_path / "killed.png"
    assert main(["plot", str(path), "-o", str(out)]) == 0
    fig = render_figure(open_recording(path), analyze(path))
    pss = _line(_axes_by_title(fig)[plot.TITLE_TRUTH], "sum PSS").get_ydata()
    assert np.count_nonzero(~np.isnan(pss)) >= 3


def test_series_differ_by_more_than_colour(cow):
    """Grey-scale printing and colour blindness: within a panel no two labelled series may
    share line style and width (lines) or hatch (bands); colour alone is not enough."""
    rec, analysis = cow
    fig = render_figure(rec, analysis)
    for title, ax in _axes_by_title(fig).items():
        lines = [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]
        lines = [ln for ln in lines if len(ln.get_xdata())]  # not the legend-only notes
        styles = [(str(ln.get_linestyle()), ln.get_linewidth()) for ln in lines]
        assert len(set(styles)) == len(styles), (title, styles)
        bands = [c for c in ax.collections if not c.get_label().startswith("_")]
        hatches = [c.get_hatch() for c in bands]
        assert len(set(hatches)) == len(hatches), (title, hatches)
