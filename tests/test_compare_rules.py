"""The comparison rules on hand-made figures: verdicts, noise sources, regressions.

tests/test_compare_real.py checks the same code on real recordings of forked children.
"""

from __future__ import annotations

import io
import json

import pytest

from loadmem.analysis.figures import lookup
from loadmem.compare.comparison import RecordingSummary, compare
from loadmem.compare.noise import RecordingNoise
from loadmem.errors import LoadmemError
from loadmem.gates.config import RegressionBudget
from loadmem.presentation.compare_render import render_json, render_markdown, render_text

MIB = float(2**20)


def summary(side: str, name: str, noise: RecordingNoise | None = None, **figs) -> RecordingSummary:
    figures = {k.replace("__", "."): v for k, v in figs.items()}
    return RecordingSummary(path=f"/r/{name}", label=name, side=side, figures=figures,
                            noise=noise or RecordingNoise(window="baseline phase"))


def test_verdicts_follow_the_direction_of_better():
    base = summary("base", "v1", cow__unshared_bytes=1 * MIB, requests__rps=100.0,
                   latency__p95_ms=50.0, page_cache__delta_bytes=0.0)
    new = summary("new", "v2", cow__unshared_bytes=60 * MIB, requests__rps=150.0,
                  latency__p95_ms=50.5, page_cache__delta_bytes=100 * MIB)
    comp = compare([base, new])
    cow = comp.change("cow.unshared_bytes")
    assert cow is not None and cow.verdict == "worse" and cow.delta == 59 * MIB
    assert comp.change("requests.rps").verdict == "better"  # higher is better
    assert comp.change("latency.p95_ms").verdict == "within noise"  # under the 1 ms floor
    assert comp.change("page_cache.delta_bytes").verdict == "changed"  # no direction
    # no allowance configured: informative only
    assert not comp.regressions and comp.exit_code == 0
    assert "cow.unshared_bytes +59.0 MB" in comp.headline()


def test_fail_on_regression_and_per_metric_budget():
    base = summary("base", "v1", watched__pss_end_bytes=100 * MIB, latency__p95_ms=100.0)
    new = summary("new", "v2", watched__pss_end_bytes=108 * MIB, latency__p95_ms=115.0)
    comp = compare([base, new], fail_on_regression=0.10)
    assert comp.change("watched.pss_end_bytes").verdict == "worse"
    assert not comp.change("watched.pss_end_bytes").regression  # +8% < 10%
    assert comp.change("latency.p95_ms").regression and comp.exit_code == 1
    p95 = lookup("latency.p95_ms")
    comp = compare([base, new], fail_on_regression=0.10,
                   budgets={"latency.p95_ms": RegressionBudget(p95, relative=0.20, text="20%")})
    assert not comp.regressions and comp.exit_code == 0
    pss = lookup("watched.pss_end_bytes")
    comp = compare([base, new], budgets={
        "watched.pss_end_bytes": RegressionBudget(pss, absolute=4 * MIB, text="4M")})
    assert [c.metric.name for c in comp.regressions] == ["watched.pss_end_bytes"]


def test_noise_from_repeats_and_from_the_baseline():
    # Repeats: the base side spreads by 30 MiB, so a 20 MiB change is within noise.
    recs = [summary("base", "a1", watched__pss_delta_bytes=10 * MIB),
            summary("base", "a2", watched__pss_delta_bytes=40 * MIB),
            summary("new", "b1", watched__pss_delta_bytes=45 * MIB)]
    c = compare(recs, fail_on_regression=0.10).change("watched.pss_delta_bytes")
    assert c.noise == 30 * MIB and "repeats" in c.noise_source
    assert c.verdict == "within noise" and not c.regression
    # Baseline sigma 5 MiB -> noise 3*sqrt(2)*5 = 21.2 MiB: +15 MiB is noise, +30 is not.
    noisy = RecordingNoise(window="baseline phase", pss_bytes=5 * MIB, rss_bytes=1 * MIB)
    for delta, verdict in ((15, "within noise"), (30, "worse")):
        recs = [summary("base", "a", noisy, watched__pss_delta_bytes=0.0),
                summary("new", "b", noisy, watched__pss_delta_bytes=delta * MIB)]
        c = compare(recs).change("watched.pss_delta_bytes")
        assert c.noise == pytest.approx(3 * 2**0.5 * 5 * MIB)
        assert c.verdict == verdict
    # System-wide figures also allow for what the rest of the machine did.
    sysn = RecordingNoise(window="baseline phase", used_bytes=1 * MIB)
    recs = [summary("base", "a", sysn, window__used_delta_bytes=0.0,
                    other_processes__delta_bytes=0.0),
            summary("new", "b", sysn, window__used_delta_bytes=80 * MIB,
                    other_processes__delta_bytes=90 * MIB)]
    c = compare(recs).change("observe.used_delta_bytes")  # the old name is an alias
    assert c.metric.name == "window.used_delta_bytes"
    assert c.verdict == "within noise" and "rest of the machine" in c.noise_source


