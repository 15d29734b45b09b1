"""The one validation edge of a recording: ``meta.json`` and every table file, checked when
a recording is opened, against the documented format (``docs/recording-format.md``,
``loadmem.recording.schema``).

Two kinds of answer, never a traceback:

- **Damage the reader works around** becomes a note: an unreadable ``meta.json`` or a key
  of the wrong type (the key is dropped, or a number given as a label is read as text), a
  broken segment of a killed recorder next to good ones. The rest of the recording is
  analysed as usual and the note says what is missing.
- **A recording that cannot answer** raises ``LoadmemError`` (exit 2) with one line naming
  the file and what is wrong with it: no readable ``system`` table, a ``processes`` table
  that exists (or that ``meta.json`` says was written) but cannot be read, a column of the
  wrong type, a schema version newer than this loadmem.

The checks read only ``meta.json`` and the Parquet footers (schemas), never the data
pages, so opening a recording of hours stays cheap.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from loadmem.recording.schema import FIXED_TABLES

PARQUET_MAGIC = b"PAR1"


# --------------------------------------------------------------------------------------
# meta.json

def _int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return None


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _text(v: Any) -> str | None:
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)  # a label given as 12345 is the text "12345"
    return None


def _bool(v: Any) -> bool | None:
    return v if isinstance(v, bool) else None


def _dict(v: Any) -> dict[str, Any] | None:
    return v if isinstance(v, dict) else None


def _list(v: Any) -> list[Any] | None:
    return v if isinstance(v, list) else None


def _object_or_text(v: Any) -> Any:
    return v if isinstance(v, (dict, str)) else None


@dataclass(frozen=True)
class MetaKey:
    check: Callable[[Any], Any]  # the value, normalised, or None when of the wrong type
    what: str  # "an integer", for the note
    nullable: bool = False


#: The ``meta.json`` keys loadmem reads, with their documented types. Keys not listed are
#: kept as they are (readers ignore keys they do not know).
META_KEYS: dict[str, MetaKey] = {
    "schema_version": MetaKey(_int, "an integer"),
    "loadmem_version": MetaKey(_text, "text"),
    "status": MetaKey(_text, "text"),
    "writer": MetaKey(_text, "text"),
    "kind": MetaKey(_text, "text"),
    "label": MetaKey(_text, "text", nullable=True),
    "host": MetaKey(_text, "text"),
    "kernel": MetaKey(_text, "text"),
    "machine": MetaKey(_text, "text"),
    "python": MetaKey(_text, "text"),
    "cpus": MetaKey(_int, "an integer"),
    "page_size": MetaKey(_int, "an integer"),
    "clk_tck": MetaKey(_int, "an integer"),
    "boot_time": MetaKey(_number, "a number"),
    "start_epoch": MetaKey(_number, "a number"),
    "start_monotonic": MetaKey(_number, "a number"),
    "start_iso": MetaKey(_text, "text"),
    "started": MetaKey(_text, "text"),  # older recordings' names for start_iso / interval_s
    "start_utc": MetaKey(_text, "text"),
    "interval": MetaKey(_number, "a number"),
    "interval_s": MetaKey(_number, "a number"),
    "flush_s": MetaKey(_number, "a number"),
    "pss_budget": MetaKey(_number, "a number"),
    "pss_max_age_s": MetaKey(_number, "a number"),
    "duration_s": MetaKey(_number, "a number", nullable=True),
    "selection": MetaKey(_dict, "an object"),
    "argv": MetaKey(_list, "a list"),
    "recorder_argv": MetaKey(_list, "a list", nullable=True),
    "argv_redacted": MetaKey(_bool, "true or false"),
    "recorder_pid": MetaKey(_int, "an integer"),
    "executable": MetaKey(_text, "text"),
    "stop_reason": MetaKey(_text, "text"),
    "end_epoch": MetaKey(_number, "a number"),
    "end_monotonic": MetaKey(_number, "a number"),
    "ticks": MetaKey(_int, "an integer"),
    "processes_seen": MetaKey(_int, "an integer"),
    "failures": MetaKey(_dict, "an object"),
    "finalized": MetaKey(_bool, "true or false"),
    "recorder_cpu_s": MetaKey(_number, "a number"),
    "rows": MetaKey(_dict, "an object"),
    "bytes_written": MetaKey(_dict, "an object"),
    "run": MetaKey(_dict, "an object", nullable=True),
    # loadmem run (docs/run.md)
    "scenario": MetaKey(_text, "text", nullable=True),
    "target": MetaKey(_object_or_text, "text or an object", nullable=True),
    "target_url": MetaKey(_text, "text", nullable=True),
    "phases": MetaKey(_list, "a list", nullable=True),
    "users": MetaKey(_int, "an integer", nullable=True),
    "spawn_rate": MetaKey(_number, "a number", nullable=True),
    "recorded": MetaKey(_bool, "true or false", nullable=True),
    "warnings": MetaKey(_list, "a list", nullable=True),
    "selected": MetaKey(_list, "a list", nullable=True),  # what each selector resolved to
}

#: Keys that must be > 0 when present (a zero interval would divide by zero downstream).
POSITIVE_KEYS = ("interval_s", "interval", "flush_s", "pss_max_age_s", "cpus", "page_size",
                 "clk_tck")


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def check_meta(raw: Any) -> tuple[dict[str, Any], list[str]]:
    """``meta.json``'s parsed JSON -> (the keys of the documented type, notes on the rest)."""
    if not isinstance(raw, dict):
        kind = {list: "a list", str: "a string", type(None): "null"}.get(type(raw), "a number")
        return {}, [f"meta.json holds {kind}, not an object; metadata is unknown"]
    meta: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in raw.items():
        spec = META_KEYS.get(key)
        if spec is None:
            meta[key] = value
            continue
        if value is None and spec.nullable:
            meta[key] = None
            continue
        good = spec.check(value)
        if good is None or (key in POSITIVE_KEYS and good <= 0):
            need = spec.what + (" above 0" if key in POSITIVE_KEYS else "")
            dropped.append(f"{key} is {_shown(value)}, not {need}")
            continue
        meta[key] = good
    notes = [f"meta.json: {d}; ignored" for d in dropped]
    return meta, notes


