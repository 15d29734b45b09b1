"""Overlay recordings on one time axis aligned at load start (matplotlib, Agg backend).

Two panels: the change of system used memory (MemTotal - MemAvailable) since load start,
and the summed PSS of the watched processes (series from ``loadmem.analysis.series``).
Recordings without a load phase are aligned at their start. Used memory is drawn as a
change because its absolute level depends on everything else running on the machine; PSS
is the watched group's own and is drawn as is.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from loadmem.analysis.series import build
from loadmem.errors import LoadmemError
from loadmem.recording.reader import Recording

MIB = float(2**20)


def _used_and_pss(rec: Recording) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(t, used, t, sum PSS) from the series layer: used = MemTotal - MemAvailable, and the
    watched processes' summed PSS at the ticks where every one of them had a figure."""
    series = build(rec)
    t = series.system.t
    w = series.processes.watched
    pss = w.get("pss")
    full = (w.count > 0) & (w.smaps_count >= w.count)
    if pss is None:
        full &= False
    return t, series.system.get("used"), t[full], (pss[full] if pss is not None else t[full])


def plot_comparison(recordings: Sequence[Recording], labels: Sequence[str],
                    out: str | Path) -> Path:
    """Write the overlay figure to ``out`` (format from its extension)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    fig, (ax_used, ax_pss) = plt.subplots(2, 1, sharex=True, figsize=(10, 6.5))
    for rec, label in zip(recordings, labels, strict=True):
        t0 = next((a for name, a, _ in rec.phases() if name == "load"), 0.0)
        t, used, tp, pss = _used_and_pss(rec)
        ok = np.isfinite(used)
        if ok.any():
            base = float(np.interp(t0, t[ok], used[ok]))
            ax_used.plot(t[ok] - t0, (used[ok] - base) / MIB, label=label, linewidth=1.4)
        t = tp
        if t.size:
            ax_pss.plot(t - t0, pss / MIB, label=label, linewidth=1.4)
    for ax in (ax_used, ax_pss):
        ax.axvline(0.0, color="0.5", linestyle=":", linewidth=1)
        ax.grid(True, alpha=0.3)
    ax_used.set_ylabel("system used memory\nchange since load start (MiB)")
    ax_pss.set_ylabel("watched processes\nsum PSS (MiB)")
    ax_pss.set_xlabel("seconds since load start (or recording start)")
    ax_used.legend(loc="upper left", fontsize="small")
    ax_used.set_title("loadmem compare")
    fig.tight_layout()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110)
    except (OSError, ValueError) as e:
        raise LoadmemError(f"cannot write plot {out}: {e}", "choose a writable .png path") from None
    finally:
        plt.close(fig)
    return out