def test_renderings_and_sides():
    base = summary("base", "v1", cow__unshared_bytes=0.0, sharing_ratio__end=0.2)
    new = summary("new", "v2", cow__unshared_bytes=48 * MIB, sharing_ratio__end=0.6)
    comp = compare([base, new], fail_on_regression=0.10)
    out = io.StringIO()
    render_text(comp, out)
    text = out.getvalue()
    assert text.startswith("loadmem compare: 2 regression(s)")
    row = next(ln for ln in text.splitlines() if ln.strip().startswith("cow.unshared_bytes"))
    assert "48.0 MB" in row and "+48.0 MB" in row and "WORSE REGRESSION" in row
    md = io.StringIO()
    render_markdown(comp, md)
    assert "| `cow.unshared_bytes` | 0 B | 48.0 MB | +48.0 MB |" in md.getvalue()
    js = io.StringIO()
    render_json(comp, js)
    data = json.loads(js.getvalue())
    assert data["regressions"] == ["sharing_ratio.end", "cow.unshared_bytes"] or set(
        data["regressions"]) == {"sharing_ratio.end", "cow.unshared_bytes"}
    assert data["exit_code"] == 1
    with pytest.raises(LoadmemError, match="each side"):
        compare([base])


def test_the_unexplained_remainder_is_never_more_precise_than_the_rest_of_the_machine():
    """Two recordings of the same idle processes on a busy machine (the figures of a real CI
    run of tests/test_compare_real.py): the machine freed 16 MB during one and took 2 MB
    during the other. The unexplained remainder also takes the kernel's tables out, so it
    moved a little more than |Δ used - Δ PSS|: still the machine, not a regression."""
    quiet = RecordingNoise(window="lead-in (first 20%)", used_bytes=0.0)
    base = summary("base", "flat-a", quiet, observe__used_delta_bytes=-16_855_040.0,
                   watched__pss_delta_bytes=8192.0, other_processes__delta_bytes=0.0,
                   unexplained__delta_bytes=-16_863_232.0)
    new = summary("new", "flat-b", quiet, observe__used_delta_bytes=1_806_336.0,
                  watched__pss_delta_bytes=8192.0, other_processes__delta_bytes=0.0,
                  unexplained__delta_bytes=1_822_720.0)
    comp = compare([base, new], fail_on_regression=0.10)
    rest = comp.change("unexplained.delta_bytes")
    assert rest.delta == 1_822_720.0 + 16_863_232.0
    assert rest.verdict == "within noise" and rest.noise >= rest.delta
    assert "rest of the machine" in rest.noise_source
    assert not comp.regressions and comp.exit_code == 0


def test_counts_of_events_that_must_not_happen_are_never_noise():
    """One OOM kill more is worse and a regression under a blanket --fail-on-regression (10 %
    of zero allows none); the same for failed requests. Fewer is better, a per-figure budget
    still allows what it says."""
    base = summary("base", "v1", cgroup__oom_kills=0.0, requests__failures=100.0,
                   cgroup__limit_hits=0.0)
    new = summary("new", "v2", cgroup__oom_kills=1.0, requests__failures=101.0,
                  cgroup__limit_hits=1.0)
    comp = compare([base, new], fail_on_regression=0.10)
    oom, failures = comp.change("oom_kills"), comp.change("requests.failures")
    assert oom.verdict == "worse" and oom.regression and oom.noise == 0.0
    assert "must not happen" in oom.noise_source
    assert failures.verdict == "worse" and failures.regression  # +1 %, still one more
    # a count without the rule keeps its noise floor (limit hits: reclaim at the limit)
    assert comp.change("cgroup.limit_hits").verdict == "within noise"
    assert comp.exit_code == 1
    assert comp.headline().startswith("2 regression(s): cgroup.oom_kills +1 (0 -> 1")
    # informative only without an allowance, but still worse
    plain = compare([base, new])
    assert plain.change("cgroup.oom_kills").verdict == "worse" and not plain.regressions
    # an explicit budget for the figure is the user's word
    budget = RegressionBudget(lookup("requests.failures"), absolute=5.0, text="5")
    comp = compare([base, new], fail_on_regression=0.10,
                   budgets={"requests.failures": budget})
    assert not comp.change("requests.failures").regression
    # fewer is better, none to none is no change
    comp = compare([summary("base", "v2", cgroup__oom_kills=1.0),
                    summary("new", "v3", cgroup__oom_kills=0.0)])
    assert comp.change("cgroup.oom_kills").verdict == "better"
    comp = compare([base, summary("new", "v3", cgroup__oom_kills=0.0)], 0.10)
    assert comp.change("cgroup.oom_kills").verdict == "within noise" and not comp.regressions


def test_default_gates_allow_no_oom_kill():
    from loadmem.analysis.figures import event_counts
    from loadmem.gates.config import default_config

    gates = {g.metric.name: g for g in default_config().gates}
    assert {m.name for m in event_counts()} == {"cgroup.oom_kills", "requests.failures"}
    oom = gates["cgroup.oom_kills"]
    assert oom.comparison == "max" and oom.budget == 0 and oom.missing == "skip"
    assert "requests.failures" not in gates  # bounded by the failure ratio instead
