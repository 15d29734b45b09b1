"""Bad input to `loadmem run` and `loadmem record`: real invocations, each one line on
stderr naming the problem, exit code 2, no traceback, nothing recorded, no process left.

The cases that need Locust's judgement (unknown options, locustfiles) go through the real
preflight: Locust's own parser and loader in the run's Locust child.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _run_support import free_port, http_server, write_scenario

GOOD = "good.py"
#: (id, arguments after `loadmem run`, a phrase the error line must contain)
RUN_CASES = [
    ("load-zero", [GOOD, "--target", "{url}", "--load", "0"], "--load must be more than 0"),
    ("master-and-worker", [GOOD, "--target", "{url}", "--master", "--worker"],
     "--master and --worker cannot be combined"),
    ("processes-zero", [GOOD, "--target", "{url}", "--processes", "0"], "--processes 0"),
    ("processes-and-master", [GOOD, "--target", "{url}", "--processes", "2", "--master"],
     "--master cannot be combined with --processes"),
    ("scheme-without-colon-slashes", [GOOD, "--target", "http//127.0.0.1:18080"],
     "the scheme must be followed by ://"),
    ("port-zero", [GOOD, "--target", "http://127.0.0.1:0"], "port must be 1-65535"),
    ("port-too-big", [GOOD, "--target", "http://127.0.0.1:70000"], "bad port"),
    ("ftp", [GOOD, "--target", "ftp://127.0.0.1/"], "is not http or https"),
    ("refused", [GOOD, "--target", "http://127.0.0.1:{free}"], "connection refused"),
    ("remote-without-plan", [GOOD, "--target", "http://192.0.2.10:8080"],
     "not on this machine"),
    ("bad-gate-config", [GOOD, "--target", "{url}", "--gate", "bad.toml"], "bad.toml"),
    ("attach-to-missing", [GOOD, "--target", "{url}", "--no-record", "--attach-to",
                           "missing-rec"], "--attach-to missing-rec"),
    ("attach-without-no-record", [GOOD, "--target", "{url}", "--attach-to", "x"],
     "--attach-to needs --no-record"),
    ("unknown-locust-option", [GOOD, "--target", "{url}", "--userz", "5"],
     "unrecognized arguments: --userz"),
    ("users-zero", [GOOD, "--target", "{url}", "-u", "0"], "-u/--users 0"),
    ("run-time-zero", [GOOD, "--target", "{url}", "-t", "0"], "would run the load forever"),
    ("spawn-rate-zero", [GOOD, "--target", "{url}", "-r", "0"], "spawn-rate"),
    ("headful", [GOOD, "--target", "{url}", "--headful"], "headless"),
    ("list", [GOOD, "--target", "{url}", "--list"], "--list"),
    ("target-and-host", [GOOD, "--target", "{url}", "-H", "{url}"],
     "--target and -H/--host both given"),
    ("load-and-run-time", [GOOD, "--target", "{url}", "--load", "5s", "-t", "5s"],
     "--load and -t/--run-time both given"),
    ("scenario-and-f", [GOOD, "--target", "{url}", "-f", GOOD],
     "a SCENARIO and -f/--locustfile both given"),
    ("missing-locustfile", ["-f", "nope.py", "--target", "{url}"], "nope.py"),
    ("missing-scenario", ["nope.py", "--target", "{url}"], "no scenario file at nope.py"),
    ("syntax-error", ["broken.py", "--target", "{url}"], "syntax error in"),
    ("no-user-class", ["nousers.py", "--target", "{url}"], "no User class in"),
    ("import-error", ["importerror.py", "--target", "{url}"], "ModuleNotFoundError"),
    ("unknown-user-class", [GOOD, "--target", "{url}", "Nobody"], "Nobody"),
    ("no-host", ["nohost.py"], "has no host"),
    ("bad-duration", [GOOD, "--target", "{url}", "--observe", "5 minutes"], "--observe"),
    ("worker-with-demo", [GOOD, "--target", "demo", "--worker"],
     "--worker cannot use --target demo"),
]
RECORD_CASES = [
    ("record-interval-too-small", ["--interval", "1ms", "--port", "{port}"], "--interval"),
    ("record-duration-zero", ["--duration", "0", "--port", "{port}"], "--duration"),
    ("record-flush-zero", ["--flush", "0", "--port", "{port}"], "--flush"),
    ("record-budget-over", ["--pss-budget", "200%", "--port", "{port}"], "--pss-budget"),
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("bad-input-run")
    write_scenario(work, name=GOOD, wait=0.05)
    (work / "broken.py").write_text("from locust import HttpUser\n\nclass U(HttpUser):\n"
                                    "    def x(self)\n        pass\n")
    (work / "nousers.py").write_text("from locust import HttpUser\n\n"
                                     "class Base(HttpUser):\n    abstract = True\n")
    (work / "importerror.py").write_text("import no_such_module_here\n")
    (work / "nohost.py").write_text(textwrap.dedent('''
        from locust import HttpUser, task

        class NoHost(HttpUser):
            @task
            def t(self):
                self.client.get("/")
    '''))
    (work / "bad.toml").write_text("[gates]\nthis is not toml = = =\n")
    with http_server() as (_srv, port):
        yield work, port


def _invoke(work: Path, argv: list[str], out: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "loadmem", *argv, "--out", out], cwd=work,
                          capture_output=True, text=True, timeout=180,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def results(workdir) -> dict[str, tuple[subprocess.CompletedProcess[str], str]]:
    """Every case, four at a time (each is a short process; most start Locust once)."""
    from concurrent.futures import ThreadPoolExecutor

    work, port = workdir
    url = f"http://127.0.0.1:{port}"
    jobs = {}
    for case, args, _ in RUN_CASES:
        jobs[case] = ["run", *(a.format(url=url, free=free_port()) for a in args)]
    for case, args, _ in RECORD_CASES:
        jobs[case] = ["record", *(a.format(port=port) for a in args)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {case: pool.submit(_invoke, work, argv, f"rec-{case}")
                   for case, argv in jobs.items()}
        return {case: (f.result(), f"rec-{case}") for case, f in futures.items()}


def _check(work: Path, done: subprocess.CompletedProcess[str], out: str, phrase: str) -> None:
    err = done.stderr.strip()
    assert done.returncode == 2, (done.args, done.returncode, err, done.stdout)
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err and "Traceback" not in done.stdout
    assert phrase in err, (phrase, err)
    assert not (work / out).exists()  # nothing recorded


@pytest.mark.parametrize("case,args,phrase", RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_run_bad_input(workdir, results, case: str, args: list[str], phrase: str):
    _check(workdir[0], *results[case], phrase)


@pytest.mark.parametrize("case,args,phrase", RECORD_CASES, ids=[c[0] for c in RECORD_CASES])
def test_record_bad_input(workdir, results, case: str, args: list[str], phrase: str):
    _check(workdir[0], *results[case], phrase)


def test_no_process_left_behind(workdir, results):
    """The Locust child of a refused run was aborted: nothing runs in the work directory."""
    import os
    import time

    work = workdir[0].resolve()
    assert results  # every case ran

    def left() -> list[int]:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if Path(os.readlink(f"/proc/{pid}/cwd")) == work and int(pid) != os.getpid():
                    found.append(int(pid))
            except OSError:
                continue
        return found

    deadline = time.monotonic() + 10
    while left() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left()
