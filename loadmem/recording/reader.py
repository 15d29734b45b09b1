"""Open a recording: the one way the rest of loadmem reads one.

Handles a finished recording (``<table>.parquet``), one still being written or cut short by
a kill (segment directories, perhaps a stray temporary file), and both at once (a merge
interrupted half-way: the merged file wins for the rows it holds).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from loadmem.errors import LoadmemError
from loadmem.recording.schema import FIXED_TABLES, SCHEMA_VERSION, TABLES
from loadmem.recording.writer import META_FILE, segment_files


@dataclass
class Recording:
    """A recording on disk. ``table(name)`` returns a pyarrow Table sorted by ``t``."""

    path: Path
    meta: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    _cache: dict[str, pa.Table] = field(default_factory=dict, repr=False)

    @property
    def schema_version(self) -> int:
        return int(self.meta.get("schema_version", SCHEMA_VERSION))

    @property
    def complete(self) -> bool:
        return self.meta.get("status") == "complete"

    @property
    def label(self) -> str | None:
        return self.meta.get("label")

    def files(self, name: str) -> list[Path]:
        merged = self.path / f"{name}.parquet"
        seg_dir = self.path / name
        files = [merged] if merged.exists() else []
        if seg_dir.is_dir():
            files += segment_files(seg_dir)
        return files

    def has(self, name: str) -> bool:
        return bool(self.files(name))

    def table(self, name: str, columns: list[str] | None = None) -> pa.Table:
        """All rows of a table (empty, with the declared schema, if the table is absent)."""
        if name not in self._cache:
            self._cache[name] = self._load(name)
        table = self._cache[name]
        if columns is not None:
            missing = [c for c in columns if c not in table.column_names]
            for c in missing:
                table = table.append_column(c, pa.nulls(table.num_rows))
            table = table.select(columns)
        return table

    def _load(self, name: str) -> pa.Table:
        parts: list[pa.Table] = []
        for f in self.files(name):
            try:
                parts.append(pq.read_table(f))
            except (OSError, pa.ArrowException) as e:
                self.notes.append(f"skipped unreadable file {f.relative_to(self.path)}: {e}")
        if not parts:
            schema = FIXED_TABLES.get(name)
            return schema.empty_table() if schema is not None else pa.table({})
        table = pa.concat_tables(parts, promote_options="permissive")
        declared = FIXED_TABLES.get(name)
        if declared is not None:  # older files: add declared columns they lack, as nulls
            for f in declared:
                if f.name not in table.column_names:
                    table = table.append_column(f, pa.nulls(table.num_rows, f.type))
        if "t" in table.column_names and table.num_rows:
            table = table.sort_by("t")
        return table

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Events as dicts (``data`` decoded from JSON), optionally of one kind."""
        rows = self.table("events").to_pylist()
        out = []
        for r in rows:
            if kind is not None and r["kind"] != kind:
                continue
            r = dict(r)
            if r.get("data"):
                with contextlib.suppress(ValueError):
                    r["data"] = json.loads(r["data"])
            out.append(r)
        return out

    def phases(self) -> list[tuple[str, float, float | None]]:
        """``(phase, t_start, t_end)`` from phase events; ``t_end`` None if never closed."""
        starts: dict[str, float] = {}
        out: list[tuple[str, float, float | None]] = []
        for e in self.events():
            if e["kind"] == "phase_start" and e["phase"]:
                starts[e["phase"]] = e["t"]
            elif e["kind"] == "phase_end" and e["phase"] in starts:
                out.append((e["phase"], starts.pop(e["phase"]), e["t"]))
        out += [(p, t0, None) for p, t0 in starts.items()]
        return sorted(out, key=lambda x: x[1])

    @property
    def duration(self) -> float:
        sys_t = self.table("system", ["t"]).column("t")
        if len(sys_t) == 0:
            return 0.0
        return float(pa.compute.max(sys_t).as_py())


def open_recording(path: str | Path) -> Recording:
    """Open the recording at ``path``; raise ``LoadmemError`` with a hint when it is not one."""
    import pyarrow.compute  # noqa: F401  (makes pa.compute available)

    p = Path(path)
    if not p.exists():
        raise LoadmemError(
            f"no recording at {p}",
            "give the directory that `loadmem record` or `loadmem run` wrote",
        )
    if p.is_file():
        if p.name == META_FILE or p.suffix == ".parquet":
            p = p.parent
        else:
            raise LoadmemError(f"{p} is a file, not a recording directory")
    meta_path = p / META_FILE
    notes: list[str] = []
    meta: dict[str, Any] = {}
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError as e:
            notes.append(f"meta.json is unreadable ({e}); metadata is missing")
    else:
        notes.append("meta.json is missing; metadata is unknown")
    rec = Recording(path=p, meta=meta, notes=notes)
    if not any(rec.has(t) for t in TABLES):
        raise LoadmemError(
            f"{p} holds no recorded data",
            "the recorder may have been killed before its first flush; record again",
        )
    version = rec.schema_version
    if version > SCHEMA_VERSION:
        raise LoadmemError(
            f"{p} uses recording schema {version}, newer than this loadmem ({SCHEMA_VERSION})",
            "upgrade loadmem",
        )
    status = meta.get("status")
    if status and status != "complete":
        seg = [t for t in TABLES if (p / t).is_dir()]
        notes.append(
            f"recording was not finished cleanly (status: {status}); "
            f"read from segments of {', '.join(seg) or 'no table'}; "
            "the last few seconds before the stop may be missing"
        )
    return rec
