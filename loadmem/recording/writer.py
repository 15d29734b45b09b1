"""Write a recording: buffered rows, flushed as Parquet segments, merged on a clean stop.

Layout of a recording directory while it is being written::

    meta.json                      # written first, updated at the end
    system/rec-000001.parquet      # one segment per flush, per writer
    processes/rec-000001.parquet
    events/run-000001.parquet      # another writer (the run orchestrator) may add tables

A segment is written to a hidden temporary name and renamed into place, so a recorder
killed with SIGKILL leaves only whole segments (and perhaps a ``.tmp`` file per table that
readers ignore): at most the rows of the last flush interval are lost. The recorder writes
every table's segment first and renames them after, ``system`` last (``stage`` then
``publish``): each tick of ``system`` is on disk in every table. ``finalize`` merges each
table's segments into ``<table>.parquet`` and removes the segment directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from loadmem.errors import LoadmemError
from loadmem.recording.schema import SCHEMA_VERSION

COMPRESSION = "zstd"
META_FILE = "meta.json"

#: Rows gathered into one row group of a merged file: large enough for fast scans and
#: good compression, small enough that merging a day-long recording stays in tens of MiB.
MERGE_ROW_GROUP = 131_072
#: Segments merged by a writer's periodic compaction (at the default 5 s flush: 10 minutes).
COMPACT_EVERY = 120
#: Columns whose min/max statistics the merged files keep (for filter push-down).
STATISTICS_COLUMNS = ("ts", "t", "tick", "pid", "start_time", "kind", "name")


def _file_metadata(table: str) -> dict[bytes, bytes]:
    from loadmem import __version__

    return {
        b"loadmem.schema_version": str(SCHEMA_VERSION).encode(),
        b"loadmem.table": table.encode(),
        b"loadmem.version": __version__.encode(),
    }


def rows_to_table(rows: list[Mapping[str, Any]], schema: pa.Schema,
                  struct: pa.StructType | None = None) -> pa.Table:
    """``Table.from_pylist`` in one conversion: the rows as one struct array, then split
    into columns. Missing keys are nulls, extra keys are ignored, as with ``from_pylist``,
    which converts column by column (with a Python-level call and an environment lookup
    per column: 2.5x the CPU for the 60 columns of a few ``system`` rows). ``struct``: the
    schema's fields as a struct type, when the caller keeps one."""
    arr = pa.array(rows, type=struct or pa.struct(list(schema)))
    return pa.Table.from_batches([pa.RecordBatch.from_struct_array(arr)]).replace_schema_metadata(
        schema.metadata)


def _tmp_name(path: Path) -> Path:
    return path.with_name("." + path.name + ".tmp")


def _write_parquet(table: pa.Table, path: Path, name: str, light: bool = False,
                   dictionary_columns: list[str] | None = None, publish: bool = True) -> int:
    """Write ``table`` to ``path`` through a temporary name, with the file metadata of
    table ``name`` (kept as is when the table carries it already). ``light``: a segment
    (see ``TableWriter``); ``dictionary_columns``: its text columns, when the caller keeps
    them. ``publish=False``: leave it under the temporary name (``_tmp_name``), for the
    caller to rename."""
    tmp = _tmp_name(path)
    if (table.schema.metadata or {}).get(b"loadmem.table") != name.encode():
        table = table.replace_schema_metadata(_file_metadata(name))
    if light and dictionary_columns is None:
        dictionary_columns = _text_columns(table.schema)
    with pa.OSFile(str(tmp), "wb") as sink:  # a plain file: no filesystem resolution
        if light:
            # a small segment: zstd, statistics and dictionaries of numbers cost more CPU
            # (and bytes) than they save on a few rows; text columns keep theirs
            pq.write_table(table, sink, compression="none", write_statistics=False,
                           use_dictionary=dictionary_columns)
        else:
            pq.write_table(table, sink, compression=COMPRESSION, use_dictionary=True)
        size = sink.tell()
    if publish:
        os.replace(tmp, path)
    return size


