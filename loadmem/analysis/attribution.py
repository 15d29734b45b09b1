"""Where memory was unshared or grew: two per-mapping snapshots of the same processes,
compared mapping by mapping, summed by the kind of memory.

For a window, the recording's ``mappings`` table (``docs/recording-format.md``) gives a
snapshot at (or just before) its start and one at (or just after) its end. For every process
read in both (the same ``(pid, start_time)``), each mapping of the end snapshot is matched to
the start snapshot's by its identity ``(address, size, perms, offset, path)``:

- **matched**: ``grown = max(ΔRss, 0)`` (new resident pages; private ones add their whole
  size to PSS) and ``unshared = ΔPss - grown``: the PSS the mapping gained without gaining
  pages, i.e. pages it stopped sharing. Summed over every process of a group this counts
  each copied page once: the worker that copied gains ``(N-1)/N`` of it, each of the
  ``N-1`` others that still map the original ``1/N - 1/(N-1)``... which adds up to one page.
- **new** (present at the end only, or empty at the start): ``grown = Pss``; never
  unshared.
- **gone** (present at the start only): ``released = Pss`` at the start.

Aggregated rows (a process with more than 1000 mappings) are matched by ``(kind, file)``.
The sums are kept per *place*: the kind (``loadmem.procfs.mapkind``), and for ``data`` the
file and section it belongs to (``libpython3.11.so.1.0 .data``, ``... .bss``). Each place's
share of the unsharing is its unshared bytes over the positive unshared bytes of the group
(places that shed PSS count for nothing, not against).

Processes read in one snapshot only (born or gone in between) are counted apart: their
memory is a new or an exited process, not unsharing. The runtime of each group is detected
from the processes' executables, mapped files and command lines
(``loadmem.analysis.runtime``), and its documented remedy taken from the catalogue
(``loadmem.analysis.remedies``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from loadmem.analysis.model import Finding
from loadmem.analysis.remedies import Remedy, remedy_for
from loadmem.analysis.runtime import CPYTHON, JVM, NODE, PHP, RUBY, Runtime, detect_runtime
from loadmem.procfs.mapkind import KINDS

Key = tuple[int, int]  # (pid, start_time)
PlaceKey = tuple[str, str | None, str | None]  # kind, file, section

#: What a runtime keeps in its anonymous mappings, for the place's label.
ANON_HINT = {
    CPYTHON: "CPython object arenas",
    RUBY: "Ruby heap pages",
    NODE: "V8 heap",
    JVM: "Java heap",
    PHP: "PHP's memory manager",
}
#: A window end is matched to a snapshot that started within this much of it (seconds, or
#: this share of the window, whichever is more).
SLACK_S = 2.0
SLACK_SHARE = 0.05

_ID = ("address", "size", "perms", "offset", "path")
_COLUMNS = ("snapshot", "reason", "t", "pid", "start_time", *_ID, "kind", "file", "mappings",
            "rss", "pss", "swap_pss")


@dataclass
class Round:
    """One snapshot as the recording holds it."""

    number: int
    reason: str
    t_first: float  # the first and last read of it
    t_last: float
    processes: int  # read without error

    @property
    def span_s(self) -> float:
        return self.t_last - self.t_first


@dataclass
class Place:
    """One kind of memory (one file, for ``data``): what it did over the window."""

    kind: str
    file: str | None
    label: str
    section: str | None = None  # ".data" or ".bss" for kind data
    unshared: float = 0.0  # bytes of PSS gained without new pages
    grown: float = 0.0  # new pages (PSS), in mappings present at both ends and new ones
    new_mappings: float = 0.0  # of which in mappings present at the end only
    released: float = 0.0  # PSS of mappings gone by the end

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "file": self.file, "section": self.section,
                "label": self.label,
                "unshared_bytes": self.unshared, "grown_bytes": self.grown,
                "new_mappings_bytes": self.new_mappings, "released_bytes": self.released}


@dataclass
class GroupAttribution:
    """A process group (``master``, ``worker``, ``process``, or ``all``)."""

    group: str
    processes: int = 0
    places: list[Place] = field(default_factory=list)  # most unshared first
    runtime: Runtime | None = None
    runtimes: dict[str, int] = field(default_factory=dict)  # display -> processes
    remedy: Remedy | None = None

    @property
    def unshared(self) -> float:
        return sum(p.unshared for p in self.places)

    @property
    def grown(self) -> float:
        return sum(p.grown for p in self.places)

    @property
    def released(self) -> float:
        return sum(p.released for p in self.places)

    def shares(self) -> list[tuple[Place, float]]:
        """Each place with its share of the unsharing (places that unshared nothing or shed
        PSS are left out)."""
        positive = [p for p in self.places if p.unshared > 0]
        total = sum(p.unshared for p in positive)
        if total <= 0 or self.unshared <= 0:  # nothing was unshared on balance
            return []
        return [(p, p.unshared / total) for p in sorted(positive, key=lambda p: -p.unshared)]

    def growth_shares(self) -> list[tuple[Place, float]]:
        positive = [p for p in self.places if p.grown > 0]
        total = sum(p.grown for p in positive)
        if total <= 0:
            return []
        return [(p, p.grown / total) for p in sorted(positive, key=lambda p: -p.grown)]

    def sentence(self, limit: int = 3, min_share: float = 0.005) -> str:
        """``96 % in anonymous mappings (CPython object arenas), 3 % in [heap], 1 % in
        libpython3.11.so.1.0 .data``; empty when nothing was unshared."""
        return _share_text(self.shares(), limit, min_share)

    def growth_sentence(self, limit: int = 3, min_share: float = 0.005) -> str:
        return _share_text(self.growth_shares(), limit, min_share)

    def _places_dict(self) -> list[dict[str, Any]]:
        """Every place, most unshared first, with its share of the unsharing (None when it
        has none: it unshared nothing, or the group nothing on balance)."""
        share = {id(p): s for p, s in self.shares()}
        return [{**p.to_dict(), "unshared_share": share.get(id(p))}
                for p in sorted(self.places, key=lambda p: (-share.get(id(p), 0.0),
                                                            -p.unshared, -p.grown))]

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group, "processes": self.processes,
            "unshared_bytes": self.unshared, "grown_bytes": self.grown,
            "released_bytes": self.released,
            "places": self._places_dict(),
            "sentence": self.sentence(), "growth_sentence": self.growth_sentence(),
            "runtime": None if self.runtime is None else {
                "name": self.runtime.name, "version": self.runtime.version,
                "display": self.runtime.display, "server": self.runtime.server,
                "evidence": self.runtime.evidence},
            "runtimes": dict(self.runtimes),
            "remedy": None if self.remedy is None else self.remedy.to_dict(),
        }


@dataclass
class Attribution:
    """Where memory went between two snapshots, per group and in total."""

    start: Round
    end: Round
    groups: list[GroupAttribution]  # master, worker, process (those present)
    total: GroupAttribution
    compared: int  # processes read in both snapshots
    born: list[Key] = field(default_factory=list)  # read at the end only
    gone: list[Key] = field(default_factory=list)  # read at the start only
    unread: list[tuple[Key, str]] = field(default_factory=list)  # (process, error)
    notes: list[str] = field(default_factory=list)

    def group(self, name: str) -> GroupAttribution | None:
        return next((g for g in self.groups if g.group == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": vars(self.start), "end": vars(self.end), "compared": self.compared,
            "born": len(self.born), "gone": len(self.gone),
            "unread": [{"pid": k[0], "start_time": k[1], "error": e} for k, e in self.unread],
            "total": self.total.to_dict(), "groups": [g.to_dict() for g in self.groups],
            "notes": list(self.notes),
        }


def _share_text(shares: list[tuple[Place, float]], limit: int, min_share: float) -> str:
    shown = [(p, s) for p, s in shares if s >= min_share][:limit]
    parts = [f"{_pct(s)} in {p.label}" for p, s in shown]
    rest = 1.0 - sum(s for _, s in shown)
    if shares and rest >= min_share and len(shares) > len(shown):
        parts.append(f"{_pct(rest)} elsewhere")
    return ", ".join(parts)


def _pct(share: float) -> str:
    return f"{share * 100:.0f} %" if share >= 0.01 else "<1 %"


def _basename(path: str | None) -> str:
    if not path:
        return ""
    return path.removesuffix(" (deleted)").rsplit("/", 1)[-1]


def place_label(kind: str, file: str | None, runtime: Runtime | None = None,
                section: str | None = None) -> str:
    """A place as reports name it: ``anonymous mappings (CPython object arenas)``,
    ``[heap]``, ``libpython3.11.so.1.0 .data``, ``stacks``..."""
    if kind == "anon":
        hint = ANON_HINT.get(runtime.name) if runtime is not None else None
        return f"anonymous mappings ({hint})" if hint else "anonymous mappings"
    if kind == "heap":
        return "[heap]"
    if kind == "data":
        return f"{_basename(file)} {section or '.data'}"
    if kind == "stack":
        return "stacks"
    return KINDS.get(kind, kind)


# --- choosing the two snapshots -----------------------------------------------------------------
def rounds_of(snapshots: pa.Table) -> list[Round]:
    """The snapshots a recording holds, in order."""
    if snapshots.num_rows == 0:
        return []
    rows = snapshots.select(["snapshot", "reason", "t", "error"]).to_pylist()
    by: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["snapshot"], []).append(r)
    out = []
    for n in sorted(by):
        rs = by[n]
        ts = [r["t"] for r in rs]
        out.append(Round(n, rs[0]["reason"] or "", min(ts), max(ts),
                         sum(1 for r in rs if r["error"] is None)))
    return out


def _slack(t0: float, t1: float) -> float:
    """How far from a window's end a snapshot may start and still be taken for it: 2 s or
    5 % of the window, at most half of it."""
    width = max(t1 - t0, 0.0)
    return min(max(SLACK_S, SLACK_SHARE * width), width / 2)


def choose_rounds(rounds: list[Round], t0: float, t1: float) -> tuple[Round, Round] | None:
    """The snapshot for the window's start (the last one begun by then, give or take a
    little slack; else the first) and for its end (the first one begun at or after the end
    minus the slack; else the last); None when there are not two distinct ones."""
    usable = [r for r in rounds if r.processes > 0]
    if len(usable) < 2:
        return None
    slack = _slack(t0, t1)
    before = [r for r in usable if r.t_first <= t0 + slack]
    start = before[-1] if before else usable[0]
    after = [r for r in usable if r.t_first >= t1 - slack and r.number != start.number
             and r.t_first > start.t_first]
    end = after[0] if after else usable[-1]
    if end.number == start.number or end.t_first <= start.t_first:
        return None
    return start, end


# --- the comparison --------------------------------------------------------------------------
def _rows_of(mappings: pa.Table, numbers: tuple[int, int]) -> list[dict[str, Any]]:
    cols = [c for c in _COLUMNS if c in mappings.column_names]
    sel = mappings.filter(pc.is_in(mappings.column("snapshot"), pa.array(list(numbers),
                                                                         pa.int32())))
    return sel.select(cols).to_pylist()


def _identity(r: dict[str, Any]) -> tuple[Any, ...]:
    if r.get("address") is None:  # an aggregated row
        return ("aggregated", r.get("kind"), r.get("file"))
    return tuple(r.get(c) for c in _ID)


def _moved(ident: tuple[Any, ...]) -> tuple[Any, ...]:
    """An identity without the size (aggregated rows keep theirs)."""
    return ident if ident[0] == "aggregated" else (ident[0], *ident[2:])


def attribute(mappings: pa.Table, snapshots: pa.Table, t0: float, t1: float,
              groups: Mapping[Key, str] | None = None,
              cmdlines: Mapping[Key, str | None] | None = None) -> Attribution | None:
    """Compare the snapshots at the window ``[t0, t1]``'s ends (see the module docstring);
    None when the recording has not two snapshots to compare."""
    rounds = rounds_of(snapshots)
    pair = choose_rounds(rounds, t0, t1)
    if pair is None:
        return None
    start, end = pair
    snap_rows = [r for r in snapshots.to_pylist() if r["snapshot"] in (start.number, end.number)]
    groups = groups or groups_of(snap_rows)
    cmdlines = cmdlines or {(r["pid"], r["start_time"]): r.get("cmdline") for r in snap_rows}
    read: dict[int, set[Key]] = {start.number: set(), end.number: set()}
    unread: list[tuple[Key, str]] = []
    exe: dict[Key, str | None] = {}
    for r in snap_rows:
        k = (r["pid"], r["start_time"])
        if r["error"] is None:
            read[r["snapshot"]].add(k)
            exe[k] = r.get("exe") or exe.get(k)
        elif r["snapshot"] == end.number:
            unread.append((k, r["error"]))
    both = read[start.number] & read[end.number]
    rows = _rows_of(mappings, (start.number, end.number))
    a: dict[Key, dict[tuple[Any, ...], dict[str, Any]]] = {}
    b: dict[Key, dict[tuple[Any, ...], dict[str, Any]]] = {}
    files: dict[Key, set[str]] = {}
    for r in rows:
        k = (r["pid"], r["start_time"])
        if k not in both:
            continue
        side = a if r["snapshot"] == start.number else b
        side.setdefault(k, {})[_identity(r)] = r
        if r["snapshot"] == end.number:
            fs = files.setdefault(k, set())
            if r.get("file"):
                fs.add(r["file"])
            if r.get("path", "").startswith("/"):
                fs.add(r["path"])
    runtimes = {k: detect_runtime(exe.get(k), files.get(k, ()), cmdlines.get(k))
                for k in both}
    per_group: dict[str, dict[PlaceKey, Place]] = {}
    members: dict[str, list[Key]] = {}
    for k in sorted(both):
        g = groups.get(k, "process")
        members.setdefault(g, []).append(k)
        places = per_group.setdefault(g, {})
        start_rows, end_rows = a.get(k, {}), b.get(k, {})
        # a mapping that grew or shrank in place ([heap] after brk, a stack) keeps its
        # start address: matched on everything but its size
        resized = {_moved(i): r for i, r in start_rows.items() if i not in end_rows}
        matched: set[tuple[Any, ...]] = set()
        for ident, r in end_rows.items():
            p = _place(places, r)
            old = start_rows.get(ident)
            if old is None and ident not in start_rows:
                old = resized.pop(_moved(ident), None)
                if old is not None:
                    matched.add(_identity(old))
            else:
                matched.add(ident)
            if old is None:
                p.grown += r["pss"] or 0
                p.new_mappings += r["pss"] or 0
                continue
            d_rss = (r["rss"] or 0) - (old["rss"] or 0)
            d_pss = (r["pss"] or 0) - (old["pss"] or 0)
            grown = max(d_rss, 0)
            p.grown += grown
            p.unshared += d_pss - grown
        for ident, r in start_rows.items():
            if ident not in matched:
                _place(places, r).released += r["pss"] or 0
    out_groups = []
    total = GroupAttribution("all", processes=len(both))
    total_places: dict[PlaceKey, Place] = {}
    for g in sorted(per_group, key=_group_order):
        ga = GroupAttribution(g, processes=len(members[g]))
        _runtime_of(ga, [runtimes[k] for k in members[g]])
        for key, p in per_group[g].items():
            ga.places.append(p)
            t = total_places.setdefault(key, Place(p.kind, p.file, p.label, p.section))
            t.unshared += p.unshared
            t.grown += p.grown
            t.new_mappings += p.new_mappings
            t.released += p.released
        ga.places.sort(key=lambda p: -p.unshared)
        out_groups.append(ga)
    total.places = sorted(total_places.values(), key=lambda p: -p.unshared)
    _runtime_of(total, list(runtimes.values()))
    for ga in [*out_groups, total]:
        for p in ga.places:
            p.label = place_label(p.kind, p.file, ga.runtime, p.section)
    notes = []
    for r, at in ((start, "start"), (end, "end")):
        if r.span_s > 1.0:
            notes.append(f"the {at} snapshot ({r.reason}) read its processes over "
                         f"{r.span_s:.1f}s (the CPU budget spreads the reads)")
    if start.t_first > t0 + _slack(t0, t1):
        notes.append(f"the first snapshot was taken {start.t_first - t0:.1f}s into the window")
    if end.t_first < t1 - _slack(t0, t1):
        notes.append(f"the last snapshot was taken {t1 - end.t_first:.1f}s before the "
                     "window's end")
    return Attribution(
        start=start, end=end, groups=out_groups, total=total, compared=len(both),
        born=sorted(read[end.number] - read[start.number]),
        gone=sorted(read[start.number] - read[end.number]), unread=unread, notes=notes,
    )


def _place(places: dict[PlaceKey, Place], r: dict[str, Any]) -> Place:
    kind = r.get("kind") or "other"
    file = section = None
    if kind == "data":
        file = r.get("file")
        # the file's own mapping is its .data; the anonymous one after it, its .bss
        section = ".data" if r.get("path") or r.get("address") is None else ".bss"
    key = (kind, file, section)
    p = places.get(key)
    if p is None:
        p = places[key] = Place(kind, file, kind, section)
    return p


def _group_order(g: str) -> tuple[int, str]:
    order = {"master": 0, "worker": 1, "process": 2}
    return (order.get(g, 3), g)


def _runtime_of(ga: GroupAttribution, runtimes: list[Runtime]) -> None:
    """The group's runtime: the one most of its processes run (ties: the first seen)."""
    if not runtimes:
        return
    counts = Counter(r.display for r in runtimes)
    ga.runtimes = dict(counts.most_common())
    top = counts.most_common(1)[0][0]
    ga.runtime = next(r for r in runtimes if r.display == top)
    ga.remedy = remedy_for(ga.runtime)


