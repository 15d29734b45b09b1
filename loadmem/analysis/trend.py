"""Robust trends: Theil–Sen slopes, window levels and a noise floor.

System-wide memory figures are noisy (other processes, the page cache, per-CPU free lists),
so a verdict never rests on "last sample minus first sample". Instead:

- the *level* at either end of a window is the median of its first / last few samples;
- the *rate* is the Theil–Sen slope (median of pairwise slopes), which ignores up to ~29% of
  outlying samples; long series are subsampled evenly to at most ``MAX_POINTS`` points first,
  so memory stays O(n) and time bounded whatever the recording length;
- the *noise* of a series is estimated from its sample-to-sample differences
  (1.4826 × MAD of the differences / √2), which is robust to trends and to a few steps, and is
  measured on the baseline phase when there is one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

#: Theil–Sen works on at most this many points (about MAX_POINTS²/2 pairwise slopes).
MAX_POINTS = 500
_MAD_TO_SIGMA = 1.4826


def _clean(t: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ok = np.isfinite(t) & np.isfinite(y)
    return t[ok], y[ok]


@lru_cache(maxsize=8)
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j) of n points; cached, as every series of a window has the same n."""
    i, j = np.triu_indices(n, k=1)
    return i.astype(np.int32), j.astype(np.int32)


def theil_sen(t: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> float | None:
    """Median of the pairwise slopes ``(y_j - y_i) / (t_j - t_i)``; None with < 2 points."""
    t, y = _clean(np.asarray(t, dtype=float), np.asarray(y, dtype=float))
    n = len(t)
    if n < 2:
        return None
    if n > max_points:  # even subsample: keeps the shape, bounds the pair count
        idx = np.linspace(0, n - 1, max_points).round().astype(np.int64)
        t, y = t[idx], y[idx]
        n = len(t)
    i, j = _pairs(n)
    dt = t[j] - t[i]
    ok = dt > 0
    if not ok.any():
        return None
    slopes = (y[j][ok] - y[i][ok]) / dt[ok]
    return float(np.median(slopes))


def noise_sigma(y: np.ndarray) -> float:
    """Robust standard deviation of one sample's noise, from sample-to-sample differences."""
    y = np.asarray(y, dtype=float)
    y = y[np.isfinite(y)]
    if len(y) < 3:
        return 0.0
    d = np.diff(y)
    mad = float(np.median(np.abs(d - np.median(d))))
    return _MAD_TO_SIGMA * mad / math.sqrt(2.0)


def edge_count(n: int) -> int:
    """How many samples make up the level at each end of a window of ``n`` samples."""
    return int(min(10, max(1, n // 10)))


@dataclass(frozen=True)
class Change:
    """How one series moved over a window."""

    start: float | None  # level at the start (median of the first few samples)
    end: float | None  # level at the end (median of the last few samples)
    rate: float | None  # Theil–Sen slope, units per second
    noise: float  # robust sigma of one sample

    @property
    def delta(self) -> float | None:
        if self.start is None or self.end is None:
            return None
        return self.end - self.start

    def significant(self, floor: float, k: float = 3.0) -> bool:
        """|delta| above both an absolute floor and k × the noise of a level difference."""
        d = self.delta
        return d is not None and abs(d) >= max(floor, k * self.noise)


def change(t: np.ndarray, y: np.ndarray, noise: float | None = None) -> Change:
    """Levels at both ends, Theil–Sen rate and noise of ``y`` over the samples given."""
    t, y = _clean(np.asarray(t, dtype=float), np.asarray(y, dtype=float))
    if len(y) == 0:
        return Change(None, None, None, noise or 0.0)
    k = edge_count(len(y))
    return Change(
        start=float(np.median(y[:k])),
        end=float(np.median(y[-k:])),
        rate=theil_sen(t, y),
        noise=noise_sigma(y) if noise is None else noise,
    )
