"""docs/recording-format.md cannot drift from the schema, and its promises hold for real.

1. Every column declared in ``loadmem/recording/schema.py`` is documented with its Arrow
   type (and nothing is documented that the schema lacks); every meminfo field of the
   captured fixtures has its column documented; every ``meta.json`` key a real recording
   carries is documented; every event kind too.
2. A real recording made by ``loadmem record`` (a parent with 16 MiB touched and two forked
   children) opens in pandas, DuckDB and ``pyarrow.dataset``, both finished (merged files)
   and half-written (the recorder SIGKILLed: segment directories and a stray ``.tmp``), with
   the same rows ``open_recording`` sees; the Python snippets of the doc run as written.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from loadmem.procfs.meminfo import parse_meminfo
from loadmem.recording import open_recording
from loadmem.recording import schema as S

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "recording-format.md"
FIXTURES = ROOT / "tests" / "fixtures" / "proc"
DOC_PATH = "recordings/record-20261125T214700Z"  # the example path the doc's snippets use


# --- parsing the doc --------------------------------------------------------------------


def _doc() -> str:
    return DOC.read_text()


def _section(title: str) -> str:
    """The text under a ``### `title` `` (or ``## title``) heading, up to the next heading."""
    text = _doc()
    m = re.search(rf"^(#+) `?{re.escape(title)}`?\s*$", text, re.MULTILINE)
    assert m, f"docs/recording-format.md has no section for {title!r}"
    level = len(m.group(1))
    nxt = re.compile(rf"^#{{1,{level}}} ", re.MULTILINE).search(text, m.end())
    return text[m.end() : nxt.start() if nxt else len(text)]


def _table_rows(section: str, first_header: str) -> list[list[str]]:
    """Rows of the first markdown table in ``section`` whose first header cell matches."""
    lines = section.splitlines()
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_header:
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append([c.strip() for c in row.strip().strip("|").split("|")])
            return rows
    raise AssertionError(f"no table starting with {first_header!r}")


def _names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def arrow_type_name(t: pa.DataType) -> str:
    """The type names the doc uses."""
    if pa.types.is_dictionary(t):
        return f"dictionary<{t.value_type}>"
    if pa.types.is_timestamp(t):
        return f"timestamp[{t.unit}, {t.tz}]"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_floating(t):
        return {16: "float16", 32: "float32", 64: "float64"}[t.bit_width]
    return str(t)


def documented_columns(table: str) -> dict[str, str]:
    """column -> documented type, from the table's section."""
    out: dict[str, str] = {}
    for row in _table_rows(_section(table), "column"):
        for name in _names(row[0]):
            out[name] = row[1]
    return out


# --- the doc against the schema ---------------------------------------------------------


@pytest.mark.parametrize("table", sorted(S.FIXED_TABLES))
def test_every_schema_column_is_documented_with_its_type(table):
    documented = documented_columns(table)
    schema = S.FIXED_TABLES[table]
    missing = [f.name for f in schema if f.name not in documented]
    assert not missing, f"columns of {table} missing from docs/recording-format.md: {missing}"
    extra = sorted(set(documented) - set(schema.names))
    assert not extra, f"docs/recording-format.md documents {table} columns not in schema: {extra}"
    wrong = {
        f.name: (documented[f.name], arrow_type_name(f.type))
        for f in schema
        if documented[f.name] != arrow_type_name(f.type)
    }
    assert not wrong, f"{table}: documented type != schema type: {wrong}"


def test_system_common_columns_and_every_meminfo_field():
    rows = _table_rows(_section("system"), "column")
    common = {n: r[1] for r in rows for n in _names(r[0])}
    for f in S.system_schema([]):
        assert common.get(f.name) == arrow_type_name(f.type), f.name
    meminfo_rows = _table_rows(_section("system"), "column")  # first table: common columns
    assert meminfo_rows
    # the second table of the section lists the meminfo columns
    section = _section("system")
    second = section[section.index("The fields of a") :]
    documented = {n for r in _table_rows(second, "column") for n in _names(r[0])}
    for fixture in ("meminfo", "meminfo_old_kernel"):
        keys = parse_meminfo((FIXTURES / fixture).read_text())
        assert len(keys) > 20
        missing = [S.meminfo_column(k) for k in keys if S.meminfo_column(k) not in documented]
        assert not missing, f"meminfo columns ({fixture}) missing from the doc: {missing}"


