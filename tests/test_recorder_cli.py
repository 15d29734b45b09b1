"""`loadmem record` on the command line: errors are one line and exit 2, help teaches, the
control channel used by `loadmem run` works."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadmem.cli.main import main
from loadmem.recording import open_recording


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loadmem", "record", *args],
                          capture_output=True, text=True, timeout=60, **kw)


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--pid", "999999999"], "no process with pid 999999999"),
        (["--out", "/proc/loadmem-nope/rec", "--duration", "1"], "cannot write to output"),
        (["--match", "("], "invalid --match regular expression"),
        (["--interval", "0"], "--interval must be at least 50ms"),
        (["--interval", "10ms"], "--interval must be at least 50ms"),
        (["--pss-budget", "0%", "--duration", "1"], "--pss-budget must be more than 0%"),
    ],
)
def test_errors_are_one_line_exit_2(args, expect, tmp_path, capsys):
    if "--out" not in args:
        args = [*args, "--out", str(tmp_path / "rec")]
    assert main(["record", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("loadmem record: error: ") and expect in err
    assert not (tmp_path / "rec").exists()  # nothing written for bad input


@pytest.mark.parametrize("args", [["--duration", "abc"], ["--interval", "-1s"],
                                  ["--port", "70000"], ["--pid", "x"]])
def test_bad_option_values_exit_2(args, tmp_path):
    r = _cli(*args, "--out", str(tmp_path / "rec"))
    assert r.returncode == 2
    errors = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and args[0] in errors[0]


def test_help_explains_every_option():
    r = _cli("--help")
    assert r.returncode == 0
    for opt in ("--pid", "--match", "--port", "--duration", "--interval", "--pss-budget",
                "--pss-max-age", "--out", "--flush", "--label", "--no-redact", "--force"):
        assert opt in r.stdout
    for hidden in ("--control-stdin", "--status-stdout", "--no-finalize"):
        assert hidden not in r.stdout
    assert "examples:" in r.stdout


def test_existing_recording_needs_force(tmp_path):
    out = tmp_path / "rec"
    assert _cli("--duration", "0.3s", "--interval", "0.1s", "--out", str(out)).returncode == 0
    r = _cli("--duration", "0.3s", "--out", str(out))
    assert r.returncode == 2 and "already holds a recording" in r.stderr
    first = open_recording(out).table("system").num_rows
    assert _cli("--duration", "0.1s", "--interval", "0.1s", "--out", str(out),
                "--force").returncode == 0
    assert open_recording(out).table("system").num_rows < first  # replaced, not mixed


def test_system_only_recording_and_redacted_argv(tmp_path):
    out = tmp_path / "rec"
    r = _cli("--duration", "0.4s", "--interval", "0.1s", "--out", str(out), "--label",
             "password=hunter2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == f"next: loadmem analyze {out}"
    rec = open_recording(out)
    assert rec.complete and rec.table("processes").num_rows == 0
    assert rec.table("system").num_rows >= 4
    assert any(e["data"]["reason"] == "no-selection" for e in rec.events("warning"))
    assert "hunter2" not in json.dumps(rec.meta["argv"])
    for key in ("host", "kernel", "page_size", "clk_tck", "boot_time", "start_epoch",
                "start_monotonic", "interval_s", "selection", "loadmem_version",
                "schema_version"):
        assert rec.meta[key] is not None, key


def test_control_channel(tmp_path):
    """What `loadmem run` does: start with --control-stdin --status-stdout --no-finalize, add
    a load generator with a watch message, read status lines, stop with {"stop": true}."""
    loadgen = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    out = tmp_path / "rec"
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadmem", "record", "--out", str(out), "--interval", "0.1s",
         "--control-stdin", "--status-stdout", "--no-finalize"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        status = json.loads(proc.stdout.readline())
        assert set(status) == {"t", "tick", "mem_total", "mem_available", "mem_free",
                               "sum_rss", "sum_pss", "processes"}
        assert status["processes"] == 0 and status["mem_total"] > 0
        meta = json.loads((out / "meta.json").read_text())
        assert meta["status"] == "recording" and meta["start_monotonic"] > 0
        proc.stdin.write(json.dumps({"watch": {"pid": loadgen.pid, "role": "loadgen"}}) + "\n")
        proc.stdin.write("not json\n")
        proc.stdin.flush()
        for _ in range(5):
            status = json.loads(proc.stdout.readline())
        assert status["processes"] == 0  # sums cover role "target" only
        proc.stdin.write(json.dumps({"stop": True}) + "\n")
        proc.stdin.flush()
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        loadgen.kill()
        loadgen.wait()
    assert proc.returncode == 0, err
    assert all(json.loads(line) for line in rest.splitlines())  # stdout stays JSON lines
    assert "loadmem analyze" in err
    rec = open_recording(out)
    assert rec.meta["stop_reason"] == "stop command" and rec.meta["finalized"] is False
    assert (out / "processes").is_dir() and not (out / "processes.parquet").exists()
    rows = [r for r in rec.table("processes").to_pylist() if r["pid"] == loadgen.pid]
    assert rows and {(r["role"], r["depth"]) for r in rows} == {("loadgen", 0)}
    assert any(e["data"].get("reason") == "control:invalid" for e in rec.events("warning"))


def test_control_channel_eof_stops_cleanly(tmp_path):
    out = tmp_path / "rec"
    r = subprocess.run(
        [sys.executable, "-m", "loadmem", "record", "--out", str(out), "--interval", "0.1s",
         "--control-stdin"],
        input="", capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0, r.stderr
    rec = open_recording(Path(out))
    # The controller vanished without a stop command: everything is kept and merged, and
    # the recording says the run around it did not finish.
    assert rec.meta["status"] == "incomplete" and rec.meta["finalized"]
    assert rec.meta["stop_reason"].startswith("control channel closed")


def test_ctrl_c_stops_cleanly_and_tty_progress(tmp_path):
    """SIGINT (Ctrl-C) is the normal end of an open-ended recording: complete, merged. On a
    terminal, a one-line progress display is redrawn in place on stderr."""
    import os
    import pty
    import signal
    import time

    out = tmp_path / "rec"
    main_fd, sub_fd = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadmem", "record", "--out", str(out), "--interval", "0.1s"],
        stdout=subprocess.PIPE, stderr=sub_fd, text=True,
    )
    os.close(sub_fd)
    seen = b""
    deadline = time.monotonic() + 30
    while seen.count(b"\r") < 3 and time.monotonic() < deadline:
        seen += os.read(main_fd, 4096)
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=60)
    os.close(main_fd)
    assert proc.returncode == 0
    assert b"recording " in seen and b"available" in seen and seen.count(b"\n") == 0
    assert f"next: loadmem analyze {out}" in stdout
    rec = open_recording(out)
    assert rec.complete and rec.meta["stop_reason"] == "signal SIGINT"
    assert (out / "system.parquet").exists() and not (out / "system").exists()


def test_output_lost_mid_recording_is_one_line_exit_2(tmp_path):
    import shutil
    import time

    out = tmp_path / "rec"
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadmem", "record", "--out", str(out), "--interval", "0.1s",
         "--flush", "0.3s", "--duration", "60s", "--status-stdout"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        json.loads(proc.stdout.readline())
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            for d in out.iterdir():  # the segment directories vanish under the recorder
                if d.is_dir():
                    shutil.rmtree(d, ignore_errors=True)
            time.sleep(0.05)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2
    assert err.count("\n") == 1 and "cannot write the recording" in err
    meta = json.loads((out / "meta.json").read_text())  # rewritten: says what happened
    assert meta["status"] == "interrupted" and "cannot write" in meta["stop_reason"]


def test_recorder_process_keeps_pandas_out():
    """The recorder's own memory is part of what it measures: pyarrow must not drag pandas
    (tens of MB) into it, and pandas must still work when asked for explicitly."""
    code = (
        "import sys, pyarrow as pa\n"
        "from loadmem.recorder.recorder import keep_pandas_out\n"
        "keep_pandas_out()\n"
        "t = pa.Table.from_pylist([{'a': 1, 'b': 'x'}])\n"
        "assert 'pandas' not in sys.modules, 'pyarrow imported pandas'\n"
        "assert t.to_pandas().shape == (1, 2)\n"  # explicit use still imports it
        "assert 'pandas' in sys.modules\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
