"""Open a recording: the one way the rest of loadmem reads one.

Handles a finished recording (``<table>.parquet``), one still being written or cut short by
a kill (segment directories, perhaps a stray temporary file), and both at once. Both at once
means one of two things: a merge interrupted between renaming the merged file into place and
deleting the segments (the merged file holds the segments' rows), or segments added to a
finished recording (``loadmem.load.attach``: new rows). The merged file wins: a segment's
rows whose ``t`` the merged file already holds are read once, from the merged file; rows it
does not hold are new and read from the segment. ``t`` is the writer's own monotonic
reading, so two writers never produce the same one by chance.

Every file is checked when the recording is opened (``loadmem.recording.validate``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from loadmem.errors import LoadmemError
from loadmem.recording.schema import FIXED_TABLES, SCHEMA_VERSION, TABLES
from loadmem.recording.validate import (
    check_file,
    damaged_file,
    file_schema_version,
    read_meta,
    relative,
)
from loadmem.recording.writer import META_FILE, segment_files


@dataclass
class Recording:
    """A recording on disk. ``table(name)`` returns a pyarrow Table sorted by ``t``."""

    path: Path
    meta: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    #: the schema version of the files, when meta.json does not say
    meta_version: int | None = None
    _cache: dict[str, pa.Table] = field(default_factory=dict, repr=False)
    _bad: dict[Path, str] = field(default_factory=dict, repr=False)  # file -> what is wrong
    _merged_t: dict[str, pa.Array | None] = field(default_factory=dict, repr=False)
    _damage: dict[str, str] = field(default_factory=dict, repr=False)  # table -> first problem

    @property
    def schema_version(self) -> int:
        version = self.meta.get("schema_version", self.meta_version)
        return version if isinstance(version, int) else SCHEMA_VERSION

    @property
    def complete(self) -> bool:
        return self.meta.get("status") == "complete"

    @property
    def label(self) -> str | None:
        label = self.meta.get("label")
        return label if isinstance(label, str) else None

    def _all_files(self, name: str) -> list[Path]:
        merged = self.path / f"{name}.parquet"
        seg_dir = self.path / name
        files = [merged] if merged.is_file() else []
        if seg_dir.is_dir():
            files += segment_files(seg_dir)
        return files

    def files(self, name: str) -> list[Path]:
        """The readable files of a table: the merged file first, then live segments. Files
        found damaged when the recording was opened are left out (a note says so)."""
        return [f for f in self._all_files(name) if f not in self._bad]

    def damage(self, name: str) -> str | None:
        """What is wrong with a table whose rows were (partly) lost, or None: a file that
        could not be read, or rows that meta.json says were written but are not there."""
        return self._damage.get(name)

    def _damaged(self, name: str, f: Path | None, problem: str) -> None:
        where = f"{relative(f, self.path)} {problem}" if f is not None else problem
        self._damage.setdefault(name, where)

    def is_merged(self, path: Path) -> bool:
        return path.parent == self.path

    def without_merged_rows(self, name: str, part: pa.Table, path: Path) -> pa.Table:
        """``part`` (rows read from ``path``) without the rows the merged file already holds.

        The one de-duplication rule (the merged file wins), for every way of reading a
        table: ``table()`` and any streaming reader call it on each piece they read."""
        if self.is_merged(path) or "t" not in part.column_names or part.num_rows == 0:
            return part
        merged_t = self._merged_times(name)
        if merged_t is None:
            return part
        return part.filter(pc.invert(pc.is_in(part.column("t"), value_set=merged_t)))

    def _merged_times(self, name: str) -> pa.Array | None:
        """The distinct ``t`` of the merged file, when segments sit next to it (else None)."""
        if name not in self._merged_t:
            files = self.files(name)
            merged = self.path / f"{name}.parquet"
            times = None
            if merged in files and len(files) > 1:
                try:
                    times = pc.unique(pq.read_table(merged, columns=["t"]).column("t"))
                except (OSError, pa.ArrowException) as e:
                    self._note_unreadable(merged, e)
            self._merged_t[name] = times
        return self._merged_t[name]

    def _note_unreadable(self, f: Path, e: Exception) -> None:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        table = f.stem if self.is_merged(f) else f.parent.name
        self._damaged(table, f, f"cannot be read ({detail})")
        note = f"skipped unreadable file {relative(f, self.path)}: {detail}"
        if note not in self.notes:
            self.notes.append(note)

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
        files = self.files(name)
        failed: list[Path] = []
        duplicates = 0
        for f in files:
            try:
                part = pq.read_table(f)
            except (OSError, pa.ArrowException) as e:
                self._note_unreadable(f, e)
                failed.append(f)
                continue
            kept = self.without_merged_rows(name, part, f)
            duplicates += part.num_rows - kept.num_rows
            parts.append(kept)
        if failed and not parts and name in ("system", "processes"):
            raise LoadmemError(
                f"{failed[0]} {damaged_file(failed[0])}: the {name} table cannot be read",
                "the recording is damaged; record again, or restore the file from a copy",
            )
        if duplicates:
            self.notes.append(
                f"{name}: {duplicates} rows of segments were also in {name}.parquet (a merge "
                "was interrupted) and were read once"
            )
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

    # --- reading parts of a table: the series layer and ``loadmem ls`` --------------------
    # Long recordings have a processes table of millions of rows: these read only the
    # columns (and row groups) asked for, never the whole table, and apply the same
    # de-duplication as ``table()`` (the merged file wins).

    def select(self, name: str, columns: Sequence[str]) -> pa.Table:
        """Only ``columns`` of a table (those no file has are left out), sorted by ``t``; not
        cached. Cheap on a long recording when the columns are few."""
        parts = [part for _, part in self._pieces(name, columns, whole_files=True)]
        if not parts:
            return pa.table({})
        table = pa.concat_tables(parts, promote_options="permissive")
        if "t" in table.column_names and table.num_rows:
            table = table.sort_by("t")
        return table

    def batches(self, name: str, columns: Sequence[str]) -> Iterator[pa.Table]:
        """Stream a table one Parquet row group at a time (the writer keeps them to about
        128 Ki rows), only ``columns``, in file order: memory bounded by a row group."""
        for _, part in self._pieces(name, columns, whole_files=False):
            yield part

    def rows_at_ticks(self, name: str, ticks: Sequence[int], columns: Sequence[str]) -> pa.Table:
        """The rows of a few recorder ticks, only ``columns`` (plus ``tick``): row groups whose
        statistics exclude every tick are not read."""
        wanted = list(dict.fromkeys(["tick", *columns]))
        parts = [part for _, part in self._pieces(name, wanted, whole_files=True,
                                                  ticks=sorted(set(ticks)))]
        if not parts:
            return pa.table({})
        return pa.concat_tables(parts, promote_options="permissive")

    def num_rows(self, name: str) -> int:
        """Rows of a table from its file footers (no data read; de-duplication not applied)."""
        total = 0
        for f in self.files(name):
            try:
                total += pq.ParquetFile(f).metadata.num_rows
            except (OSError, pa.ArrowException):
                continue
        return total

    def _pieces(
        self, name: str, columns: Sequence[str], whole_files: bool,
        ticks: Sequence[int] | None = None,
    ) -> Iterator[tuple[Path, pa.Table]]:
        """The pieces of a table, each through ``without_merged_rows`` (the one
        de-duplication rule), reading ``t`` for it when a segment sits beside the merged
        file. Unreadable files are skipped with a note."""
        for f in self.files(name):
            try:
                pf = pq.ParquetFile(f)
                names = pf.schema_arrow.names
                present = [c for c in columns if c in names]
                dedup = (not self.is_merged(f) and "t" in names and "t" not in present
                         and self._merged_times(name) is not None)
                read = [*present, "t"] if dedup else present
                if ticks is not None:
                    groups: list[int] | None = _groups_with_ticks(pf, ticks)
                elif whole_files:
                    groups = None
                else:
                    groups = list(range(pf.metadata.num_row_groups))
                pieces: Iterator[pa.Table] = (
                    iter([pf.read(columns=read)]) if groups is None
                    else (pf.read_row_group(g, columns=read) for g in groups))  # one at a time
                for part in pieces:
                    if ticks is not None:
                        part = part.filter(pc.is_in(part.column("tick"),
                                                    value_set=pa.array(ticks, pa.int64())))
                    part = self.without_merged_rows(name, part, f)
                    if dedup:
                        part = part.drop_columns(["t"])
                    if part.num_rows:
                        yield f, part
            except (OSError, pa.ArrowException) as e:
                self._note_unreadable(f, e)


def _groups_with_ticks(pf: pq.ParquetFile, ticks: Sequence[int]) -> list[int]:
    """Row groups whose ``tick`` statistics may hold one of ``ticks`` (all without them)."""
    md = pf.metadata
    col = pf.schema_arrow.get_field_index("tick")
    out = []
    for g in range(md.num_row_groups):
        st = md.row_group(g).column(col).statistics if col >= 0 else None
        if st is None or not st.has_min_max or any(st.min <= t <= st.max for t in ticks):
            out.append(g)
    return out


def open_recording(path: str | Path, strict: bool = True) -> Recording:
    """Open the recording at ``path``, checked at the validation edge
    (``loadmem.recording.validate``): damage it can work around becomes a note, a recording
    that cannot answer raises ``LoadmemError`` naming the file and the problem.
    ``strict=False`` (``loadmem ls``: list what can still be read of a damaged recording)
    turns an unreadable system or processes table into a note too."""
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
    meta, notes = read_meta(p)
    rec = Recording(path=p, meta=meta, notes=notes)
    if not any(rec._all_files(t) for t in TABLES):
        if not meta and not (p / META_FILE).exists():
            raise LoadmemError(
                f"{p} holds no recorded data (no meta.json, no table file): not a recording",
                "give the directory that `loadmem record` or `loadmem run` wrote",
            )
        raise LoadmemError(
            f"{p} holds no recorded data",
            "the recorder may have been killed before its first flush; record again",
        )
    _check_version(rec)
    for name in TABLES:
        _check_table(rec, name, strict)
    status = meta.get("status")
    if status == "incomplete":
        phases = [str(ph.get("phase")) for ph in meta.get("phases") or [] if isinstance(ph, dict)]
        notes.append(
            "the run that made this recording was killed (status: incomplete); the recorder "
            "finished its files, but the run stopped "
            + (f"after its {phases[-1]} phase began" if phases else "before its first phase")
            + ": the phases after that did not happen"
        )
    elif status and status != "complete":
        seg = [t for t in TABLES if (p / t).is_dir()]
        notes.append(
            f"recording was not finished cleanly (status: {status}); "
            f"read from segments of {', '.join(seg) or 'no table'}; "
            "the last few seconds before the stop may be missing"
        )
    return rec


def _check_version(rec: Recording) -> None:
    version = rec.meta.get("schema_version")
    if version is None:  # meta.json lost or damaged: the files carry it too
        version = next((v for t in TABLES for f in rec.files(t)
                        if (v := file_schema_version(f)) is not None), None)
        if version is not None:
            rec.meta_version = version
    if version is not None and version > SCHEMA_VERSION:
        raise LoadmemError(
            f"{rec.path} uses recording schema {version}, newer than this loadmem "
            f"({SCHEMA_VERSION})",
            "upgrade loadmem",
        )


def _expected_rows(rec: Recording, name: str) -> int:
    rows = rec.meta.get("rows")
    n = rows.get(name) if isinstance(rows, dict) else None
    return n if isinstance(n, int) and not isinstance(n, bool) else 0


def _check_table(rec: Recording, name: str, strict: bool = True) -> None:
    """Check every file of one table from its footer; set bad files aside with a note, or
    raise when a table the analysis needs has no readable file left."""
    files = rec._all_files(name)
    for f in files:
        problem = check_file(f, name)
        if problem is not None:
            rec._bad[f] = problem
    good = [f for f in files if f not in rec._bad]
    bad = [f for f in files if f in rec._bad]
    # system and processes are what every question is about: when they exist, or meta.json
    # says rows were written to them, they must be readable. (A `loadmem run --no-record`
    # directory has neither: events and requests only.)
    needed = name in ("system", "processes") and bool(files or _expected_rows(rec, name))
    if needed and not good and strict:
        if bad:
            f = bad[0]
            more = f" (and {len(bad) - 1} more of its files)" if len(bad) > 1 else ""
            raise LoadmemError(
                f"{f} {rec._bad[f]}{more}: the {name} table cannot be read",
                "the recording is damaged; record again, or restore the file from a copy",
            )
        what = f"{name}.parquet and {name}/ are missing"
        if _expected_rows(rec, name):
            what += f" (meta.json says {_expected_rows(rec, name)} rows were written)"
        raise LoadmemError(
            f"{rec.path}: {what}: the {name} table cannot be read",
            "the recording is incomplete; record again",
        )
    if not files and _expected_rows(rec, name):
        problem = (f"{name}.parquet is missing (meta.json says {_expected_rows(rec, name)} "
                   "rows were written)")
        rec._damaged(name, None, problem)
        rec.notes.append(f"{problem}; the {name} figures are not available")
    for f in bad:
        rec._damaged(name, f, rec._bad[f])
        rec.notes.append(
            f"skipped {relative(f, rec.path)}: it {rec._bad[f]}; the {name} rows it held "
            "are missing"
        )
