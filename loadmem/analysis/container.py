"""The container view: memory as the OOM killer and kubelet see it, when the watched
processes share a memory cgroup other than the root.

In a container, "free memory" is the cgroup's headroom, not ``MemAvailable``: the kernel
kills a process of the cgroup when its usage reaches the effective limit (its own
``memory.max`` or an ancestor's: a pod's), and Kubernetes reports and evicts on the
**working set**, ``usage - inactive_file`` (kubelet, cAdvisor; v1: ``total_inactive_file``).
Over the analysis window this reads the ``cgroup`` table (``docs/recording-format.md``) and
says:

- usage and working set against the limit at the window's start and end;
- the working set's current rate (Theil–Sen slope over the last half of the window, the
  same "current" as the copy-on-write rate) and the **time to the limit** at that rate,
  projected from the fitted line's value at the window's end;
- what the growth is made of (anon, active and inactive file cache, shmem/tmpfs, kernel:
  slab, sockets, stacks, page tables), tied to the process-level findings (anon growth
  with copy-on-write unsharing or RSS growth);
- OOM kills, limit hits (``events.max`` / v1 ``failcnt``) and memory pressure (PSI, v2).

Findings: ``cgroup-limit`` (critical when the OOM killer killed in the window or the limit
is predicted within ``LIMIT_HORIZON_S``; warning when the headroom is under
``HEADROOM_WARN``; info otherwise) and ``working-set`` (the working set rose: a warning
when the processes' RSS stayed flat, which is the question container users ask). Figures:
``cgroup.*`` in the catalogue (``figures.py``).

Which cgroup: the one the watched (role ``target``) processes are in (the ``processes``
table's ``cgroup`` column), their nearest recorded common ancestor when they are in
several, else the one ``meta.json`` ``selected`` names. The view is made for a container,
a cgroup selected by ``--cgroup``/``--container``/``--unit``, or any cgroup with a limit: a
login session's cgroup without one says nothing the system view does not.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loadmem.analysis.model import Finding
from loadmem.analysis.trend import edge_count, theil_sen
from loadmem.procfs.container_id import container_in_path
from loadmem.recording.reader import Recording
from loadmem.units import format_bytes, format_duration

#: The limit predicted within this many seconds is critical (``analyze --limit-horizon``).
LIMIT_HORIZON_S = 3600.0
#: Less headroom than this fraction of the limit (for the working set) is a warning.
HEADROOM_WARN = 0.10
#: The working set "rose" when it moved at least this much (and above its noise).
WS_MIN_BYTES = 4 << 20
#: The processes' RSS "stayed flat" when it moved less than this fraction of the working set.
RSS_FLAT_SHARE = 0.2

#: component -> memory.stat key (v2, then v1's hierarchical key, then v1's own)
COMPONENTS: dict[str, tuple[str, ...]] = {
    "anon": ("anon", "total_rss", "rss"),
    "active_file": ("active_file", "total_active_file"),
    "inactive_file": ("inactive_file", "total_inactive_file"),
    "shmem": ("shmem", "total_shmem"),
    "slab": ("slab",),
    "sock": ("sock",),
    "kernel_stack": ("kernel_stack",),
    "pagetables": ("pagetables",),
}
_LABEL = {"anon": "anon", "active_file": "active file cache",
          "inactive_file": "inactive file cache", "shmem": "shmem/tmpfs", "kernel": "kernel"}
_KEYS = ("usage", "limit", "effective_limit", "peak", "events.oom_kill", "events.max",
         "under_oom", "pressure.some_avg10", "pressure.full_avg10",
         *[k for keys in COMPONENTS.values() for k in keys])


@dataclass
class CgroupSeries:
    """One cgroup's recorded keys, one row per tick (NaN where a key has no row)."""

    path: str
    version: int
    t: np.ndarray
    values: dict[str, np.ndarray]

    def get(self, *keys: str) -> np.ndarray | None:
        """The first of ``keys`` that was recorded."""
        for k in keys:
            if k in self.values:
                return self.values[k]
        return None

    def working_set(self) -> np.ndarray | None:
        usage, inactive = self.get("usage"), self.get(*COMPONENTS["inactive_file"])
        if usage is None:
            return None
        if inactive is None:
            return usage
        return np.maximum(usage - np.nan_to_num(inactive), 0.0)

    def kernel(self) -> np.ndarray | None:
        parts = [self.get(*COMPONENTS[k]) for k in ("slab", "sock", "kernel_stack",
                                                     "pagetables")]
        got = [p for p in parts if p is not None]
        return np.sum(got, axis=0) if got else None