def _text_columns(schema: pa.Schema) -> list[str]:
    return [f.name for f in schema
            if pa.types.is_dictionary(f.type) or pa.types.is_string(f.type)
            or pa.types.is_large_string(f.type)]


_SEGMENT_NAME = re.compile(r"^(?P<writer>.+?)-(?P<first>\d{6,})(?:-(?P<last>\d{6,}))?$")


def _parse_segment(path: Path) -> tuple[str, int, int] | None:
    """``rec-000007`` -> ("rec", 7, 7); a compacted ``rec-000001-000120`` -> ("rec", 1, 120)."""
    m = _SEGMENT_NAME.match(path.stem)
    if not m:
        return None
    first = int(m.group("first"))
    return m.group("writer"), first, int(m.group("last") or first)


def segment_files(seg_dir: Path) -> list[Path]:
    """The segment files of one table that hold live rows, in name order.

    A compacted file ``W-AAAAAA-BBBBBB`` holds the rows of writer W's segments A..B. If the
    writer was killed after renaming the compacted file into place but before deleting the
    segments it replaces, those segments are still on disk: they are left out here (and
    deleted by the next compaction or by ``finalize``), so no row is ever read twice.
    """
    files = sorted(seg_dir.glob("*.parquet"))
    parsed = {f: _parse_segment(f) for f in files}
    chunks: dict[str, list[tuple[int, int]]] = {}
    for info in parsed.values():
        if info and info[2] > info[1]:
            chunks.setdefault(info[0], []).append((info[1], info[2]))
    live = []
    for f, info in parsed.items():
        if info is not None and info[1] == info[2] and any(
                a <= info[1] <= b for a, b in chunks.get(info[0], ())):
            continue  # already in a compacted file
        live.append(f)
    return live


@dataclass(frozen=True)
class Compaction:
    """Segments of one writer merged into one zstd file named after the range they cover.

    Crash-safe: the compacted file is renamed into place first, then the segments are
    deleted; ``segment_files`` skips segments a compacted file covers, so a kill in between
    (of this process or of the one running the job) loses and doubles nothing."""

    table: str
    segments: list[Path]
    target: Path

    def run(self) -> Path:
        _merge_table(self.table, self.segments, self.target)
        for p in self.segments:
            p.unlink(missing_ok=True)
        return self.target


