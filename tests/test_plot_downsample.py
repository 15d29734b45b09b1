"""Min/max envelope downsampling: fewer points, every bin's extremes kept, gaps kept."""

from __future__ import annotations

import numpy as np

from loadmem.presentation.downsample import envelope, envelope_indices


def test_short_series_are_untouched():
    v = np.arange(100.0)
    assert np.array_equal(envelope_indices(v, 200), np.arange(100))


def test_a_day_at_1hz_keeps_every_bin_extreme_and_the_single_spike():
    rng = np.random.default_rng(7)
    n = 86_400
    v = np.cumsum(rng.normal(0, 1, n))
    v[12_345] = v.max() + 1000  # one-sample spike
    v[70_001] = v.min() - 1000  # one-sample dip
    idx = envelope_indices(v, 2000)
    assert len(idx) <= 2000 + 2
    assert np.all(np.diff(idx) > 0)  # sorted, unique: a line in time order
    assert idx[0] == 0 and idx[-1] == n - 1
    assert 12_345 in idx and 70_001 in idx
    # every bin's min and max survive: compare the envelope of the kept points per bin
    size = -(-n // 1000)
    for b in range(0, n, size * 97):  # a sample of bins
        seg = v[b : b + size]
        kept = v[idx[(idx >= b) & (idx < b + size)]]
        assert kept.max() == seg.max() and kept.min() == seg.min()


def test_several_rows_share_indices_and_keep_each_rows_extremes():
    rng = np.random.default_rng(3)
    rows = rng.normal(0, 1, (3, 50_000))
    rows[1, 31_337] = 99.0
    rows[2, 4_242] = -99.0
    t = np.arange(50_000) * 0.5
    tt, vv = envelope(t, rows, 600)
    assert vv.shape[0] == 3 and vv.shape[1] == len(tt) < 50_000
    assert 99.0 in vv[1] and -99.0 in vv[2]
    for r in range(3):
        assert vv[r].max() == rows[r].max() and vv[r].min() == rows[r].min()


def test_missing_samples_never_win_but_whole_gaps_stay_visible():
    v = np.linspace(0, 1, 10_000)
    v[2_000:2_010] = np.nan  # a few missing samples inside a bin
    v[5_000:6_000] = np.nan  # a gap longer than a bin
    idx = envelope_indices(v, 100)
    kept = v[idx]
    assert np.nanmax(kept) == 1.0 and np.nanmin(kept) == 0.0
    assert np.isnan(kept).any()  # the long gap is drawn as a gap, not bridged silently
    assert not np.isnan(v[idx[(idx >= 1_900) & (idx < 2_100)]]).all()
