"""Robust trends: Theil–Sen slopes, window levels and a noise floor.

System-wide memory figures are noisy (other processes, the page cache, per-CPU free lists),
so a verdict never rests on "last sample minus first sample". Instead:

- the *level* when a window opens is the median of the few samples up to its first one (the
  state before it), the level at its end the median of its last few samples (for figures
  carried forward between reads, PSS, those of the samples whose figures were current);
- the *rate* is the Theil–Sen slope (median of pairwise slopes), which ignores up to ~29% of
  outlying samples; long series are subsampled evenly to at most ``MAX_POINTS`` points first,
  so memory stays O(n) and time bounded whatever the recording length;
- the *noise* of a series is estimated from its sample-to-sample differences
  (1.4826 × MAD of the differences / √2), which is robust to trends and to a few steps, and is
  measured on the baseline phase when there is one.
"""

from __future__ import annotations

import math
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


#: The most samples a level is made of.
MAX_EDGE = 10


def edge_count(n: int) -> int:
    """How many samples make up the level at each end of a window of ``n`` samples."""
    return int(min(MAX_EDGE, max(1, n // 10)))


class Change:
    """How one series moved over a window: levels at both ends, delta, noise; the
    Theil–Sen rate is worked out when first asked for (most series never need it)."""

    __slots__ = ("_rate", "_t", "_y", "end", "noise", "start")

    def __init__(self, start: float | None, end: float | None, rate: float | None = None,
                 noise: float = 0.0, t: np.ndarray | None = None,
                 y: np.ndarray | None = None) -> None:
        self.start = start  # level at the start (median of the first few samples)
        self.end = end  # level at the end (median of the last few samples)
        self.noise = noise  # robust sigma of one sample
        self._rate = rate
        self._t, self._y = t, y

    @property
    def rate(self) -> float | None:
        """Theil–Sen slope, units per second (a trend; the mean rate of the change is
        ``delta / duration``)."""
        if self._rate is None and self._t is not None and self._y is not None:
            self._rate = theil_sen(self._t, self._y)
            self._t = self._y = None
        return self._rate

    @property
    def delta(self) -> float | None:
        if self.start is None or self.end is None:
            return None
        return self.end - self.start

    def significant(self, floor: float, k: float = 3.0) -> bool:
        """|delta| above both an absolute floor and k × the noise of a level difference."""
        d = self.delta
        return d is not None and abs(d) >= max(floor, k * self.noise)

    def __repr__(self) -> str:
        return f"Change(start={self.start}, end={self.end}, noise={self.noise})"


def lead(sl: slice, k: int | None = None) -> int:
    """Index of the first sample of the start level of the window ``sl``: the level when a
    window opens is made of the ``edge_count`` samples up to and including its first one
    (the state before it, e.g. just before the load), never of samples inside it."""
    return max(sl.start - (k or edge_count(sl.stop - sl.start)) + 1, 0)


def end_edge(sl: slice, k: int | None = None) -> slice:
    """The samples the level at the end of the window ``sl`` is made of: its last
    ``edge_count`` (or ``k``)."""
    return slice(max(sl.stop - (k or edge_count(sl.stop - sl.start)), 0), sl.stop)


def _median(y: np.ndarray) -> float | None:
    y = y[np.isfinite(y)]
    return float(np.median(y)) if len(y) else None


def _edge(y: np.ndarray, lo: int, hi: int, offset: int,
          current: np.ndarray | None) -> float | None:
    """Median of ``y`` over the system samples ``[lo, hi)`` (``y`` from ``offset`` on); with
    ``current``, over those of them where it is true, when there are any."""
    lo = max(lo, offset)
    seg = y[lo - offset:max(hi - offset, 0)]
    if current is not None and len(seg):
        keep = current[lo:lo + len(seg)] & np.isfinite(seg)
        if keep.any():
            seg = seg[keep]
    return _median(seg)


def levels(y: np.ndarray, sl: slice, offset: int = 0, k: int | None = None,
           current: np.ndarray | None = None) -> tuple[float | None, float | None]:
    """The level of ``y`` when the window ``sl`` (system sample indices) opens and at its end:
    the median of the ``edge_count`` samples up to and including its first sample (the first
    ones of the recording when it opens with them), and of its last ``edge_count`` samples
    (missing samples left out). ``y`` holds the samples from index
    ``offset`` on. The one definition of "at the start" and "at the end" every output uses
    (analysis, run summary, ``loadmem ls``, plot, report). ``k``: the number of edge samples
    (the phases of a window use the window's own, so their changes add up to its change).

    ``current`` (per system sample; for the sums of figures carried forward between reads,
    like PSS): the samples whose figures were all current. An edge that has some takes its
    median over those only: a figure the recorder knew had moved since its read is not a
    sample of the level (the recording's last tick reads every moved figure, so its end has
    one)."""
    n = sl.stop - sl.start
    if n <= 0:
        return None, None
    k = k or edge_count(n)
    a = lead(sl, k)  # the k samples up to the first one (the first k of the recording)
    y = np.asarray(y, dtype=float)
    end = end_edge(sl, k)
    return (_edge(y, a, a + k, offset, current),
            _edge(y, end.start, end.stop, offset, current))


def change(t: np.ndarray, y: np.ndarray, sl: slice, noise: float | None = None,
           offset: int = 0, k: int | None = None,
           current: np.ndarray | None = None) -> Change:
    """Levels at both ends (``levels``, ``current`` passed on), Theil–Sen rate (on demand,
    over the window's own samples) and noise (the window's own when not given) of ``y`` over
    the window ``sl``. ``t`` is indexed like the system samples; ``y`` holds the samples from
    ``offset`` on."""
    yw = np.asarray(y[sl.start - offset:sl.stop - offset], dtype=float)
    tw, yw = _clean(np.asarray(t[sl], dtype=float), yw)
    if len(yw) == 0:
        return Change(None, None, None, noise or 0.0)
    start, end = levels(y, sl, offset, k, current)
    return Change(start, end, None, noise_sigma(yw) if noise is None else noise, t=tw, y=yw)