class TableWriter:
    """Buffers rows of one table and writes them as segments.

    ``append`` takes a mapping of column -> value (missing columns are null). ``flush``
    writes the buffered rows as a new segment; ``maybe_flush`` does so when ``flush_s``
    seconds passed since the last one. Not thread safe: one writer per thread.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        name: str,
        schema: pa.Schema,
        writer_id: str = "rec",
        flush_s: float = 5.0,
        light_segments: bool = False,
        compact_every: int = COMPACT_EVERY,
        auto_compact: bool = True,
    ):
        """``light_segments``: write segments uncompressed and without statistics (about a
        third of the CPU of zstd for a few rows of many columns, and smaller); ``finalize``
        writes the merged file with zstd either way. ``compact_every``: after this many
        segments, merge them into one compacted file (0: never), so that a recording of
        hours is tens of files per table rather than thousands. ``auto_compact``: compact
        inside ``flush`` (the default); when off, the owner takes the due work with
        ``take_compaction`` and runs it elsewhere (the recorder: in a child process, so
        that sampling never waits for it)."""
        self.compact_every = compact_every
        self.auto_compact = auto_compact
        self._uncompacted: list[Path] = []
        self.light_segments = light_segments
        self.root = Path(root)
        self.name = name
        self.schema = schema
        # what every flush needs of the schema, worked out once: segments are written
        # every few seconds, each time cache-cold
        self._file_schema = schema.with_metadata(_file_metadata(name))
        self._struct = pa.struct(list(schema))
        self._dictionary_columns = _text_columns(schema)
        self.writer_id = writer_id
        self.flush_s = flush_s
        self._rows: list[Mapping[str, Any]] = []
        self._seq = 0
        self._staged: Path | None = None  # a segment written, not yet renamed into place
        self._last_flush = time.monotonic()
        self.rows_written = 0
        self.bytes_written = 0
        self._dir = self.root / name
        self._dir.mkdir(parents=True, exist_ok=True)
        for f in self._dir.glob("*.parquet"):  # continue numbering after a restart
            info = _parse_segment(f)
            if info and info[0] == writer_id:
                self._seq = max(self._seq, info[2])

    def append(self, row: Mapping[str, Any]) -> None:
        self._rows.append(row)

    def extend(self, rows: Iterable[Mapping[str, Any]]) -> None:
        self._rows.extend(rows)

    @property
    def pending(self) -> int:
        return len(self._rows)

    def maybe_flush(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if now - self._last_flush >= self.flush_s:
            self.flush(now)
            return True
        return False

    def flush(self, now: float | None = None) -> None:
        self.publish()  # one staged earlier, when a write of another table failed
        self.stage(now)
        self.publish()

    def stage(self, now: float | None = None) -> None:
        """Write the buffered rows as a segment under its hidden temporary name (readers
        skip it); ``publish`` renames it into place. Several tables staged, then published
        together, leave a kill a window of a few renames (microseconds) to fall between two
        tables' segments, instead of the writes (milliseconds each)."""
        self._last_flush = time.monotonic() if now is None else now
        if not self._rows or self._staged is not None:
            return
        table = rows_to_table(self._rows, self._file_schema, self._struct)
        self._seq += 1
        path = self._dir / f"{self.writer_id}-{self._seq:06d}.parquet"
        self.bytes_written += _write_parquet(table, path, self.name, light=self.light_segments,
                                             dictionary_columns=self._dictionary_columns,
                                             publish=False)
        self.rows_written += len(self._rows)
        self._rows = []
        self._staged = path

    def publish(self) -> None:
        """Rename the staged segment into place (nothing when none is staged)."""
        path, self._staged = self._staged, None
        if path is None:
            return
        os.replace(_tmp_name(path), path)
        self._uncompacted.append(path)
        if self.auto_compact and self.compaction_due:
            self.compact()

    @property
    def compaction_due(self) -> bool:
        return bool(self.compact_every) and len(self._uncompacted) >= self.compact_every

    def take_compaction(self) -> Compaction | None:
        """The segments written since the last compaction, as a job, and forget them here
        (None when fewer than two). Run it with ``Compaction.run`` in any process."""
        segs = [p for p in self._uncompacted if p.exists()]
        self._uncompacted = []
        if len(segs) < 2:
            return None
        infos = [_parse_segment(p) for p in segs]
        first = min(i[1] for i in infos if i)
        last = max(i[2] for i in infos if i)
        target = self._dir / f"{self.writer_id}-{first:06d}-{last:06d}.parquet"
        return Compaction(self.name, segs, target)

    def compact(self) -> Path | None:
        """Merge this writer's segments since the last compaction into one zstd file, here
        and now (see ``Compaction``)."""
        job = self.take_compaction()
        return job.run() if job is not None else None

    def close(self) -> None:
        self.flush()


