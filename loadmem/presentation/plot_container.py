"""The container panel of ``loadmem plot``/``report``: the memory cgroup the watched
processes share, as the OOM killer and kubelet see it (``loadmem.analysis.container``).

Stacked: anon, file cache (active, inactive), kernel (slab, sockets, stacks, page tables);
lines: usage, the working set (usage - inactive file, what kubelet reports and evicts on)
and the effective limit; a marker where the OOM killer killed. Drawn only when the analysis
has a container view.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from matplotlib.axes import Axes

from loadmem.analysis.container import COMPONENTS, read_cgroup
from loadmem.presentation import escape
from loadmem.presentation.downsample import envelope_indices
from loadmem.recording.reader import Recording
from loadmem.units import format_bytes, format_duration

TITLE = "Container (memory cgroup): usage and working set against the limit"
_LAYERS = (  # component, colour, label
    ("anon", "#CC79A7", "anon"),
    ("active_file", "#56B4E9", "active file cache"),
    ("inactive_file", "#BFE0F5", "inactive file cache"),
    ("kernel", "#E69F00", "kernel (slab, sockets, stacks, page tables)"),
)


def panel_container(ax: Axes, rec: Recording, view: dict[str, Any], t_range: tuple[float, float],
                    x: Callable[[np.ndarray], np.ndarray], max_points: int,
                    legend: Callable[[Axes], None]) -> None:
    s = read_cgroup(rec, view["cgroup"])
    title = f"{TITLE}: {escape.plot(view['cgroup'])}"
    if s is None or s.get("usage") is None:
        ax.set_title(title, loc="left", fontsize=10)
        ax.text(0.5, 0.5, "no cgroup samples in this range", transform=ax.transAxes,
                ha="center", va="center", color="#555")
        return
    keep = (s.t >= t_range[0]) & (s.t <= t_range[1])
    t = s.t[keep]
    usage = s.values["usage"][keep]
    ws = s.working_set()
    ws = ws[keep] if ws is not None else None
    layers = []
    for name, colour, label in _LAYERS:
        y = s.kernel() if name == "kernel" else s.get(*COMPONENTS[name])
        if y is not None:
            layers.append((np.nan_to_num(y[keep]), colour, label))
    limit = view.get("limit")
    top = float(np.nanmax(usage)) if np.isfinite(usage).any() else 0.0
    if limit:
        top = max(top, float(limit))
    scale, unit = (1 << 30, "GiB") if top >= 4 << 30 else (1 << 20, "MiB")
    stack = [np.nan_to_num(usage)] + [y for y, _, _ in layers]
    idx = envelope_indices(np.vstack(stack), max_points) if len(t) else np.arange(0)
    xs = x(t[idx])
    bottom = np.zeros(len(idx))
    for y, colour, label in layers:
        ax.fill_between(xs, bottom, bottom + y[idx] / scale, step="post", color=colour,
                        alpha=0.85, linewidth=0, label=label)
        bottom = bottom + y[idx] / scale
    ax.plot(xs, usage[idx] / scale, color="#000000", linewidth=1.2,
            label=f"usage (end {format_bytes(view.get('usage_end'))})")
    if ws is not None:
        ax.plot(xs, ws[idx] / scale, color="#D55E00", linewidth=1.6,
                label=f"working set = usage - inactive file (end "
                      f"{format_bytes(view.get('ws_end'))})")
    if limit:
        ttl = view.get("time_to_limit")
        note = f", reached in {format_duration(ttl)} at the current rate" \
            if ttl is not None and not view.get("oom_kills") else ""
        ax.axhline(limit / scale, color="#B00020", linestyle="--", linewidth=1.2,
                   label=f"limit {format_bytes(limit)}{note}")
    if view.get("oom_kill_t") is not None:
        ax.axvline(x(np.asarray([view["oom_kill_t"]]))[0], color="#B00020", linewidth=2,
                   label=f"OOM kill ({int(view.get('oom_kills') or 0)})")
    ax.set_ylim(0, max(1e-9, top / scale) * 1.12)
    ax.set_title(title, loc="left", fontsize=10)
    ax.set_ylabel(f"memory ({unit})")
    legend(ax)