def recorded_cgroups(rec: Recording) -> list[str]:
    table = rec.table("cgroup", ["cgroup"])
    if table.num_rows == 0:
        return []
    col = table.column("cgroup")
    if pa.types.is_dictionary(col.type):
        col = col.cast(pa.string())
    return sorted(set(pc.unique(col).to_pylist()) - {None})


def read_cgroup(rec: Recording, path: str) -> CgroupSeries | None:
    """The keys this view needs of one cgroup, pivoted to one row per tick."""
    table = rec.table("cgroup", ["t", "cgroup", "version", "key", "value"])
    if table.num_rows == 0:
        return None
    cg = table.column("cgroup")
    if pa.types.is_dictionary(cg.type):
        cg = cg.cast(pa.string())
    key = table.column("key")
    if pa.types.is_dictionary(key.type):
        key = key.cast(pa.string())
    mask = pc.and_(pc.equal(cg, path), pc.is_in(key, value_set=pa.array(_KEYS)))
    sub = table.filter(mask)
    if sub.num_rows == 0:
        return None
    t = sub.column("t").to_numpy(zero_copy_only=False).astype(float)
    keys = pc.filter(key, mask).to_pylist()
    vals = sub.column("value").to_numpy(zero_copy_only=False).astype(float)
    times, idx = np.unique(t, return_inverse=True)
    values: dict[str, np.ndarray] = {}
    for k in set(keys):
        values[k] = np.full(len(times), np.nan)
    for i, k, v in zip(idx, keys, vals, strict=True):
        values[k][i] = v
    version = int(sub.column("version")[0].as_py() or 0)
    return CgroupSeries(path, version, times, values)


def _target_cgroup(rec: Recording, t_end: float) -> tuple[str | None, str]:
    """The cgroup the watched processes share, and how it was chosen."""
    recorded = set(recorded_cgroups(rec))
    # the target processes' rows at the window's last tick: a few rows, never the whole
    # processes table (millions of rows on a long recording)
    system = rec.select("system", ["t", "tick"])
    procs = pa.table({})
    if system.num_rows and "tick" in system.column_names:
        t = system.column("t")
        before = pc.filter(system.column("tick"), pc.less_equal(t, t_end))
        if len(before):
            last_tick = int(pc.max(before).as_py())
            procs = rec.rows_at_ticks("processes", [last_tick], ["role", "cgroup"])
    paths: Counter[str] = Counter()
    if procs.num_rows and "cgroup" in procs.column_names \
            and procs.column("cgroup").null_count < procs.num_rows:
        role = procs.column("role")
        cg = procs.column("cgroup")
        if pa.types.is_dictionary(role.type):
            role = role.cast(pa.string())
        if pa.types.is_dictionary(cg.type):
            cg = cg.cast(pa.string())
        keep = pc.equal(role, "target")
        paths.update(p for p in pc.filter(cg, pc.fill_null(keep, False)).to_pylist() if p)
    if paths:
        if len(paths) == 1:
            return next(iter(paths)), "processes"
        common = _common_ancestor(list(paths))
        if common in recorded:
            return common, "processes (common ancestor)"
        return paths.most_common(1)[0][0], "processes (most of them)"
    for e in rec.meta.get("selected") or []:
        if isinstance(e, dict) and e.get("cgroup") and e.get("hierarchy", "memory") in (
                "memory", "unified") and e["cgroup"] in recorded:
            return str(e["cgroup"]), "selected"
    return None, ""


def _common_ancestor(paths: list[str]) -> str:
    parts = [p.strip("/").split("/") for p in paths]
    out = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        out.append(level[0])
    return "/" + "/".join(out)