def write_meta(root: str | os.PathLike[str], meta: Mapping[str, Any]) -> None:
    """Write ``meta.json`` atomically (temporary file, then rename)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{META_FILE}.tmp"
    tmp.write_text(json.dumps(dict(meta), indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, root / META_FILE)


def update_meta(root: str | os.PathLike[str], **changes: Any) -> dict[str, Any]:
    path = Path(root) / META_FILE
    meta = json.loads(path.read_text()) if path.exists() else {}
    meta.update(changes)
    write_meta(root, meta)
    return meta


def prepare_output(root: str | os.PathLike[str], force: bool = False) -> Path:
    """Create the recording directory; refuse to mix with an existing recording."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise LoadmemError(f"output {root} exists and is not a directory", "choose another --out")
    if (root / META_FILE).exists() and not force:
        raise LoadmemError(
            f"{root} already holds a recording", "choose another --out or remove it first"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise LoadmemError(
            f"cannot write to output directory {root}: {e.strerror or e}",
            "choose a writable --out",
        ) from None
    return root


def _segment_start(path: Path) -> float:
    """The smallest ``t`` of a segment, from the Parquet statistics (no data read)."""
    try:
        md = pq.ParquetFile(path).metadata
        idx = md.schema.to_arrow_schema().get_field_index("t")
        if idx >= 0 and md.num_row_groups:
            stats = md.row_group(0).column(idx).statistics
            if stats is not None and stats.has_min_max:
                return float(stats.min)
    except (OSError, pa.ArrowException):
        pass
    return float("inf")


def _merge_table(name: str, sources: list[Path], target: Path,
                 merged_t: pa.Array | None = None) -> None:
    """Stream ``sources`` (in time order) into ``target`` with large row groups.

    Memory stays bounded by ``MERGE_ROW_GROUP`` rows, whatever the recording's length.
    Segments of one writer are in time order; segments of different writers (the events
    of the recorder and of the run orchestrator) are ordered by their first ``t``, and
    within a row group the rows are sorted by ``t``. ``merged_t``: the times of the rows
    the existing ``target`` (one of the sources) holds; rows of the other sources at those
    times are left out (the readers' rule: the merged file wins).
    """
    schema = pa.unify_schemas([pq.read_schema(s) for s in sources], promote_options="permissive")
    schema = schema.remove_metadata().with_metadata(_file_metadata(name))
    tmp = target.with_name("." + target.name + ".tmp")
    pending: list[pa.Table] = []
    pending_rows = 0

    def write_pending(writer: pq.ParquetWriter) -> None:
        nonlocal pending, pending_rows
        if not pending:
            return
        table = pa.concat_tables(pending, promote_options="permissive")
        if "t" in table.column_names:
            table = table.sort_by("t")
        writer.write_table(table.cast(schema), row_group_size=MERGE_ROW_GROUP)
        pending, pending_rows = [], 0

    # Min/max statistics only where readers filter (time, process identity): on the ~100
    # other columns they cost more bytes than the data of a short recording.
    names = schema.names
    stats = [c for c in STATISTICS_COLUMNS if c in names]
    with pq.ParquetWriter(
        tmp, schema, compression=COMPRESSION, use_dictionary=True, write_statistics=stats
    ) as writer:
        for src in sources:
            # one file, one thread: pq.read_table goes through the dataset layer and a
            # thread pool, 7x the CPU for a small segment (10.5 ms against 1.5 ms for the
            # 60 columns of a system segment)
            part = pq.ParquetFile(src).read(use_threads=False)
            if merged_t is not None and src != target and "t" in part.column_names:
                part = part.filter(pc.invert(pc.is_in(part.column("t"), value_set=merged_t)))
            if part.column_names != names:  # another writer's version: line the columns up
                have = set(part.column_names)
                for f in schema:
                    if f.name not in have:
                        part = part.append_column(f, pa.nulls(part.num_rows, f.type))
                part = part.select(names)
            pending.append(part)
            pending_rows += part.num_rows
            if pending_rows >= MERGE_ROW_GROUP:
                write_pending(writer)
        write_pending(writer)
    os.replace(tmp, target)


def finalize(root: str | os.PathLike[str]) -> list[str]:
    """Merge every table's segments into ``<table>.parquet``; return the tables merged.

    Safe to run again after an interruption: the merged file is renamed into place before
    the segments are removed, and readers prefer the merged file when both exist. Merging
    again takes the segments' rows whose ``t`` the merged file does not hold already
    (``Recording.without_merged_rows``'s rule), so no row is written twice.
    """
    root = Path(root)
    merged: list[str] = []
    for seg_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        segments = sorted(segment_files(seg_dir), key=lambda s: (_segment_start(s), s.name))
        target = root / f"{seg_dir.name}.parquet"
        if segments:
            merged_t = None
            if target.exists():  # an interrupted merge: it holds these segments' rows already
                with contextlib.suppress(OSError, KeyError, pa.ArrowException):
                    merged_t = pc.unique(pq.read_table(target, columns=["t"]).column("t"))
            sources = ([target] if target.exists() else []) + segments
            _merge_table(seg_dir.name, sources, target, merged_t)
            merged.append(seg_dir.name)
        shutil.rmtree(seg_dir, ignore_errors=True)
    return merged
