"""The analyzer's building blocks and edges: robust trends, windows, bad and cut-short
recordings, system-only recordings, the reporters and the documented figure names."""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from analysis_support import PY, Workload, record_scenario

from loadmem.analysis import analyze
from loadmem.analysis.model import Window
from loadmem.analysis.trend import change, edge_count, levels, noise_sigma, theil_sen
from loadmem.analysis.window import resolve
from loadmem.cli.main import main
from loadmem.errors import LoadmemError
from loadmem.presentation import json_report, markdown, text

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from synth import synthesise  # noqa: E402

MiB = 1 << 20


# --- trends ---------------------------------------------------------------------------------


def test_theil_sen_ignores_outliers_that_break_least_squares() -> None:
    rng = np.random.default_rng(1)
    t = np.arange(200.0)
    y = 3.0 * t + rng.normal(0, 1, 200)
    y[rng.choice(200, 40, replace=False)] += 5000  # 20% wild samples
    ts = theil_sen(t, y)
    ls = np.polyfit(t, y, 1)[0]
    assert abs(ts - 3.0) < 0.3
    assert abs(ls - 3.0) > abs(ts - 3.0)


def test_theil_sen_subsamples_long_series() -> None:
    t = np.arange(500_000.0)
    y = -2.5 * t + np.sin(t)
    assert theil_sen(t, y) == pytest.approx(-2.5, rel=1e-3)


def test_theil_sen_skips_missing_samples() -> None:
    t = np.arange(10.0)
    y = 2 * t
    y[[2, 5]] = np.nan
    assert theil_sen(t, y) == pytest.approx(2.0)
    assert theil_sen(t[:1], y[:1]) is None


def test_noise_sigma_is_robust_to_trend_and_steps() -> None:
    rng = np.random.default_rng(2)
    y = rng.normal(0, 10, 2000) + np.arange(2000) * 50.0
    y[1000:] += 1e6  # one step
    assert noise_sigma(y) == pytest.approx(10, rel=0.15)


def test_change_levels_are_medians_of_the_edges() -> None:
    t = np.arange(100.0)
    y = np.where(t < 50, 100.0, 300.0)
    y[0] = 1e9  # a single wild first sample does not move the start level
    c = change(t, y, slice(0, 100))
    assert c.start == 100.0 and c.end == 300.0 and c.delta == 200.0
    assert c.significant(150) and not c.significant(250)


def test_start_level_is_the_state_before_the_window_opens() -> None:
    """A step right at the window's start (a leak as soon as the load starts) is part of the
    window's change: the start level is made of the samples up to the window's first one."""
    t = np.arange(200.0)
    y = np.where(t <= 100, 100.0, 300.0)  # the window opens at sample 100, steps after it
    c = change(t, y, slice(100, 200))
    assert edge_count(100) == 10 and c.start == 100.0 and c.end == 300.0
    # a phase of a longer window, measured with the window's edge count, chains with the next
    a, b = levels(y, slice(100, 150), k=10), levels(y, slice(149, 200), k=10)
    assert a[1] == b[0]


def test_edge_levels_of_carried_figures_use_the_current_samples() -> None:
    """A PSS sum carried forward while the budget held reads back (100 for the whole end
    edge but its last sample, the closing tick's read, 160): the level at the end is the
    read, not the median of the held-back carries; with no current sample in an edge (or no
    flags at all) it is the plain median."""
    t = np.arange(100.0)
    y = np.full(100, 100.0)
    y[-1] = 160.0
    current = np.ones(100, bool)
    current[80:99] = False  # faulted since its read: held back from sample 80 on
    assert levels(y, slice(0, 100)) == (100.0, 100.0)  # the median of 10 carries
    assert levels(y, slice(0, 100), current=current) == (100.0, 160.0)
    assert change(t, y, slice(0, 100), current=current).delta == 60.0
    # a phase ending before the closing tick: no current sample in its end edge
    assert levels(y, slice(0, 95), current=current) == levels(y, slice(0, 95))
    # with an offset (a window's own sums from sample 20 on)
    assert levels(y[20:], slice(20, 100), offset=20, current=current)[1] == 160.0


# --- windows --------------------------------------------------------------------------------

PHASES = [("baseline", 0.0, 10.0), ("load", 10.0, 40.0), ("observe", 40.0, 100.0)]


def test_window_defaults_to_load_and_observe_with_baseline_for_noise() -> None:
    """A run's verdict covers the load and what follows it, each phase judged and named."""
    w = resolve(PHASES, 0.0, 100.0)
    assert w.main == Window("load+observe", 10.0, 100.0)
    assert w.parts == (Window("load", 10.0, 40.0), Window("observe", 40.0, 100.0))
    assert w.baseline == Window("baseline", 0.0, 10.0)
    assert w.load == Window("load", 10.0, 40.0)
    assert [x.name for x in w.all()] == ["load+observe", "baseline", "load", "observe"]
    # --window keeps working: one phase is not split; the whole recording is
    assert resolve(PHASES, 0.0, 100.0, "observe").parts == ()
    assert [x.name for x in resolve(PHASES, 0.0, 100.0, "whole").parts] == ["load", "observe"]
    # without a load phase, the observe phase
    assert resolve([("baseline", 0.0, 5.0), ("observe", 5.0, 9.0)], 0.0, 9.0).main.name \
        == "observe"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("30s:1m", (30.0, 60.0)), (":20", (0.0, 20.0)), ("1m:", (60.0, 100.0)),
     ("load", (10.0, 40.0)), ("whole", (0.0, 100.0))],
)
def test_window_specs(spec: str, expected: tuple[float, float]) -> None:
    w = resolve(PHASES, 0.0, 100.0, spec).main
    assert (w.t_start, w.t_end) == expected