def _selected_cgroups(rec: Recording) -> set[str]:
    return {str(e["cgroup"]) for e in rec.meta.get("selected") or []
            if isinstance(e, dict) and e.get("selector") in ("cgroup", "container", "unit")
            and e.get("cgroup")}


@dataclass
class ContainerView:
    """The container's memory over the analysis window (bytes, seconds)."""

    cgroup: str
    version: int
    chosen_by: str
    container: dict[str, str] | None
    limit: float | None  # the effective limit at the end
    own_limit: float | None
    usage_start: float | None
    usage_end: float | None
    ws_start: float | None
    ws_end: float | None
    ws_rate: float | None  # bytes/s, last half of the window
    ws_fit_end: float | None  # the fitted working set at the window's end
    time_to_limit: float | None  # s from the window's end; None: not growing or no limit
    peak: float | None
    oom_kills: float  # in the window
    oom_kills_total: float
    oom_kill_t: float | None  # when the first one in the window was seen
    limit_hits: float  # events.max / failcnt in the window
    pressure_some_max: float | None  # fraction (0.0417 = 4.17 %), v2
    pressure_full_max: float | None
    components: dict[str, float] = field(default_factory=dict)  # Δ over the window
    t_start: float = 0.0
    t_end: float = 0.0

    @property
    def headroom(self) -> float | None:
        """The limit's share still free of working set at the end."""
        if self.limit is None or self.ws_end is None or self.limit <= 0:
            return None
        return (self.limit - self.ws_end) / self.limit

    @property
    def ws_delta(self) -> float | None:
        if self.ws_start is None or self.ws_end is None:
            return None
        return self.ws_end - self.ws_start

    def name(self) -> str:
        if self.container:
            return f"container {self.container['id'][:12]} ({self.container['runtime']})"
        return f"cgroup {self.cgroup}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["headroom"] = self.headroom
        return out

    def figures(self) -> dict[str, float | None]:
        return {
            "cgroup.usage_bytes.end": self.usage_end,
            "cgroup.working_set_bytes.end": self.ws_end,
            "cgroup.working_set_delta_bytes": self.ws_delta,
            "cgroup.working_set_rate_bytes_per_s": self.ws_rate,
            "cgroup.limit_bytes": self.limit,
            "cgroup.headroom_fraction.end": self.headroom,
            "cgroup.time_to_limit_s": self.time_to_limit,
            "cgroup.oom_kills": self.oom_kills,
            "cgroup.limit_hits": self.limit_hits,
            "cgroup.pressure_some_fraction.max": self.pressure_some_max,
        }


#: The figures of ``ContainerView.figures``: published as null when there is no view.
FIGURES = ("cgroup.usage_bytes.end", "cgroup.working_set_bytes.end",
           "cgroup.working_set_delta_bytes", "cgroup.working_set_rate_bytes_per_s",
           "cgroup.limit_bytes", "cgroup.headroom_fraction.end", "cgroup.time_to_limit_s",
           "cgroup.oom_kills", "cgroup.limit_hits", "cgroup.pressure_some_fraction.max")


def _level(y: np.ndarray, head: bool) -> float | None:
    y = y[np.isfinite(y)]
    if len(y) == 0:
        return None
    k = edge_count(len(y))
    return float(np.median(y[:k] if head else y[-k:]))


def _last(y: np.ndarray | None) -> float | None:
    if y is None:
        return None
    y = y[np.isfinite(y)]
    return float(y[-1]) if len(y) else None


def _rise(y: np.ndarray | None, before: float | None = None) -> float:
    """How much a cumulative counter rose over the window (from the value before it)."""
    if y is None:
        return 0.0
    y = y[np.isfinite(y)]
    if len(y) == 0:
        return 0.0
    first = before if before is not None else float(y[0])
    return max(float(y[-1]) - first, 0.0)


