"""Overlay recordings on one time axis aligned at load start (matplotlib, Agg backend).

Two panels: the change of system used memory (MemTotal - MemAvailable) since load start,
and the summed PSS of the watched processes. Recordings without a load phase are aligned
at their start. Used memory is drawn as a change because its absolute level depends on
everything else running on the machine; PSS is the watched group's own and is drawn as is.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loadmem.compare.noise import recording_noise
from loadmem.errors import LoadmemError
from loadmem.recording.reader import Recording

MIB = float(2**20)


def _used(rec: Recording) -> tuple[np.ndarray, np.ndarray]:
    s = rec.table("system")
    if not {"MemTotal", "MemAvailable"} <= set(s.column_names) or s.num_rows == 0:
        return np.array([]), np.array([])
    used = pc.subtract(s.column("MemTotal"), s.column("MemAvailable"))
    return (s.column("t").to_numpy().astype(float),
            used.to_numpy(zero_copy_only=False).astype(float))


def _sum_pss(rec: Recording) -> tuple[np.ndarray, np.ndarray]:
    p = rec.table("processes", ["t", "tick", "role", "pss"])
    if p.num_rows == 0:
        return np.array([]), np.array([])
    p = p.filter(pc.equal(p.column("role").cast(pa.string()), "target"))
    p = p.filter(pc.is_valid(p.column("pss")))
    if p.num_rows == 0:
        return np.array([]), np.array([])
    g = p.group_by("tick").aggregate([("t", "min"), ("pss", "sum")]).sort_by("t_min")
    return (g.column("t_min").to_numpy().astype(float),
            g.column("pss_sum").to_numpy(zero_copy_only=False).astype(float))


def plot_comparison(recordings: Sequence[Recording], labels: Sequence[str],
                    out: str | Path) -> Path:
    """Write the overlay figure to ``out`` (format from its extension)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    fig, (ax_used, ax_pss) = plt.subplots(2, 1, sharex=True, figsize=(10, 6.5))
    for rec, label in zip(recordings, labels, strict=True):
        t0 = recording_noise(rec).load_start or 0.0
        t, used = _used(rec)
        if t.size:
            base = float(np.interp(t0, t, used))
            ax_used.plot(t - t0, (used - base) / MIB, label=label, linewidth=1.4)
        t, pss = _sum_pss(rec)
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
