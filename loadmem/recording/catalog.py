"""List recordings cheaply: meta.json plus a few columns, never a full analysis.

``loadmem ls`` must stay instant on a directory of long recordings, so each entry is built
from ``meta.json`` (label, start, target, status), the system table's ``t``, ``MemTotal``
and ``MemAvailable`` columns (duration, used memory at the start and the end) and the small
``requests`` table (request count, failures). Parquet lets us read just those columns;
the processes table, by far the largest, is never read (only its row count, from the
file footer).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from loadmem.errors import LoadmemError
from loadmem.recording.reader import open_recording
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


def _files(rec: Path, table: str) -> list[Path]:
    merged = rec / f"{table}.parquet"
    files = [merged] if merged.exists() else []
    if (rec / table).is_dir():
        files += sorted((rec / table).glob("*.parquet"))
    return files


def _read_columns(rec: Path, table: str, columns: list[str]) -> pa.Table | None:
    parts = []
    for f in _files(rec, table):
        try:
            names = pq.read_schema(f).names
            if all(c in names for c in columns):
                parts.append(pq.read_table(f, columns=columns))
        except (OSError, pa.ArrowException):
            continue
    if not parts:
        return None
    return pa.concat_tables(parts, promote_options="permissive")


def _rows(rec: Path, table: str) -> int:
    total = 0
    for f in _files(rec, table):
        try:
            total += pq.ParquetFile(f).metadata.num_rows
        except (OSError, pa.ArrowException):
            continue
    return total


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


def describe(rec: Path) -> RecordingEntry:
    """One entry; problems (unreadable meta, no data) are reported in ``problem``, and a
    recording that the validation edge refuses is listed with status ``damaged``."""
    meta, notes = read_meta(rec)
    problem = "no meta.json" if not (rec / META_FILE).exists() else (notes[0] if notes else None)
    damaged = False
    try:  # the same checks as every other command (footers only: cheap)
        opened = open_recording(rec)
        problem = problem or next((n for n in opened.notes if n.startswith("skipped")), None)
    except LoadmemError as e:
        damaged = True
        problem = problem or e.message.replace(f"{rec}/", "").replace(f"{rec}: ", "")
    duration = used_start = used_delta = None
    system = _read_columns(rec, "system", ["t", "MemTotal", "MemAvailable"])
    if system is not None and system.num_rows:
        system = system.sort_by("t")
        t = system.column("t")
        duration = float(pc.max(t).as_py())
        used = pc.subtract(system.column("MemTotal"), system.column("MemAvailable"))
        used_start = int(used[0].as_py())
        used_delta = int(used[-1].as_py()) - used_start
    elif problem is None:
        problem = "no system samples"
    requests = failures = None
    req = _read_columns(rec, "requests", ["name", "requests", "failures"])
    if req is not None and req.num_rows:
        req = req.filter(pc.equal(req.column("name").cast(pa.string()), "Aggregated"))
        requests = int(pc.sum(req.column("requests")).as_py() or 0)
        failures = int(pc.sum(req.column("failures")).as_py() or 0)
    started = meta.get("start_iso") or meta.get("started")
    return RecordingEntry(
        path=rec,
        label=meta.get("label"),
        started=started,
        target=_target(meta),
        status="damaged" if damaged else str(meta.get("status", "unknown")),
        duration_s=duration,
        used_start_bytes=used_start,
        used_delta_bytes=used_delta,
        requests=requests,
        failures=failures,
        process_rows=_rows(rec, "processes"),
        schema_version=meta.get("schema_version"),
        problem=problem,
    )


def is_recording(path: Path) -> bool:
    return path.is_dir() and (
        (path / META_FILE).exists() or any(_files(path, t) for t in TABLE_NAMES)
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