def container_view(rec: Recording, t_start: float, t_end: float) -> ContainerView | None:
    """The view over ``[t_start, t_end]``, or None when there is no container to speak of."""
    path, how = _target_cgroup(rec, t_end)
    if path is None or path == "/":
        return None
    s = read_cgroup(rec, path)
    if s is None or s.get("usage") is None:
        return None
    ref = container_in_path(path)
    container = {"id": ref.id, "runtime": ref.runtime} if ref is not None else None
    in_win = (s.t >= t_start) & (s.t <= t_end)
    if in_win.sum() < 2:
        return None
    before = s.t < t_start

    def win(y: np.ndarray | None) -> np.ndarray | None:
        return None if y is None else y[in_win]

    def prior(y: np.ndarray | None) -> float | None:
        if y is None or not before.any():
            return None
        return _last(y[before])

    t = s.t[in_win]
    usage = win(s.get("usage"))
    ws = win(s.working_set())
    limit = _last(win(s.get("effective_limit")))
    own = _last(win(s.get("limit")))
    if limit is None:
        limit = own
    if container is None and limit is None and path not in _selected_cgroups(rec):
        return None
    rate = fit_end = ttl = None
    if ws is not None:
        half = t >= (t[0] + t[-1]) / 2  # the last half of the window's samples
        th, yh = t[half], ws[half]
        ok = np.isfinite(yh)
        if ok.sum() >= 2:
            rate = theil_sen(th[ok], yh[ok])
            if rate is not None:
                fit_end = float(np.median(yh[ok] - rate * th[ok])) + rate * float(t[-1])
        if limit is not None and rate is not None and fit_end is not None and rate > 0:
            ttl = max(0.0, (limit - fit_end) / rate)
    oom = win(s.get("events.oom_kill"))
    oom_kills = _rise(oom, prior(s.get("events.oom_kill")))
    oom_t = None
    if oom is not None and oom_kills > 0:
        base = prior(s.get("events.oom_kill"))
        base = base if base is not None else float(np.nanmin(oom))
        rose = np.nonzero(np.nan_to_num(oom, nan=base) > base)[0]
        oom_t = float(t[rose[0]]) if len(rose) else None
    some = win(s.get("pressure.some_avg10"))
    full = win(s.get("pressure.full_avg10"))
    comps: dict[str, float] = {}
    for name in ("anon", "active_file", "inactive_file", "shmem"):
        y = win(s.get(*COMPONENTS[name]))
        if y is not None:
            a, b = _level(y, True), _level(y, False)
            if a is not None and b is not None:
                comps[name] = b - a
    kern = win(s.kernel())
    if kern is not None:
        a, b = _level(kern, True), _level(kern, False)
        if a is not None and b is not None:
            comps["kernel"] = b - a
    return ContainerView(
        cgroup=path, version=s.version, chosen_by=how, container=container, limit=limit,
        own_limit=own, usage_start=_level(usage, True) if usage is not None else None,
        usage_end=_level(usage, False) if usage is not None else None,
        ws_start=_level(ws, True) if ws is not None else None,
        ws_end=_level(ws, False) if ws is not None else None,
        ws_rate=rate, ws_fit_end=fit_end, time_to_limit=ttl,
        peak=_last(win(s.get("peak"))), oom_kills=oom_kills,
        oom_kills_total=_last(oom) or 0.0, oom_kill_t=oom_t,
        limit_hits=_rise(win(s.get("events.max")), prior(s.get("events.max"))),
        pressure_some_max=float(np.nanmax(some)) / 1e4 if some is not None
        and np.isfinite(some).any() else None,
        pressure_full_max=float(np.nanmax(full)) / 1e4 if full is not None
        and np.isfinite(full).any() else None,
        components=comps, t_start=t_start, t_end=t_end,
    )


# --- findings ----------------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.0f} %"


def _split(v: ContainerView) -> str:
    parts = sorted(((k, d) for k, d in v.components.items() if abs(d) >= 1 << 20),
                   key=lambda kd: -abs(kd[1]))
    return ", ".join(f"{_LABEL.get(k, k)} {format_bytes(d, signed=True)}" for k, d in parts)