def groups_of(snapshot_rows: Iterable[Mapping[str, Any]]) -> dict[Key, str]:
    """master | worker | process, as the series layer names them: a descendant of a selected
    process (depth >= 1) is a ``worker``, a selected process with such descendants the
    ``master``, anything else a ``process``."""
    rows = {(r["pid"], r["start_time"]): r for r in snapshot_rows}
    parents = {r.get("ppid") for r in rows.values() if (r.get("depth") or 0) >= 1}
    return {k: ("worker" if (r.get("depth") or 0) >= 1 else
                "master" if k[0] in parents else "process") for k, r in rows.items()}


def attribute_recording(rec: Any, t0: float, t1: float,
                        groups: Mapping[Key, str] | None = None) -> Attribution | None:
    """``attribute`` on an open recording (``loadmem.recording.Recording``); groups from the
    snapshots' depth and parent unless given. Reads only the two small tables."""
    if not rec.has("mappings") or not rec.has("snapshots"):
        return None
    return attribute(rec.table("mappings"), rec.table("snapshots"), t0, t1, groups)


#: The figures an attribution publishes (catalogue: ``figures.WHERE``).
FIGURES = ("where.unshared_bytes", "where.unshared_anon_bytes", "where.unshared_heap_bytes",
           "where.unshared_data_bytes", "where.unshared_stack_bytes",
           "where.unshared_anon_ratio", "where.grown_bytes")


