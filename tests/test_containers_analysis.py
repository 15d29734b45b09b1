"""The container view, for real: a process filling memory at a steady 4 MiB/s toward a 64 MiB
memory cgroup limit (v1, under this test's own cgroup), recorded by two real recorders.

- A records the first seconds only: its analysis predicts when the limit will be reached
  (``cgroup.time_to_limit_s``), which must be within 25 % of when the OOM killer really
  kills the process;
- B records until after the kill: ``cgroup-limit`` is critical and counts the OOM kill.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _netns_support import docker_id, memory_cgroup, spawn, stop, system_python

from loadmem.analysis import analyze
from loadmem.analysis.container import container_view, findings
from loadmem.recording import open_recording

pytestmark = pytest.mark.slow
MiB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent

#: Waits for "go", then adds 1 MiB (written, so it is charged) every 0.25 s on a fixed
#: schedule; stops at 200 MiB (never reached under the limit).
FILL = r'''
import sys, time
print("ready", flush=True)
sys.stdin.readline()
chunks, start = [], time.monotonic()
for i in range(200):
    delay = start + i * 0.25 - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    chunks.append(b"\1" * (1 << 20))
time.sleep(60)
'''


def _recorder(cgroup: str, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "loadmem", "record", "--cgroup", cgroup,
                             "--interval", "0.25s", "--out", str(out), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)


def _meta(out: Path, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            meta = json.loads((out / "meta.json").read_text())
            if "start_monotonic" in meta:
                return meta
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"no meta.json in {out}")


def test_time_to_limit_prediction_and_the_oom_kill(tmp_path):
    with memory_cgroup(f"docker/{docker_id()}", limit="64M") as cg:
        filler = spawn([system_python(), "-c", FILL], cgroup=cg, stdin=subprocess.PIPE)
        a = b = None
        try:
            assert filler.stdout.readline().strip() == "ready"
            a = _recorder(cg.path, tmp_path / "a", "--duration", "5")
            b = _recorder(cg.path, tmp_path / "b")
            meta_a = _meta(tmp_path / "a")
            _meta(tmp_path / "b")
            filler.stdin.write("go\n")
            filler.stdin.flush()
            assert filler.wait(timeout=60) == -signal.SIGKILL  # the OOM killer's
            killed = time.monotonic()
            time.sleep(1.0)  # B sees the kill counted
            b.send_signal(signal.SIGTERM)
            assert a.wait(timeout=60) == 0, a.stderr.read()
            assert b.wait(timeout=60) == 0, b.stderr.read()
        finally:
            stop(filler)
            for r in (a, b):
                if r is not None and r.poll() is None:
                    r.kill()
                    r.wait()

        # A: the prediction, made from the first seconds only
        ana = analyze(tmp_path / "a")
        v = ana.container
        assert v is not None and v["cgroup"] == cg.path and v["limit"] == 64 * MiB
        assert v["container"]["runtime"] == "docker"
        rate = ana.figures["cgroup.working_set_rate_bytes_per_s"]
        assert 3 * MiB < rate < 5 * MiB, rate
        predicted = ana.figures["cgroup.time_to_limit_s"]
        actual = killed - (meta_a["start_monotonic"] + ana.window.t_end)
        assert actual > 3, actual
        assert abs(predicted - actual) <= 0.25 * actual, (predicted, actual)
        limit = ana.finding("cgroup-limit")
        assert limit is not None and limit.severity == "critical"  # within the 1 h horizon
        assert "(docker) reaches its 64.0 MB limit in" in limit.statement, limit.statement
        print(f"time to limit: predicted {predicted:.2f} s, actual {actual:.2f} s, error "
              f"{(predicted - actual) / actual * 100:+.1f} %")
        assert limit.evidence["cgroup.time_to_limit_s"] == pytest.approx(predicted)

        # B: the kill happened: critical, whatever the horizon
        ana_b = analyze(tmp_path / "b", limit_horizon=1.0)
        limit_b = ana_b.finding("cgroup-limit")
        assert limit_b is not None and limit_b.severity == "critical"
        assert "the OOM killer killed 1 process in container" in limit_b.statement
        assert ana_b.figures["cgroup.oom_kills"] == 1
        assert ana_b.figures["cgroup.limit_hits"] > 0
        assert ana_b.severity == "critical"
        # compare A (before the kill) with B: one OOM kill more is never noise, and a
        # regression under a blanket --fail-on-regression; the default gates fail on it
        from loadmem.compare.comparison import compare_recordings
        from loadmem.gates import run_gates

        comp = compare_recordings([tmp_path / "a", tmp_path / "b"], fail_on_regression=0.10)
        oom = comp.change("cgroup.oom_kills")
        assert (oom.base, oom.new, oom.verdict) == (0, 1, "worse") and oom.regression
        assert comp.exit_code == 1 and "cgroup.oom_kills +1" in comp.headline()
        gates = run_gates(tmp_path / "b", start_dir=tmp_path, analysis=ana_b)
        failed = [g.metric for g in gates.failed]
        assert "cgroup.oom_kills" in failed and gates.exit_code == 1, gates.summary()
        # the plot has a container panel: usage, working set, limit, the OOM kill
        from loadmem.presentation.plot import render_figure, save_plot
        from loadmem.presentation.plot_container import TITLE

        fig = render_figure(tmp_path / "b", ana_b)
        (ax,) = [a for a in fig.axes if a.get_title(loc="left").startswith(TITLE)]
        labels = [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() \
            else [h.get_label() for h in ax.get_lines()]
        assert any(lb.startswith("limit 64.0 MB") for lb in labels), labels
        assert any(lb.startswith("working set") for lb in labels), labels
        assert any(lb.startswith("OOM kill") for lb in labels), labels
        png = save_plot(tmp_path / "b", ana_b, tmp_path / "b.png")
        assert png.stat().st_size > 10_000
        # the same, as the CLI shows it (exit 1: a finding at warning or above)
        r = subprocess.run([sys.executable, "-m", "loadmem", "analyze", str(tmp_path / "b")],
                           capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert r.returncode == 1 and "cgroup-limit" in r.stdout, r.stdout + r.stderr


def test_horizon_decides_between_critical_and_info(tmp_path):
    """The same growing container: critical within the horizon, info beyond it."""
    with memory_cgroup(f"docker/{docker_id()}", limit="256M") as cg:
        filler = spawn([system_python(), "-c", FILL], cgroup=cg, stdin=subprocess.PIPE)
        rec = None
        try:
            assert filler.stdout.readline().strip() == "ready"
            rec = _recorder(cg.path, tmp_path / "r", "--duration", "3")
            _meta(tmp_path / "r")
            filler.stdin.write("go\n")
            filler.stdin.flush()
            assert rec.wait(timeout=60) == 0, rec.stderr.read()
        finally:
            stop(filler)
            if rec is not None and rec.poll() is None:
                rec.kill()
                rec.wait()
    r = open_recording(tmp_path / "r")
    view = container_view(r, 0.0, 1e9)
    assert view is not None and view.time_to_limit is not None
    ttl = view.time_to_limit
    assert 20 < ttl < 120, ttl  # ~240 MiB to go at 4 MiB/s
    near = findings(view, horizon=ttl * 2)
    far = findings(view, horizon=ttl / 2)
    assert next(f for f in near if f.id == "cgroup-limit").severity == "critical"
    assert next(f for f in far if f.id == "cgroup-limit").severity == "info"
    ws = next(f for f in far if f.id == "working-set")
    assert ws.evidence["component.anon_delta_bytes"] > 4 * MiB
    assert os.path.basename(view.cgroup).startswith(view.container["id"][:12])