def test_meminfo_naming_rule_examples_match_the_code():
    examples = re.findall(r"`([^`]+)` -> `([^`]+)`", _section("system"))
    assert len(examples) >= 3
    for key, column in examples:
        assert S.meminfo_column(key) == column


def test_every_smaps_field_and_event_kind_and_the_version_are_documented():
    processes = _section("processes")
    for kernel_name, column in S.SMAPS_COLUMNS.items():
        assert f"`{kernel_name}`" in processes, kernel_name
        assert f"`{column}`" in processes, column
    kinds = {n for r in _table_rows(_section("events"), "kind") for n in _names(r[0])}
    assert kinds == set(S.EVENT_KINDS)
    assert f"**Schema version {S.SCHEMA_VERSION}.**" in _doc()
    assert f"now **{S.SCHEMA_VERSION}**" in _doc()


# --- real recordings --------------------------------------------------------------------

PARENT = textwrap.dedent(
    """
    import os, signal, sys, time
    signal.alarm(120)
    buf = bytearray(16 << 20)
    buf[::4096] = b"\\x01" * len(range(0, len(buf), 4096))
    for _ in range(2):
        if os.fork() == 0:
            signal.alarm(120)
            while True:
                signal.pause()
    print("ready", flush=True)
    while True:
        signal.pause()
    """
)


@pytest.fixture(scope="module")
def process_tree():
    # a secret on the command line: the recording must hold it redacted
    p = subprocess.Popen([sys.executable, "-c", PARENT, "--password=hunter2"],
                         stdout=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    yield p.pid
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=10)


