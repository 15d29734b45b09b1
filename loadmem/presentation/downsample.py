"""Min/max envelope downsampling: draw a day of 1 Hz samples without losing a single peak.

A 24 h recording at 1 Hz has 86,400 samples per series, far more than the ~1,000 pixels a
panel is wide. Averaging or striding would hide exactly what a memory plot is for (a spike,
a dip, a step), so instead the samples are cut into bins of consecutive samples and, in each
bin, the sample holding the minimum and the one holding the maximum are kept. The result is
a subset of the *real* samples, in time order, whose line traces the same envelope as the
full series.

Stacked areas need every layer at the same instants, so ``envelope_indices`` takes several
rows (the layers and their total) and keeps, per bin, the minimum and maximum sample of each
row; all rows are then drawn at those shared indices. Everything is vectorised: one reshape
and one ``argmin``/``argmax`` per row, no Python loop over samples.
"""

from __future__ import annotations

import numpy as np

#: About two points per horizontal pixel of a laptop-sized panel.
DEFAULT_MAX_POINTS = 2400


def envelope_indices(values: np.ndarray, max_points: int = DEFAULT_MAX_POINTS) -> np.ndarray:
    """Sorted indices of the samples to keep so that each bin's min and max of every row survive.

    ``values`` is one series (shape ``(n,)``) or several aligned series (shape ``(k, n)``).
    NaN (missing samples) never wins a bin unless the whole bin is missing, in which case one
    NaN is kept so that the gap stays visible. The first and last samples are always kept.
    """
    v = np.atleast_2d(np.asarray(values, dtype=np.float64))
    k, n = v.shape
    if n <= max(max_points, 2):
        return np.arange(n)
    bins = max(1, max_points // (2 * k))
    size = -(-n // bins)  # ceil
    bins = -(-n // size)
    pad = bins * size - n
    nan = np.isnan(v)
    lo = np.where(nan, np.inf, v)
    hi = np.where(nan, -np.inf, v)
    if pad:
        lo = np.pad(lo, ((0, 0), (0, pad)), constant_values=np.inf)
        hi = np.pad(hi, ((0, 0), (0, pad)), constant_values=-np.inf)
    offsets = np.arange(bins) * size
    keep = [
        (lo.reshape(k, bins, size).argmin(axis=2) + offsets).ravel(),
        (hi.reshape(k, bins, size).argmax(axis=2) + offsets).ravel(),
        np.array([0, n - 1]),
    ]
    idx = np.unique(np.concatenate(keep))
    return idx[idx < n]


def envelope(
    t: np.ndarray, values: np.ndarray, max_points: int = DEFAULT_MAX_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """``(t, values)`` reduced with ``envelope_indices`` (``values`` may be ``(k, n)``)."""
    idx = envelope_indices(values, max_points)
    v = np.asarray(values)
    return np.asarray(t)[idx], (v[..., idx])
