"""The bad-input catalogue (issue 14, items 1-3 and 12, and the cases that already held):
real command invocations on bad recordings, bad configs and bad arguments.

Every case runs ``loadmem.cli.main.main([...])``, the code path of the ``loadmem``
executable (``entry_point`` only adds ``sys.exit``; a few cases also go through a real
subprocess of the venv's interpreter, ``test_the_executable_gives_the_same_answers``), and
asserts:

- the exit code (2: bad input; 1: a gate failed; 0: read, analysed, with a note),
- for exit 2: exactly one line on stderr, ``loadmem CMD: error: ...``, naming the problem
  (the file, the key, the line) and what to do,
- no traceback (in-process, an exception other than ``LoadmemError`` fails the test),
- nothing lost: every file of the recording (and of the config) is unchanged.

Bad recordings are made from one good, small, real recording (``loadmem record --pid`` of a
sleeping child, a few seconds, made once per session) copied per case. ``run`` and
``record`` arguments are in ``tests/test_bad_input_run.py``.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from loadmem.cli.main import main

# --------------------------------------------------------------------------------------
# One good recording per session (finalized), and one left in segments (as after a kill)


def _record(out: Path, *extra: str) -> Path:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                               start_new_session=True)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "loadmem", "record", "--pid", str(sleeper.pid),
             "--interval", "0.25s", "--duration", "2s", "--pss-max-age", "1s", "--out",
             str(out), "--label", "good", *extra],
            capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    finally:
        os.killpg(sleeper.pid, signal.SIGKILL)
        sleeper.wait(timeout=10)
    return out


@pytest.fixture(scope="session")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rec = _record(tmp_path_factory.mktemp("bad-input") / "good")
    assert (rec / "processes.parquet").exists() and (rec / "system.parquet").exists()
    return rec


@pytest.fixture(scope="session")
def segmented(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rec = _record(tmp_path_factory.mktemp("bad-input") / "segmented", "--flush", "0.5s",
                  "--no-finalize")
    assert len(list((rec / "processes").glob("*.parquet"))) >= 3
    return rec


# --------------------------------------------------------------------------------------
# Damage, applied to a copy of the good recording

Damage = Callable[[Path], None]


def random_bytes(table: str, n: int = 3000) -> Damage:
    def apply(rec: Path) -> None:
        (rec / f"{table}.parquet").write_bytes(os.urandom(n))
    return apply


def truncated(table: str) -> Damage:
    def apply(rec: Path) -> None:
        f = rec / f"{table}.parquet"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return apply


def emptied(table: str) -> Damage:
    return lambda rec: (rec / f"{table}.parquet").write_bytes(b"")


def deleted(table: str) -> Damage:
    return lambda rec: (rec / f"{table}.parquet").unlink()


def wrong_type(table: str, column: str) -> Damage:
    """The column rewritten as text (a foreign writer, a hand-made file)."""
    def apply(rec: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        f = rec / f"{table}.parquet"
        t = pq.read_table(f)
        i = t.column_names.index(column)
        text = pa.array([str(v) for v in t.column(column).to_pylist()])
        pq.write_table(t.set_column(i, column, text), f)
    return apply


def meta_directory(rec: Path) -> None:
    (rec / "meta.json").unlink()
    (rec / "meta.json").mkdir()


def meta_raw(content: bytes) -> Damage:
    return lambda rec: (rec / "meta.json").write_bytes(content)


def meta_set(**changes: object) -> Damage:
    def apply(rec: Path) -> None:
        meta = json.loads((rec / "meta.json").read_text())
        meta.update(changes)
        (rec / "meta.json").write_text(json.dumps(meta))
    return apply


def meta_gone(rec: Path) -> None:
    (rec / "meta.json").unlink()


def only_meta(rec: Path) -> None:  # killed before its first flush
    for f in rec.iterdir():
        if f.name != "meta.json":
            f.unlink()


def no_tables_but_files(rec: Path) -> None:  # a directory that is not a recording
    for f in rec.iterdir():
        f.unlink()
    (rec / "notes.txt").write_text("hello\n")


def killed(rec: Path) -> None:  # what a SIGKILLed recorder leaves: segments, status recording
    meta_set(status="recording")(rec)


def broken_segment(rec: Path) -> None:
    killed(rec)
    seg = sorted((rec / "processes").glob("*.parquet"))[1]
    seg.write_bytes(seg.read_bytes()[:100])


# --------------------------------------------------------------------------------------
# The cases

@dataclass(frozen=True)
class Case:
    """``argv`` may hold ``{rec}`` (the damaged copy), ``{good}``, ``{tmp}``, ``{cfg}``."""

    id: str
    argv: tuple[str, ...]
    code: int
    error: str | None = None  # exit 2: this text must be in the one stderr line
    out: str | None = None  # this text must be in stdout (a note, a status)
    damage: Damage | None = None
    base: str = "good"  # or "segmented"
    config: bytes | None = None  # written to {cfg}


# Per command: how it is invoked on a recording, and its exit code on a readable one.
COMMANDS: dict[str, tuple[tuple[str, ...], int]] = {
    "analyze": (("analyze", "{rec}", "--fail-on", "never"), 0),
    "gate": (("gate", "{rec}", "--config", "{cfg}"), 0),
    "plot": (("plot", "{rec}", "-o", "{tmp}/p.png"), 0),
    "report": (("report", "{rec}", "-o", "{tmp}/r.html"), 0),
    "compare": (("compare", "{good}", "{rec}"), 0),
}
PASSING_GATE = b'[gates]\nrss = { metric = "watched.rss_end_bytes", max = "1G" }\n'
ALL = tuple(COMMANDS)
FAST = ("analyze", "gate")  # readable cases render no figure here: plot/report on a few

# (id, damage, exit 2 error text or None, stdout note or None, commands, base)
RECORDING_CASES: list[tuple[str, Damage, str | None, str | None, tuple[str, ...], str]] = [
    # item 2: tables that cannot be read name the file
    *[(f"{t}-{how}", dmg(t), f"{t}.parquet {msg}", None, ALL, "good")
      for t in ("system", "processes")
      for how, dmg, msg in (("random-bytes", random_bytes, "is not a Parquet file"),
                            ("truncated", truncated, "is truncated"),
                            ("empty", emptied, "is empty (0 bytes)"))],
    ("system-missing", deleted("system"), "system.parquet and system/ are missing (meta.json "
     "says", None, ALL, "good"),
    ("processes-missing", deleted("processes"), "processes.parquet and processes/ are missing",
     None, ALL, "good"),
    ("processes-wrong-type", wrong_type("processes", "rss"), "processes.parquet has column rss "
     "of type string, expected int64", None, ALL, "good"),
    ("system-wrong-type", wrong_type("system", "MemAvailable"), "system.parquet has column "
     "MemAvailable of type string, expected int64", None, FAST, "good"),
    ("system-t-as-text", wrong_type("system", "t"), "system.parquet has column t of type "
     "string, expected double", None, FAST, "good"),
    ("events-wrong-type", wrong_type("events", "t"), None, "skipped events.parquet: it has "
     "column t of type string", FAST, "good"),
    # other tables: a note, the rest is analysed
    *[(f"{t}-{how}", dmg(t), None, f"skipped {t}.parquet: it {msg}", FAST, "good")
      for t in ("events", "recorder", "cgroup")
      for how, dmg, msg in (("random-bytes", random_bytes, "is not a Parquet file"),
                            ("truncated", truncated, "is truncated"))],
    ("killed-broken-segment", broken_segment, None, "skipped processes/", ALL, "segmented"),
    ("killed-segments", killed, None, "not finished cleanly", FAST, "segmented"),
    # item 1: odd meta.json
    ("meta-list", meta_raw(b"[1, 2, 3]"), None, "meta.json holds a list", ALL, "good"),
    ("meta-string", meta_raw(b'"recording"'), None, "meta.json holds a string", FAST, "good"),
    ("meta-invalid-json", meta_raw(b"{not json"), None, "unreadable meta.json", FAST, "good"),
    ("meta-random-bytes", meta_raw(b"\xff\xfe\x00\x81garbage"), None, "unreadable meta.json",
     FAST, "good"),
    ("meta-missing", meta_gone, None, "meta.json is missing", FAST, "good"),
    ("meta-directory", meta_directory, None, "meta.json is a directory", FAST, "good"),
    ("meta-empty-object", meta_raw(b"{}"), None, None, FAST, "good"),
    ("meta-schema-version-text", meta_set(schema_version="one"), None,
     'schema_version is "one", not an integer', ALL, "good"),
    ("meta-interval-text", meta_set(interval_s="abc"), None, 'interval_s is "abc"', ALL,
     "good"),
    ("meta-interval-zero", meta_set(interval_s=0), None, "interval_s is 0", FAST, "good"),
    ("meta-interval-nan", meta_raw(b'{"schema_version": 1, "interval_s": NaN}'), None,
     "interval_s is NaN", FAST, "good"),
    ("meta-label-number", meta_set(label=12345), None, "12345", ALL, "good"),
    ("meta-label-list", meta_set(label=["a", "b"]), None, 'label is ["a", "b"]', FAST, "good"),
    ("meta-selection-text", meta_set(selection="pid=1"), None, "selection is", FAST, "good"),
    ("meta-rows-text", meta_set(rows="many"), None, 'rows is "many"', FAST, "good"),
    ("meta-status-killed", meta_set(status="recording"), None, "not finished cleanly", FAST,
     "good"),
    ("meta-future-schema", meta_set(schema_version=99), "uses recording schema 99, newer than "
     "this loadmem", None, ALL, "good"),
    # not a recording at all
    ("only-meta", only_meta, "holds no recorded data", None, ALL, "good"),
    ("not-a-recording", no_tables_but_files, "holds no recorded data (no meta.json, no table "
     "file): not a recording", None, ALL, "good"),
    # item 12: a hostile label, read as text
    ("meta-hostile-label", meta_set(label="<b>x</b>\x1b[31m\nred"), None, "\\x1b[31m\\nred",
     FAST, "good"),
]


def _recording_cases() -> list[Case]:
    cases = []
    for name, damage, error, out, commands, base in RECORDING_CASES:
        for cmd in commands:
            argv, ok = COMMANDS[cmd]
            # compare: the damaged one is only a side; plot, report: notes are in the file
            out_here = None if cmd in ("compare", "plot", "report") else out
            cases.append(Case(f"{cmd}:{name}", argv, 2 if error else ok, error, out_here,
                              damage, base, PASSING_GATE))
    return cases


def _gate_config_cases() -> list[Case]:
    """Item 3 and the config errors that already held: each names the file and the line."""
    gate = ("gate", "{rec}", "--config", "{cfg}")

    def cfg(id: str, content: bytes | str, error: str, code: int = 2) -> Case:
        data = content.encode() if isinstance(content, str) else content
        return Case(f"gate-config:{id}", gate, code, error, config=data)

    g = "[gates]\n"
    return [
        cfg("max-nan", g + "rss = { metric = \"watched.rss_end_bytes\", max = nan }\n",
            "loadmem.toml:2: gate 'rss': malformed budget nan for watched.rss_end_bytes "
            "(bytes): budget nan is not a finite number"),
        cfg("max-inf", g + "rss = { metric = \"watched.rss_end_bytes\", max = inf }\n",
            "loadmem.toml:2: gate 'rss': malformed budget inf"),
        cfg("min-nan", g + "\n\nsharing = { metric = \"shared_fraction.end\", min = nan }\n",
            "loadmem.toml:4: gate 'sharing': malformed budget nan"),
        cfg("min-minus-inf", g + "rps = { min = -inf }\n", "loadmem.toml:2: gate 'rps'"),
        cfg("nan-string", g + "failure_ratio = { max = \"nan%\" }\n",
            "budget 'nan%' is not a finite number"),
        cfg("huge-float", g + "rps = { min = 1e999 }\n", "is not a finite number"),
        cfg("utf16-bom", codecs.BOM_UTF16_LE + (g + "rss = { max = \"1G\" }\n")
            .encode("utf-16-le"), "loadmem.toml:1: the file is UTF-16 (it starts with a "
            "UTF-16 byte-order mark); TOML files are UTF-8 (save it as UTF-8)"),
        cfg("utf16-be-bom", codecs.BOM_UTF16_BE + g.encode("utf-16-be"), "the file is UTF-16"),
        cfg("latin1", b"[gates]\n# caf\xe9\nrss = { max = \"1G\" }\n",
            "loadmem.toml:2: not UTF-8 (byte 0xe9)"),
        cfg("latency-size", g + "p95 = { max = \"250M\" }\n",
            "loadmem.toml:2: gate 'p95': malformed budget '250M' for latency.p95_ms (ms): "
            "latency budget '250M' is a size or minutes"),
        cfg("latency-minutes", g + "p95 = { max = \"1m\" }\n", "latency budget '1m' is not in "
            "ms or s"),
        cfg("latency-bare-number", g + "p95 = { max = 250 }\n", "latency budget 250 has no "
            "unit"),
        cfg("fraction-over-100", g + "sharing = { metric = \"shared_fraction.end\", "
            "min = \"140%\" }\n", "loadmem.toml:2: gate 'sharing': malformed budget '140%' for "
            "shared_fraction.end (ratio): '140%' is not a fraction"),
        cfg("fraction-negative", g + "failure_ratio = { max = \"-5%\" }\n", "is not a fraction"),
        cfg("duration-size", g + "tte = { metric = \"cow.time_to_exhaust_s\", min = \"5G\" }\n",
            "'5G' is a size, not a duration"),
        cfg("size-as-duration", g + "memory_growth = { max = \"5min\" }\n", "invalid size"),
        cfg("budget-list", g + "rss = { max = [1, 2] }\n", "budget must be a number or a "
            "string"),
        cfg("budget-bool", g + "rss = { max = true }\n", "budget must be a number or a string"),
        cfg("unknown-metric", g + "leak = { metric = \"heap.size\", max = \"1G\" }\n",
            "loadmem.toml:2: gate 'leak': unknown metric 'heap.size'"),
        cfg("unknown-key", g + "rss = { max = \"1G\", maximum = \"2G\" }\n",
            "gate 'rss': unknown key 'maximum'"),
        cfg("max-and-min", g + "rss = { max = \"1G\", min = \"1M\" }\n",
            "give exactly one of max or min (found 2)"),
        cfg("neither", g + "rss = { description = \"x\" }\n", "found 0"),
        cfg("not-a-table", g + "rss = \"1G\"\n", "gate 'rss' must be a table"),
        cfg("missing-value", g + "rss = { max = \"1G\", missing = \"maybe\" }\n",
            "missing must be 'fail' or 'skip'"),
        cfg("invalid-toml", g + "rss = { max = \"1G\" \n", "loadmem.toml:2: invalid TOML"),
        cfg("duplicate-key", g + "rss = { max = \"1G\" }\nrss = { max = \"2G\" }\n",
            "loadmem.toml:3: invalid TOML"),
        cfg("no-gates-table", "[other]\nx = 1\n", "has no [gates] table"),
        cfg("gates-not-table", "gates = 3\n", "[gates] must be a table"),
        cfg("compare-nan", "[compare]\nfail_on_regression = \"nan\"\n", "invalid percentage "
            "'nan'"),
        cfg("empty-file", b"", "has no [gates] table"),
        # the ones that work: a UTF-8 byte-order mark (Windows editors), a growth over 100 %
        cfg("utf8-bom", codecs.BOM_UTF8 + PASSING_GATE, "", code=0),
        cfg("growth-over-100", g + "pss = { metric = \"watched.pss_growth_ratio\", "
            "max = \"150%\" }\n", "", code=0),
        Case("gate-config:missing-file", ("gate", "{rec}", "--config", "{tmp}/nope.toml"), 2,
             "no gates config at"),
        Case("gate-config:directory", ("gate", "{rec}", "--config", "{tmp}"), 2,
             "is a directory, not a gates config"),
    ]


def _gate_damage_cases() -> list[Case]:
    """Gates on damaged data fail (exit 1), even when the gate says missing = "skip"."""
    skip = (b'[gates]\np95 = { max = "250ms", missing = "skip" }\n'
            b'failure_ratio = { max = "1%", missing = "skip" }\n')
    return [
        Case("gate:requests-damaged-fails-despite-skip", ("gate", "{rec}", "--config", "{cfg}"),
             1, None, "not measured: its data is damaged (requests.parquet is not a Parquet "
             "file", random_bytes("requests"), config=skip),
        Case("gate:no-requests-table-skips", ("gate", "{rec}", "--config", "{cfg}"), 0, None,
             "SKIP", config=skip),
        Case("gate:requests-missing-though-meta-says-rows", ("gate", "{rec}", "--config",
             "{cfg}"), 1, None, "requests.parquet is missing (meta.json says 40 rows were "
             "written)", meta_set(rows={"system": 9, "processes": 9, "requests": 40}),
             config=skip),
        Case("gate:default-gates-on-damaged-requests", ("gate", "{rec}"), 1, None,
             "its data is damaged", random_bytes("requests")),
    ]


def _argument_cases() -> list[Case]:
    """Paths, windows and options of analyze/plot/report/gate/compare/ls."""
    cases: list[Case] = []
    for cmd in ALL:
        argv, _ = COMMANDS[cmd]
        missing = tuple("{tmp}/nothing-here" if a == "{rec}" else a for a in argv)
        a_file = tuple("{tmp}/a-file.txt" if a == "{rec}" else a for a in argv)
        empty_dir = tuple("{tmp}/empty" if a == "{rec}" else a for a in argv)
        cases += [
            Case(f"{cmd}:missing-path", missing, 2, "no recording at", config=PASSING_GATE),
            Case(f"{cmd}:a-file", a_file, 2, "is a file, not a recording directory",
                 config=PASSING_GATE),
            Case(f"{cmd}:empty-directory", empty_dir, 2, "holds no recorded data",
                 config=PASSING_GATE),
        ]
    for cmd in ("analyze", "plot", "report", "gate"):
        argv, _ = COMMANDS[cmd]
        for window, error in (("5x:", "invalid duration '5x'"),
                              ("10m:1m", "window end before start in '10m:1m' (1m00s < "
                                         "10m00s) (write the start first: --window 1m:10m)"),
                              ("9h:10h", "window '9h:10h' is outside the recording"),
                              ("nosuchphase", "unknown window 'nosuchphase'")):
            cases.append(Case(f"{cmd}:window-{window}", (*argv, "--window", window), 2, error,
                              config=PASSING_GATE))
    cases += [
        Case("plot:unknown-format", ("plot", "{rec}", "-o", "{tmp}/p.xyz"), 2,
             "unknown format .xyz"),
        Case("report:unwritable", ("report", "{rec}", "-o", "/proc/loadmem-no/r.html"), 2,
             "cannot write /proc/loadmem-no/r.html"),
        Case("gate:junit-unwritable", ("gate", "{rec}", "--config", "{cfg}", "--junit",
             "/proc/loadmem-no/j.xml"), 2, "/proc/loadmem-no/j.xml", config=PASSING_GATE),
        Case("compare:one-recording", ("compare", "{rec}"), 2, "needs at least two recordings"),
        Case("compare:base-too-large", ("compare", "{good}", "{rec}", "--base", "2"), 2,
             "--base 2 leaves no recording on one side"),
        Case("compare:bad-percentage", ("compare", "{good}", "{rec}", "--fail-on-regression",
             "abc"), 2, "invalid percentage 'abc'"),
        Case("compare:bad-base", ("compare", "{good}", "{rec}", "--base", "x"), 2,
             "argument --base: invalid int value: 'x'"),
        Case("compare:config-latency-size", ("compare", "{good}", "{rec}", "--config", "{cfg}"),
             2, "loadmem.toml:2: compare budget 'p95'",
             config=b'[compare]\nbudgets = { "p95" = "250M" }\n'),
        # argparse: one line too, with the pointer to --help
        Case("analyze:no-recording", ("analyze",), 2, "the following arguments are required: "
             "RECORDING (see loadmem analyze --help)"),
        Case("analyze:bad-fail-on", ("analyze", "{rec}", "--fail-on", "sometimes"), 2,
             "argument --fail-on: invalid choice: 'sometimes'"),
        Case("analyze:json-and-markdown", ("analyze", "{rec}", "--json", "--markdown"), 2,
             "not allowed with argument"),
        Case("plot:no-value", ("plot", "{rec}", "--window"), 2, "expected one argument"),
        Case("report:unknown-option", ("report", "{rec}", "--colour"), 2,
             "unrecognized arguments: --colour"),
        Case("gate:no-recording", ("gate", "--config", "{cfg}"), 2, "required: recording",
             config=PASSING_GATE),
        Case("ls:two-directories", ("ls", "{tmp}", "{tmp}"), 2, "unrecognized arguments"),
        Case("compare:damaged-base", ("compare", "{rec}", "{good}"), 2,
             "processes.parquet is not a Parquet file", damage=random_bytes("processes")),
        Case("ls:missing-directory", ("ls", "{tmp}/nothing-here"), 2, "no such directory"),
        Case("ls:a-file", ("ls", "{tmp}/a-file.txt"), 2, "is not a directory"),
    ]
    return cases


def _ls_cases() -> list[Case]:
    """``loadmem ls`` lists a bad recording as damaged (or with its note) and goes on."""
    ls = ("ls", "{tmp}/recordings")
    return [
        Case("ls:processes-random-bytes", ls, 0, None, "damaged (processes.parquet is not a "
             "Parquet file", random_bytes("processes")),
        Case("ls:system-truncated", ls, 0, None, "damaged (system.parquet is truncated",
             truncated("system")),
        Case("ls:meta-list", ls, 0, None, "meta.json holds a list", meta_raw(b"[1]")),
        Case("ls:meta-label-number", ls, 0, None, "12345", meta_set(label=12345)),
        Case("ls:meta-start-iso-list", ls, 0, None, "start_iso is [1]", meta_set(start_iso=[1])),
        Case("ls:meta-invalid-json", ls, 0, None, "unreadable meta.json", meta_raw(b"{")),
        Case("ls:future-schema", ls, 0, None, "damaged (", meta_set(schema_version=99)),
        Case("ls:hostile-label", ls, 0, None, "\\x1b[31m", meta_set(label="\x1b[31mred")),
    ]


CASES = [*_recording_cases(), *_gate_config_cases(), *_gate_damage_cases(),
         *_argument_cases(), *_ls_cases()]


# --------------------------------------------------------------------------------------
# Running one case

def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@dataclass
class Setup:
    tmp: Path
    rec: Path
    cfg: Path
    good: Path
    before: dict[str, str] = field(default_factory=dict)

    def argv(self, case: Case) -> list[str]:
        return [a.format(rec=self.rec, good=self.good, tmp=self.tmp, cfg=self.cfg)
                for a in case.argv]


def _setup(case: Case, tmp_path: Path, good: Path, segmented: Path) -> Setup:
    source = good if case.base == "good" else segmented
    recordings = tmp_path / "recordings"
    rec = recordings / "rec"
    shutil.copytree(source, rec)
    if case.id.startswith("ls:"):  # ls goes on past the bad one: a good one next to it
        shutil.copytree(good, recordings / "zz-good")
    if case.damage is not None:
        case.damage(rec)
    cfg = tmp_path / "loadmem.toml"
    if case.config is not None:
        cfg.write_bytes(case.config)
    (tmp_path / "a-file.txt").write_text("not a recording\n")
    (tmp_path / "empty").mkdir()
    s = Setup(tmp_path, rec, cfg, good)
    s.before = _snapshot(tmp_path)
    return s


def _check(case: Case, s: Setup, code: int, out: str, err: str) -> None:
    assert "Traceback" not in out + err
    assert code == case.code, f"exit {code}, expected {case.code}\nstdout: {out}\nstderr: {err}"
    if case.code == 2:
        lines = err.splitlines()
        assert len(lines) == 1 and err.endswith("\n"), f"not one line on stderr: {err!r}"
        cmd = case.argv[0]
        assert lines[0].startswith(f"loadmem {cmd}: error: "), lines[0]
        assert (case.error or "") in lines[0], lines[0]
    elif case.out is not None:
        assert case.out in out + err, f"{case.out!r} not in\n{out}\n{err}"
    for stream in (out, err):
        assert "\x1b" not in stream
    after = _snapshot(s.tmp)
    lost = {k: v for k, v in s.before.items() if after.get(k) != v}
    assert not lost, f"files changed or lost: {sorted(lost)}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, good: Path, segmented: Path,
                   capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    s = _setup(case, tmp_path, good, segmented)
    monkeypatch.chdir(tmp_path / "empty")  # no loadmem.toml / pyproject.toml above by accident
    try:
        code = main(s.argv(case))
    except SystemExit as e:  # argparse
        code = int(e.code or 0)
    captured = capsys.readouterr()
    _check(case, s, code, captured.out, captured.err)


# A few cases through the real executable, to prove main() is what users run.
EXECUTABLE_CASES = ["analyze:processes-truncated", "analyze:meta-list",
                    "gate-config:latency-size", "ls:processes-random-bytes"]


@pytest.mark.parametrize("case_id", EXECUTABLE_CASES)
def test_the_executable_gives_the_same_answers(case_id: str, tmp_path: Path, good: Path,
                                               segmented: Path) -> None:
    case = next(c for c in CASES if c.id == case_id)
    s = _setup(case, tmp_path, good, segmented)
    done = subprocess.run([sys.executable, "-m", "loadmem", *s.argv(case)], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path / "empty")
    _check(case, s, done.returncode, done.stdout, done.stderr)


def test_the_catalogue_covers_every_command_and_item() -> None:
    ids = {c.id for c in CASES}
    for cmd in ("analyze", "plot", "report", "gate", "compare", "ls"):
        assert any(i.startswith(f"{cmd}:") for i in ids), cmd
    for needed in ("analyze:meta-schema-version-text", "gate:meta-list", "ls:meta-list",
                   "analyze:meta-interval-text", "ls:meta-label-number",  # item 1
                   "analyze:processes-random-bytes", "analyze:processes-truncated",
                   "gate:processes-random-bytes", "analyze:system-missing",  # item 2
                   "gate-config:max-nan", "gate-config:max-inf", "gate-config:utf16-bom",
                   "gate-config:min-nan", "gate-config:latency-size",
                   "gate-config:fraction-over-100",  # item 3
                   "analyze:meta-hostile-label", "ls:hostile-label"):  # item 12
        assert needed in ids, needed