def _record(out: Path, pid: int, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "loadmem", "record", "--pid", str(pid), "--interval", "0.2s",
           "--out", str(out), *extra]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def finished(process_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "rec"
    p = _record(out, process_tree, "--duration", "2s", "--flush", "0.5s")
    _, err = p.communicate(timeout=90)
    assert p.returncode == 0, err
    return out


@pytest.fixture(scope="module")
def killed(process_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("killed") / "rec"
    p = _record(out, process_tree, "--duration", "60s", "--flush", "0.3s")
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:  # until a few segments are on disk
            if len(list((out / "processes").glob("*.parquet"))) >= 3:
                break
            assert p.poll() is None, p.communicate()[1]
            time.sleep(0.1)
        else:
            pytest.fail("the recorder wrote no segments within 60 s")
    finally:
        p.kill()
        p.communicate(timeout=30)
    # what a kill in the middle of a segment write leaves behind: readers must skip it
    (out / "processes" / ".rec-999999.parquet.tmp").write_bytes(b"PAR1 half a segment")
    return out


def test_real_meta_json_keys_are_documented(finished, killed):
    meta_rows = _table_rows(_section("`meta.json`"), "key")
    documented = {n for r in meta_rows for n in _names(r[0])}
    for rec in (finished, killed):
        meta = json.loads((rec / "meta.json").read_text())
        missing = sorted(set(meta) - documented)
        assert not missing, f"meta.json keys missing from the doc: {missing}"
    meta = json.loads((finished / "meta.json").read_text())
    assert meta["status"] == "complete" and meta["schema_version"] == S.SCHEMA_VERSION
    selection_row = next(r for r in meta_rows if "`selection`" in r[0])
    for key in meta["selection"]:
        assert f'"{key}"' in selection_row[2], f"selection key {key} not documented"
    assert json.loads((killed / "meta.json").read_text())["status"] == "recording"


def test_finished_layout_matches_the_doc(finished):
    for table in ("system", "processes", "recorder", "events"):
        assert (finished / f"{table}.parquet").is_file(), table
        assert not (finished / table).exists(), f"{table} segments left after the merge"
    md = ds.dataset(finished / "processes.parquet").schema.metadata
    assert md[b"loadmem.schema_version"] == str(S.SCHEMA_VERSION).encode()
    assert md[b"loadmem.table"] == b"processes"


def test_killed_layout_matches_the_doc(killed):
    assert not (killed / "processes.parquet").exists()
    assert len(list((killed / "processes").glob("*.parquet"))) >= 3
    assert len(list((killed / "system").glob("rec-*.parquet"))) >= 1


def _expected(rec_dir: Path, table: str) -> pa.Table:
    rec = open_recording(rec_dir)
    t = rec.table(table)
    assert t.num_rows > 0, table
    return t


def _source(rec_dir: Path, table: str) -> str:
    merged = rec_dir / f"{table}.parquet"
    return str(merged if merged.exists() else rec_dir / table)


@pytest.mark.parametrize("which", ["finished", "killed"])
def test_pyarrow_dataset_reads_it(which, request):
    rec_dir = request.getfixturevalue(which)
    for table in ("processes", "system", "recorder"):
        expected = _expected(rec_dir, table)
        got = ds.dataset(_source(rec_dir, table), format="parquet").to_table()
        assert got.num_rows == expected.num_rows, table
        assert set(expected.column_names) <= set(got.column_names)
    procs = ds.dataset(_source(rec_dir, "processes")).to_table(
        columns=["pid", "role", "pss"], filter=ds.field("role") == "target"
    )
    assert len(set(procs.column("pid").to_pylist())) == 3  # the parent and its 2 children


@pytest.mark.parametrize("which", ["finished", "killed"])
def test_pandas_reads_it(which, request):
    pd = pytest.importorskip("pandas")
    rec_dir = request.getfixturevalue(which)
    expected = _expected(rec_dir, "processes")
    df = pd.read_parquet(_source(rec_dir, "processes"))
    assert len(df) == expected.num_rows
    assert set(df.role.astype(str)) == {"target"}
    assert df.pid.nunique() == 3
    cmdlines = set(df.cmdline.astype(str))
    assert all("--password=***" in c and "hunter2" not in c for c in cmdlines), cmdlines
    assert int(df.pss.sum()) == sum(v or 0 for v in expected.column("pss").to_pylist())
    # the parent touched 16 MiB, shared with its children: its RSS holds them
    assert df.rss.max() >= 16 << 20
    system = pd.read_parquet(_source(rec_dir, "system"))
    assert (system.MemAvailable > 0).all() and (system.MemTotal >= system.MemAvailable).all()


@pytest.mark.parametrize("which", ["finished", "killed"])
def test_duckdb_reads_it(which, request):
    duckdb = pytest.importorskip("duckdb")
    rec_dir = request.getfixturevalue(which)
    expected = _expected(rec_dir, "processes")
    merged = rec_dir / "processes.parquet"
    src = str(merged) if merged.exists() else str(rec_dir / "processes" / "*.parquet")
    rows, pids, pss = duckdb.sql(
        f"select count(*), count(distinct pid), sum(pss) from read_parquet('{src}') "
        "where role = 'target'"
    ).fetchall()[0]
    assert rows == expected.num_rows and pids == 3
    assert pss == sum(v or 0 for v in expected.column("pss").to_pylist())
    if which == "finished":  # the doc's example, verbatim apart from the path
        n = duckdb.sql(
            f"select count(*) from read_parquet('{rec_dir}/processes.parquet')"
        ).fetchall()[0][0]
        assert n == expected.num_rows


def _snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", _doc(), re.DOTALL)


def test_the_docs_python_snippets_run(finished, killed, tmp_path):
    """Every Python snippet of the doc runs against a real recording, as written."""
    pytest.importorskip("pandas")
    pytest.importorskip("duckdb")
    snippets = _snippets()
    assert len(snippets) >= 4
    for code in snippets:
        # each snippet names the example recording; killed-recording lines read segments
        code = code.replace(DOC_PATH, str(finished)).replace("'rec/", f"'{finished}/")
        code = re.sub(r"(pd\.read_parquet\(\")" + re.escape(str(finished)) + r"/processes\"\)",
                      rf'\1{killed}/processes")', code)  # fmt: skip
        code = code.replace(f"{finished}/processes/*.parquet", f"{killed}/processes/*.parquet")
        exec(compile(code, "docs/recording-format.md", "exec"), {"__name__": "doc_snippet"})