def read_meta(directory: Path) -> tuple[dict[str, Any], list[str]]:
    """Read and check ``directory/meta.json``: (metadata, notes). Never raises: a missing or
    unreadable file is a note (the tables are the data; metadata only describes them)."""
    path = directory / "meta.json"
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}, ["meta.json is missing; metadata is unknown"]
    except IsADirectoryError:
        return {}, ["meta.json is a directory; metadata is unknown"]
    except OSError as e:
        return {}, [f"unreadable meta.json ({e.strerror or e}); metadata is unknown"]
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        return {}, [f"unreadable meta.json (not valid JSON: {reason}); metadata is unknown"]
    return check_meta(raw)


# --------------------------------------------------------------------------------------
# Table files

#: Columns without which a table cannot answer anything.
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "system": ("t", "MemTotal"),
    "processes": ("t", "tick", "pid", "start_time"),
    "events": ("t", "kind"),
    "requests": ("t",),
    "recorder": ("t",),
    "cgroup": ("t",),
}


def _kind(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        return _kind(t.value_type)
    if pa.types.is_null(t):
        return "null"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_timestamp(t):
        return "timestamp"
    return str(t)


def _compatible(declared: pa.DataType, actual: pa.DataType) -> bool:
    want, have = _kind(declared), _kind(actual)
    if have == "null" or want == have:
        return True
    return want == "float" and have == "integer"  # an integer column read as float is fine


def _system_type(name: str) -> pa.DataType | None:
    return {"ts": pa.timestamp("us", tz="UTC"), "t": pa.float64(), "tick": pa.int32()}.get(
        name, pa.int64())


def damaged_file(path: Path) -> str:
    """Why a file is not a readable Parquet file, in words (for a footer that failed)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(4)
            f.seek(max(size - 4, 0))
            tail = f.read(4)
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if size == 0:
        return "is empty (0 bytes)"
    if head == PARQUET_MAGIC and tail != PARQUET_MAGIC:
        return f"is truncated ({size} bytes, its Parquet footer is missing)"
    if head != PARQUET_MAGIC and tail != PARQUET_MAGIC:
        return f"is not a Parquet file ({size} bytes of something else)"
    return f"is a damaged Parquet file ({size} bytes)"


def check_file(path: Path, table: str) -> str | None:
    """What is wrong with one table file (``None``: nothing), from its footer alone."""
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException, ValueError):
        return damaged_file(path)
    names = schema.names
    missing = [c for c in REQUIRED_COLUMNS.get(table, ()) if c not in names]
    if missing:
        return f"has no column {', '.join(missing)}"
    declared = FIXED_TABLES.get(table)
    for field in schema:
        if declared is not None:
            if declared.get_field_index(field.name) < 0:
                continue  # a column from a newer loadmem: ignored
            want = declared.field(field.name).type
        else:
            want = _system_type(field.name)
        if want is not None and not _compatible(want, field.type):
            return f"has column {field.name} of type {field.type}, expected {want}"
    return None


def file_schema_version(path: Path) -> int | None:
    """The ``loadmem.schema_version`` a file's metadata carries, if any."""
    try:
        metadata = pq.read_schema(path).metadata or {}
        return int(metadata.get(b"loadmem.schema_version", b""))
    except (OSError, pa.ArrowException, ValueError):
        return None


def relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