def findings(v: ContainerView, process_findings: list[Finding] | None = None,
             rss_delta: float | None = None, rss_start: float | None = None,
             horizon: float = LIMIT_HORIZON_S) -> list[Finding]:
    """``cgroup-limit`` and ``working-set`` (see the module docstring)."""
    out: list[Finding] = []
    ids = {f.id for f in process_findings or []}
    name = v.name()
    evidence = {k: float(x) for k, x in v.figures().items() if x is not None and
                math.isfinite(x) and not k.endswith("delta_bytes")}  # (working-set has it)
    series = ["cgroup.usage", "cgroup.inactive_file", "cgroup.effective_limit"]
    if v.limit is not None:
        lim = format_bytes(v.limit)
        state = (f"working set {format_bytes(v.ws_end)} ({_pct(1 - (v.headroom or 0))} of "
                 f"its {lim} limit), usage {format_bytes(v.usage_end)}")
        if v.oom_kills > 0:
            when = f" at {format_duration(v.oom_kill_t)}" if v.oom_kill_t is not None else ""
            n = int(v.oom_kills)
            out.append(Finding(
                "cgroup-limit", "critical",
                f"the OOM killer killed {n} process{'es' if n != 1 else ''} in {name}{when}: "
                f"it reached its {lim} limit (memory.events oom_kill; peak "
                f"{format_bytes(v.peak)}); {state}",
                t_start=v.oom_kill_t, t_end=v.t_end, evidence=evidence, series=series))
        elif v.time_to_limit is not None and v.time_to_limit <= horizon:
            out.append(Finding(
                "cgroup-limit", "critical",
                f"at {format_bytes(v.ws_rate, signed=True)}/s {name} reaches its {lim} limit "
                f"in {format_duration(v.time_to_limit)}: {state}",
                t_start=v.t_start, t_end=v.t_end, evidence=evidence, series=series))
        elif v.headroom is not None and v.headroom < HEADROOM_WARN:
            out.append(Finding(
                "cgroup-limit", "warning",
                f"{name} has {_pct(v.headroom)} of its {lim} limit left: {state}",
                t_start=v.t_start, t_end=v.t_end, evidence=evidence, series=series))
        else:
            growing = (f"; at {format_bytes(v.ws_rate, signed=True)}/s it reaches the limit "
                       f"in {format_duration(v.time_to_limit)}"
                       if v.time_to_limit is not None else "")
            out.append(Finding(
                "cgroup-limit", "info", f"{name}: {state}{growing}",
                t_start=v.t_start, t_end=v.t_end, evidence=evidence, series=series))
    d_ws = v.ws_delta
    if d_ws is not None and d_ws >= WS_MIN_BYTES:
        flat = rss_delta is not None and abs(rss_delta) < RSS_FLAT_SHARE * d_ws
        why = _split(v)
        anon = v.components.get("anon", 0.0)
        if anon >= 0.5 * d_ws:
            if "cow-unsharing" in ids:
                why += " (copy-on-write unsharing: see cow-unsharing)"
            elif "rss-growth" in ids:
                why += " (the processes' own growth: see rss-growth)"
        rss = ""
        if rss_delta is not None:
            share = f", {rss_delta / rss_start * 100:+.1f} %" if rss_start else ""
            moved = format_bytes(rss_delta, signed=True)
            rss = (f" while the RSS of its processes stayed flat ({moved}{share})" if flat
                   else f"; the RSS of its processes moved {moved}")
        out.append(Finding(
            "working-set", "warning" if flat else "info",
            f"the working set of {name} rose {format_bytes(d_ws, signed=True)} "
            f"(usage - inactive file, as kubelet reports it){rss}: {why or 'no component'}",
            explained_bytes=d_ws, t_start=v.t_start, t_end=v.t_end,
            evidence={"cgroup.working_set_delta_bytes": d_ws, **evidence,
                      **{f"component.{k}_delta_bytes": float(x)
                                     for k, x in v.components.items()}},
            series=series))
    if v.pressure_some_max is not None and v.pressure_some_max >= 0.10 and out:
        out[0].statement += (f"; memory pressure: some tasks stalled up to "
                             f"{_pct(v.pressure_some_max)} of the time (PSI avg10)")
    return out
