"""List recordings cheaply: meta.json plus a few columns, never a full analysis.

``loadmem ls`` must stay instant on a directory of long recordings, so each entry is built
from ``meta.json`` (label, start, target, status), the system table's ``t``, ``MemTotal``
and ``MemAvailable`` columns, the phase events and the small ``requests`` table; the
processes table, by far the largest, is never read (only its row count, from the file
footer). Everything is read through ``open_recording``, and the used-memory change is the
analysis' own figure (``window.used_delta_bytes``): the same window (``load+observe`` for a
run), the same definition of used memory and the same levels at its ends
(``loadmem.analysis.series`` and ``trend.levels``), so ``ls`` and ``analyze`` agree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from loadmem.analysis.series import index_range, read_system, system_columns_for
from loadmem.analysis.trend import levels
from loadmem.analysis.window import resolve
from loadmem.errors import LoadmemError
from loadmem.recording.reader import Recording, open_recording
from loadmem.recording.validate import read_meta
from loadmem.recording.writer import META_FILE

TABLE_NAMES = ("system", "processes", "events", "requests", "recorder", "cgroup")


@dataclass
class RecordingEntry:
    path: Path
    label: str | None
    started: str | None
    target: str
    status: str
    duration_s: float | None
    used_start_bytes: int | None
    used_delta_bytes: int | None
    requests: int | None
    failures: int | None
    process_rows: int
    schema_version: int | None
    problem: str | None = None  # why the entry is incomplete

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["path"] = str(self.path)
        return d


def _target(meta: dict[str, Any]) -> str:
    target = meta.get("target")
    if isinstance(target, dict):
        target = target.get("url") or target.get("name") or json.dumps(target, sort_keys=True)
    if target:
        return str(target)
    sel = meta.get("selection")
    if isinstance(sel, dict):
        parts = [f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
                 for k, v in sorted(sel.items()) if v not in (None, [], "", False)]
        if parts:
            return " ".join(parts)
    return "-"


def _used_change(rec: Recording) -> tuple[float | None, int | None, int | None]:
    """(duration, used at the window's start, its change over the window): the analysis'
    definitions, from the system table's three columns and the phase events."""
    system = read_system(rec, columns=system_columns_for(("used",)))
    if len(system) == 0:
        return None, None, None
    duration = float(system.t[-1])
    if len(system) < 2:
        return duration, None, None
    win = resolve(rec.phases(), float(system.t[0]), float(system.t[-1])).main
    start, end = levels(system.get("used"), index_range(system, win.t_start, win.t_end))
    if start is None or end is None:
        return duration, None, None
    return duration, int(start), int(end - start)


def describe(path: Path) -> RecordingEntry:
    """One entry; problems (unreadable meta, no data) are reported in ``problem``, and a
    recording that the validation edge refuses is listed with status ``damaged`` and what
    can still be read of it."""
    meta, notes = read_meta(path)
    problem = "no meta.json" if not (path / META_FILE).exists() else (notes[0] if notes
                                                                       else None)
    damaged = False
    try:  # the same checks as every other command (footers only: cheap)
        rec = open_recording(path)
        problem = problem or next((n for n in rec.notes if n.startswith("skipped")), None)
    except LoadmemError as e:
        damaged = True
        problem = problem or e.message.replace(f"{path}/", "").replace(f"{path}: ", "")
        try:
            rec = open_recording(path, strict=False)
        except LoadmemError:
            return RecordingEntry(path=path, label=None, started=None, target=_target(meta),
                                  status="damaged", duration_s=None, used_start_bytes=None,
                                  used_delta_bytes=None, requests=None, failures=None,
                                  process_rows=0, schema_version=meta.get("schema_version"),
                                  problem=problem)
    try:
        duration, used_start, used_delta = _used_change(rec)
    except LoadmemError as e:
        duration = used_start = used_delta = None
        problem = problem or e.message
    if duration is None and problem is None:
        problem = "no system samples"
    requests = failures = None
    req = rec.select("requests", ["name", "requests", "failures"])
    if req.num_rows and "name" in req.column_names:
        req = req.filter(pc.fill_null(pc.equal(req.column("name").cast(pa.string()),
                                               "Aggregated"), False))
        requests = int(pc.sum(req.column("requests")).as_py() or 0)
        failures = int(pc.sum(req.column("failures")).as_py() or 0)
    started = meta.get("start_iso") or meta.get("started")
    return RecordingEntry(
        path=path,
        label=rec.label,
        started=started,
        target=_target(meta),
        status="damaged" if damaged else str(meta.get("status", "unknown")),
        duration_s=duration,
        used_start_bytes=used_start,
        used_delta_bytes=used_delta,
        requests=requests,
        failures=failures,
        process_rows=rec.num_rows("processes"),
        schema_version=meta.get("schema_version"),
        problem=problem,
    )


def is_recording(path: Path) -> bool:
    return path.is_dir() and (
        (path / META_FILE).exists()
        or any((path / f"{t}.parquet").is_file() or (path / t).is_dir() for t in TABLE_NAMES)
    )


def list_recordings(root: str | Path) -> list[RecordingEntry]:
    """Entries for ``root`` itself if it is a recording, else for its recordings (one level
    deep, then two: ``recordings/<project>/<rec>``), oldest first."""
    root = Path(root)
    if not root.exists():
        raise LoadmemError(f"no such directory: {root}", "give the directory holding recordings")
    if not root.is_dir():
        raise LoadmemError(f"{root} is not a directory")
    if is_recording(root):
        candidates = [root]
    else:
        candidates = []
        for child in sorted(root.iterdir()):
            if is_recording(child):
                candidates.append(child)
            elif child.is_dir() and not child.name.startswith("."):
                candidates += [g for g in sorted(child.iterdir()) if is_recording(g)]
    entries = [describe(c) for c in candidates]
    return sorted(entries, key=lambda e: (e.started or "", str(e.path)))
