"""CI output of `loadmem run`: heartbeat without a terminal, GitHub step summary and
annotations, `--json`; and the load that did not happen counts as a failure.

Real runs with stdout/stderr captured (pipes: not a terminal) and a temporary
`GITHUB_STEP_SUMMARY` file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from _run_support import http_server, loadmem_cmd, write_scenario

from loadmem.load.status import Heartbeat, heartbeat_text

pytestmark = pytest.mark.slow
MiB = 1 << 20

RAISING = textwrap.dedent('''
    from locust import FastHttpUser, constant, task


    class Broken(FastHttpUser):
        wait_time = constant(0.1)

        @task
        def index(self):
            self.client.get("/")
            raise KeyError("the basket is empty")
''')


def _run(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(loadmem_cmd(*args), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **env})


def test_heartbeat_summary_annotations_and_json(tmp_path: Path):
    failing = write_scenario(tmp_path, RAISING, name="raising.py")
    good = write_scenario(tmp_path, name="good.py", wait=0.05)
    summary = tmp_path / "step-summary.md"
    summary.write_text("earlier steps' summary\n")
    with http_server() as (_srv, port):
        url = f"http://127.0.0.1:{port}"
        common = ["--target", url, "-u", "2", "--baseline", "1s", "--observe", "2s",
                  "--interval", "0.5s", "--heartbeat", "1s"]
        a = _run([str(failing), *common, "--load", "3s", "--out", str(tmp_path / "a")],
                 {"GITHUB_STEP_SUMMARY": str(summary), "GITHUB_ACTIONS": "true"})
        b = _run([str(good), *common, "--load", "3s", "--out", str(tmp_path / "b"), "--json",
                  "--fail-on", "never"], {})
        a_out, a_err = a.communicate(timeout=120)
        b_out, b_err = b.communicate(timeout=120)

    # A: tasks that raise -> Locust exits 1 (--exit-code-on-error), so does loadmem run
    assert a.returncode == 1, a_err + a_out
    assert "load failed: Locust exited with code 1" in a_err
    assert "KeyError" in a_err and "the basket is empty" in a_err  # the first error, named
    beats = [ln for ln in a_err.splitlines() if ln.startswith("loadmem: ")]
    assert any(ln.startswith("loadmem: load ") and "req/s" in ln for ln in beats), a_err
    assert any(ln.startswith("loadmem: observe ") for ln in beats), a_err
    assert all("since the start" in ln for ln in beats[1:]), beats
    assert "\r" not in a_err  # no terminal: no status line rewritten in place
    errors = [ln for ln in a_out.splitlines() if ln.startswith("::error ")]
    assert errors and errors[0].startswith("::error title=loadmem run::load failed: ")
    assert "%0A" not in errors[0] or "\n" not in errors[0]
    text = summary.read_text()
    assert text.startswith("earlier steps' summary\n")  # appended, not overwritten
    assert "## loadmem run: complete" in text and "**Load failed:**" in text
    assert "### loadmem analyze" in text  # the verdict's Markdown
    assert f"Recording: `{tmp_path / 'a'}`" in text

    # B: --json: one JSON object, the last line of stdout; the text went to stderr
    assert b.returncode == 0, b_err
    doc = json.loads(b_out.strip().splitlines()[-1])
    assert doc["command"] == "run" and doc["exit_code"] == 0 and doc["status"] == "complete"
    assert doc["load"]["ok"] and doc["load"]["requests"] > 0 and doc["load"]["ended_by"]
    assert doc["load"]["totals"]["name"] == "Aggregated"
    assert [p["phase"] for p in doc["phases"]] == ["baseline", "load", "observe"]
    assert doc["verdict"]["fail_on"] == "never" and doc["verdict"]["failing"] == []
    assert "recording: " in b_err and "recording: " not in b_out


def test_a_target_that_never_answers_fails_the_run(tmp_path: Path):
    """Accepts connections, never answers: no request completes -> exit 1 with the reason."""
    import socket

    scenario = write_scenario(tmp_path, textwrap.dedent('''
        from locust import FastHttpUser, constant, task


        class Patient(FastHttpUser):
            wait_time = constant(0.1)
            network_timeout = 60.0
            connection_timeout = 60.0

            @task
            def index(self):
                self.client.get("/")
    '''), name="patient.py")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)  # the kernel accepts; nobody ever reads or answers
        port = silent.getsockname()[1]
        done = subprocess.run(
            loadmem_cmd(str(scenario), "--target", f"http://127.0.0.1:{port}", "-u", "2",
                        "--baseline", "0s", "--load", "2s", "--observe", "0s", "--no-record",
                        "--json", "--out", str(tmp_path / "rec")),
            capture_output=True, text=True, timeout=90)
    assert done.returncode == 1, done.stderr
    assert "no request completed during the load phase" in done.stderr
    doc = json.loads(done.stdout.strip().splitlines()[-1])
    assert doc["exit_code"] == 1 and not doc["load"]["ok"] and doc["load"]["requests"] == 0


def test_heartbeat_text_and_interval():
    load = SimpleNamespace(last_total={"requests": 300, "interval_s": 1.0}, failures=2,
                           requests=900)
    first = {"mem_total": 8000 * MiB, "mem_available": 6000 * MiB, "sum_pss": 100 * MiB}
    now = {"mem_total": 8000 * MiB, "mem_available": 5900 * MiB, "sum_pss": 150 * MiB}
    text = heartbeat_text("load", 90.0, 30.0, now, first, load)
    assert text.startswith("loadmem: load 1m30s (30s left) | 300 req/s, 2 failures")
    assert text.endswith("used +100 MB, sum PSS +50.0 MB since the start")
    observe = heartbeat_text("observe", 5.0, None, now, first, load)
    assert "900 requests, 2 failures in the load" in observe

    class Out:
        def __init__(self) -> None:
            self.lines: list[str] = []

        def write(self, s: str) -> None:
            self.lines.append(s)

        def flush(self) -> None:
            pass

    out = Out()
    beat = Heartbeat(out, every=0.05)  # type: ignore[arg-type]
    assert not beat.beat("load", 0, None, now, first, load)  # arms; first line after 0.05 s
    import time

    time.sleep(0.06)
    assert beat.beat("load", 0, None, now, first, load)
    assert not beat.beat("load", 0, None, now, first, load)  # not again before 0.05 s
    assert Heartbeat(None).beat("load", 0, None, now, first, load) is False
    assert sys.stdout is not None


def test_record_json_summary(tmp_path: Path):
    with http_server() as (_srv, port):
        done = subprocess.run(
            [sys.executable, "-m", "loadmem", "record", "--port", str(port), "--duration",
             "2s", "--interval", "0.5s", "--json", "--out", str(tmp_path / "rec")],
            capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout.strip().splitlines()[-1])
    assert doc["command"] == "record" and doc["exit_code"] == 0
    assert doc["status"] == "complete" and doc["samples"] >= 3 and doc["processes"] >= 1
    assert doc["recording"] == str(tmp_path / "rec")
    assert "next: loadmem analyze" in done.stderr and len(done.stdout.strip().splitlines()) == 1