def figures(att: Attribution | None) -> dict[str, float | None]:
    """The ``where.*`` figures of an attribution (all null without one)."""
    if att is None:
        return dict.fromkeys(FIGURES)
    total = att.total
    by_kind: dict[str, float] = {}
    for p in total.places:
        by_kind[p.kind] = by_kind.get(p.kind, 0.0) + p.unshared
    shares = {p.kind: 0.0 for p, _ in total.shares()}
    for p, share in total.shares():
        shares[p.kind] += share
    return {
        "where.unshared_bytes": total.unshared,
        **{f"where.unshared_{k}_bytes": by_kind.get(k, 0.0)
           for k in ("anon", "heap", "data", "stack")},
        "where.unshared_anon_ratio": shares.get("anon", 0.0) if total.shares() else None,
        "where.grown_bytes": total.grown,
    }


def unsharing_group(att: Attribution) -> GroupAttribution:
    """The group that unshared the most (its runtime's remedy is the one to name), else the
    total."""
    groups = [g for g in att.groups if g.unshared > 0]
    return max(groups, key=lambda g: g.unshared) if groups else att.total


def annotate_cow(finding: Finding, att: Attribution) -> None:
    """Add where the unsharing was, the runtime and its documented remedy (with its version
    condition and source) to the copy-on-write finding's statement and evidence."""
    where = att.total.sentence()
    g = unsharing_group(att)
    parts = []
    if where:
        parts.append(f"Where (per-mapping snapshots): {where}.")
    if g.remedy is not None:
        line = g.remedy.line.rstrip(".")
        see = f" See {', '.join(g.remedy.sources)}" if g.remedy.sources else ""
        parts.append(f"{line}.{see}".rstrip() + ("." if see else ""))
    if parts:
        finding.statement = f"{finding.statement.rstrip()} {' '.join(parts)}"
    finding.evidence["where.unshared_bytes"] = att.total.unshared
    finding.evidence["where"] = where or None
    if g.runtime is not None:
        finding.evidence["runtime"] = g.runtime.display
    if g.remedy is not None:
        finding.evidence["remedy"] = g.remedy.line
        finding.evidence["remedy_applies"] = g.remedy.applies
        finding.evidence["remedy_sources"] = list(g.remedy.sources)


def annotate_growth(finding: Finding, att: Attribution) -> None:
    """Add where the memory grew (new pages, per kind) to the RSS-growth finding."""
    where = att.total.growth_sentence()
    if where and att.total.grown > 0:
        finding.statement = (f"{finding.statement.rstrip()} Where it grew (per-mapping "
                             f"snapshots): {where}.")
        finding.evidence["where.grown_bytes"] = att.total.grown
        finding.evidence["where_grown"] = where
