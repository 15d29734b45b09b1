"""ci/github-actions.yml, run for real as far as a local machine allows.

The workflow's `run:` steps are executed in order with bash, in a directory laid out like a
user's repository (a scenario, loadmem.toml) with this repository checked out at `.loadmem`
(a copy), and the environment GitHub gives a step (GITHUB_STEP_SUMMARY, GITHUB_REF_NAME,
GITHUB_SHA, the job's `env:`). What cannot run here is stood in for, each stand-in checking
what the real thing would get:

- `pip`: a shim that checks each `pip install` names an installable directory (this
  repository's copy for loadmem; the project itself for `-e .`), then uses the installed
  loadmem: a real install per test run would cost a minute;
- `gunicorn`: a shim that starts a threaded stdlib server on the `--bind` address;
- steps that need GitHub's API (`gh`) are skipped; `uses:` steps are GitHub's own actions.

The phases are shortened through the job's LOADMEM_PHASES variable, as a user would.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _run_support import SERVER, free_port, write_scenario

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "ci" / "github-actions.yml"


def workflow_steps(text: str) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """The job's `env:` and its steps as (name, `if:`, script of `run: |`), in order."""
    env: dict[str, str] = {}
    steps: list[tuple[str, str, str]] = []
    lines = text.splitlines()
    i = 0
    in_env = False
    name = cond = ""
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if re.match(r"^    env:\s*$", line):
            in_env = True
        elif in_env and re.match(r"^      [A-Z_]+:", line):
            key, _, value = stripped.partition(":")
            env[key] = value.strip().strip('"')
        elif in_env and not line.startswith("      "):
            in_env = False
        if stripped.startswith("- name:"):
            name, cond = stripped.split(":", 1)[1].strip(), ""
        elif stripped.startswith("if:"):
            cond = stripped.split(":", 1)[1].strip()
        elif stripped in ("run: |", "run: |-"):
            indent = len(line) - len(line.lstrip()) + 2
            body = []
            i += 1
            while i < len(lines) and (not lines[i].strip() or
                                      len(lines[i]) - len(lines[i].lstrip()) >= indent):
                body.append(lines[i][indent:])
                i += 1
            steps.append((name, cond, "\n".join(body).rstrip() + "\n"))
            continue
        i += 1
    return env, steps


PIP_SHIM = """#!/bin/sh
# stand-in for pip: check that every `pip install` names an installable directory
set -e
[ "$1" = install ] || { echo "pip shim: unexpected: $*" >&2; exit 1; }
shift
for arg in "$@"; do
  case "$arg" in
    -*) ;;
    *) [ -f "$arg/pyproject.toml" ] || [ -f "$arg/setup.py" ] || {
         echo "pip shim: $arg is not a project directory" >&2; exit 1; }
       echo "$arg" >> "$PIP_LOG" ;;
  esac
done
"""

GUNICORN_SHIM = """#!/bin/sh
# stand-in for gunicorn: a threaded stdlib server on the --bind address
while [ $# -gt 0 ]; do
  case "$1" in --bind) BIND="$2"; shift ;; esac
  shift
done
echo $$ > "$SERVICE_PID_FILE"
exec "{python}" "{server}" "${{BIND##*:}}"
"""

SERVER_ON_PORT = SERVER.replace('("127.0.0.1", 0)', '("127.0.0.1", int(sys.argv[1]))')


def test_github_workflow_steps_run_in_order(tmp_path: Path):
    env_vars, steps = workflow_steps(WORKFLOW.read_text())
    names = [s[0] for s in steps]
    assert names[:3] == ["Install", "Start the service", "Load test with memory gate"], names

    repo = tmp_path / "repo"  # the user's repository
    repo.mkdir()
    (repo / "pyproject.toml").write_text("[project]\nname = 'myapp'\nversion = '1'\n")
    (repo / "scenarios").mkdir()
    write_scenario(repo / "scenarios", name="smoke.py", wait=0.05)
    shutil.copy(ROOT / "ci" / "loadmem.toml", repo / "loadmem.toml")
    shutil.copytree(ROOT, repo / ".loadmem", ignore=shutil.ignore_patterns(
        ".venv", "recordings", ".git", "*.egg-info", "__pycache__", ".pytest_cache"))
    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "pip").write_text(PIP_SHIM)
    server = tmp_path / "server.py"
    server.write_text(SERVER_ON_PORT)
    (shims / "gunicorn").write_text(GUNICORN_SHIM.format(python=sys.executable,
                                                         server=server))
    for shim in shims.iterdir():
        shim.chmod(0o755)
    summary = tmp_path / "step-summary.md"
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "LOCUST_"))},
        **env_vars,
        "REC": "recordings/ci-1",
        "SERVICE_PORT": str(port),
        "LOADMEM_PHASES": "--baseline 1s --load 3s --observe 2s --interval 0.5s",
        "GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_REF_NAME": "main", "GITHUB_SHA": "0123456789abcdef",
        "PIP_LOG": str(tmp_path / "pip.log"),
        "SERVICE_PID_FILE": str(tmp_path / "service.pid"),
        "PATH": f"{shims}:{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    results: dict[str, subprocess.CompletedProcess[str]] = {}
    failed = False
    try:
        for name, cond, script in steps:
            if "gh " in script:  # needs GitHub's API
                continue
            if failed and "always()" not in cond:
                continue  # as GitHub: later steps run only with if: always()
            done = subprocess.run(["bash", "-e", "-c", script], cwd=repo, env=env,
                                  capture_output=True, text=True, timeout=180)
            results[name] = done
            failed = failed or done.returncode != 0
    finally:
        pid_file = tmp_path / "service.pid"
        if pid_file.exists():  # the service the workflow started: by its pid
            import contextlib
            import signal

            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)

    assert results["Install"].returncode == 0, results["Install"].stderr
    assert (tmp_path / "pip.log").read_text().split() == [".", "./.loadmem"]
    assert results["Start the service"].returncode == 0, results["Start the service"].stdout
    load = results["Load test with memory gate"]
    assert load.returncode in (0, 1), load.stderr  # 1: a gate or finding on a short run
    rec = repo / "recordings" / "ci-1"
    assert (rec / "meta.json").exists()
    assert "main-0123456" in (rec / "meta.json").read_text()  # the label from the env
    text = summary.read_text()
    assert "## loadmem run: complete" in text and "### loadmem analyze" in text
    assert "loadmem gate" in text or "gate" in text.lower()
    if load.returncode == 1:
        assert "::error title=loadmem run::" in load.stdout
    assert (repo / "loadmem-junit.xml").exists() and (repo / "loadmem-report.html").exists()