@pytest.mark.parametrize("spec", ["5m:", "50:20", "nonsense", "1x:2"])
def test_bad_window_specs(spec: str) -> None:
    with pytest.raises(LoadmemError):
        resolve(PHASES, 0.0, 100.0, spec)


def test_unclosed_phase_ends_at_last_sample_with_a_note() -> None:
    w = resolve([("baseline", 0.0, 5.0), ("observe", 5.0, None)], 0.0, 42.0)
    assert w.main == Window("observe", 5.0, 42.0)
    w = resolve([("baseline", 0.0, 5.0), ("load", 5.0, None)], 0.0, 42.0)
    assert w.main == Window("load+observe", 5.0, 42.0)
    assert any("never closed" in n for n in w.notes)


def test_no_phases_means_whole_recording() -> None:
    w = resolve([], 1.0, 9.0)
    assert w.main == Window("whole", 1.0, 9.0) and w.baseline is None


# --- bad, cut-short and system-only recordings ---------------------------------------------


def test_bad_input_exits_2_with_one_line(tmp_path: Path, capsys) -> None:
    assert main(["analyze", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no recording" in err
    (tmp_path / "empty").mkdir()
    assert main(["analyze", str(tmp_path / "empty")]) == 2
    assert "holds no recorded data" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "meta.json").write_text("{not json")
    (corrupt / "system.parquet").write_bytes(b"PAR1 garbage")
    assert main(["analyze", str(corrupt)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_killed_recorder_is_analysed_with_a_note(tmp_path: Path) -> None:
    """SIGKILL the real recorder: what it flushed is analysed and the note says so."""
    svc = Workload.start("idle", 8, 1)
    out = tmp_path / "rec"
    rec = subprocess.Popen([PY, "-m", "loadmem", "record", "--pid", str(svc.pid),
                            "--interval", "0.2s", "--flush", "0.5s", "--out", str(out)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(list(out.glob("system/*.parquet"))) < 3:
            time.sleep(0.1)
        rec.send_signal(signal.SIGKILL)
        rec.wait(timeout=10)
    finally:
        if rec.poll() is None:
            rec.kill()
        svc.stop()
    a = analyze(out)
    assert any("not finished cleanly" in n for n in a.notes), a.notes
    assert a.window.name == "whole" and a.figures["watched.count"] == 2
    buf = io.StringIO()
    text.render(a, buf)
    assert "Notes" in buf.getvalue()


def test_system_only_recording(tmp_path: Path) -> None:
    out = tmp_path / "sys"
    subprocess.run([PY, "-m", "loadmem", "record", "--interval", "0.2s", "--duration", "1.5s",
                    "--out", str(out)], check=True, capture_output=True, timeout=60)
    a = analyze(out)
    assert a.figures["watched.count"] == 0
    assert a.figures["watched.pss_delta_bytes"] is None
    assert a.finding("memory-drain") is not None
    assert a.finding("cow-unsharing") is None


# --- reporters and the documented figures --------------------------------------------------


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory):
    """A 2 h, 8-process synthetic run (benchmarks/synth.py): long enough to exercise batching
    and subsampling, written with the real schema and writer."""
    return analyze(synthesise(tmp_path_factory.mktemp("synth") / "rec", hours=2, processes=8))


def test_synthetic_drain_is_cow(synthetic) -> None:
    a = synthetic
    f = a.finding("cow-unsharing")
    assert f is not None and f.severity in ("warning", "critical")
    # synth: 7 workers each copy half of 100 MiB over the observe phase
    assert a.figures["cow.unshared_bytes"] == pytest.approx(7 * 50 * MiB, rel=0.05)
    assert a.figures["cow.time_to_exhaust_s"] > 0
    assert a.figures["requests.total"] > 0 and a.figures["latency.p95_ms"] == pytest.approx(
        20, abs=1)
    assert a.finding("page-cache") is None or a.finding("page-cache").severity == "info"


def test_json_report_is_valid_and_complete(synthetic) -> None:
    buf = io.StringIO()
    json_report.render(synthetic, buf)
    doc = json.loads(buf.getvalue())
    assert doc["schema"] == json_report.SCHEMA
    assert doc["severity"] == synthetic.severity
    assert {f["id"] for f in doc["findings"]} == {f.id for f in synthetic.findings}
    assert set(doc["figures"]) == set(synthetic.figures)
    assert doc["window"]["duration_s"] == pytest.approx(synthetic.window.duration)


def _documented_figures() -> set[str]:
    doc = (ROOT / "docs" / "analysis.md").read_text()
    return set(re.findall(r"^\| `([a-z_]+\.[a-z0-9_.]+)` \|", doc, re.M))


def test_every_figure_is_documented(synthetic) -> None:
    assert set(synthetic.figures) == _documented_figures()


def test_text_and_markdown_reporters(synthetic) -> None:
    buf = io.StringIO()
    text.render(synthetic, buf)
    out = buf.getvalue()
    verdict = f"Verdict: {synthetic.severity.upper()}"
    assert out.index(verdict) < out.index("Findings") < out.index("Evidence")
    assert "cow.unshared_bytes" in out and "Phases" in out and "Processes" in out
    md = io.StringIO()
    markdown.render(synthetic, md)
    m = md.getvalue()
    assert m.startswith("### loadmem analyze") and "| `cow-unsharing` |" in m


def test_figures_of_a_real_recording_match_the_documented_set(tmp_path: Path) -> None:
    w = Workload.start("idle", 8, 1)
    try:
        rec = record_scenario(tmp_path / "rec", [w.pid], w, baseline_s=0.8, settle_s=0.8)
    finally:
        w.stop()
    a = analyze(rec)
    assert set(a.figures) == _documented_figures()
    assert a.figures["requests.total"] is None  # no load in a plain recording
