"""The locustfile corpus: each case runs under plain `locust --headless` and under `loadmem run`.

Same arguments, same local server (a threaded stdlib server on 127.0.0.1), run side by
side. `-t 10s` although each user is done in about a second: plain Locust 2.47 ends a -t
run early by its own start-up time (its event loop's clock is as old as `import locust`;
measured 1.1 s idle, over 5 s on a busy machine), so a shorter -t could end the plain run
before its users sent anything. loadmem refreshes that clock (docs/run.md).

For each case the two runs must give the same exit code, the same request names and
counts (each user sends a bounded number of requests, so counts do not depend on timing;
10 % tolerance all the same), and the same listener side effects (the hooks append JSON
lines to the file named by $CORPUS_OUT). Locust's own `--json-file` (passed through by
loadmem like any Locust option) gives both runs' totals; loadmem's recording must hold the
same totals.

Cases (tests/locust_corpus/): every event hook, a custom argument (directly and after
`--`), tags, two User classes with weights and `host` (no -H: the target comes from the
classes), `--processes 2` (report_to_master/worker_report), `-f a.py,b.py` with locust.conf
and LOCUST_* variables (Locust's precedence), `-f DIR` with `[tool.locust]` in
pyproject.toml, a listener that quits the runner and sets the exit code, a LoadTestShape,
failed requests and task errors with `--exit-code-on-error`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from _run_support import free_port, http_server

from loadmem.recording import open_recording

pytestmark = pytest.mark.slow
CORPUS = Path(__file__).parent / "locust_corpus"
LOADMEM_PHASES = ["--baseline", "1s", "--observe", "1s", "--fail-on", "never"]
#: Cases that also record memory (the others run with --no-record: the run's events and
#: requests only, which is what this corpus is about, at a fraction of the CPU).
RECORDED = {"hooks", "quitter"}
#: Cases at a time: more starts plain Locust so slowly that its -t (see above) can end
#: before any request.
AT_ONCE = 2

#: name -> (Locust arguments for both runs, loadmem-only form of them or None, env, files)
CASES = {
    "hooks": (["-f", "hooks.py", "-u", "3", "-r", "3", "-t", "10s", "--tags", "api",
               "--my-arg", "7"], None, {}, {}),
    "processes": (["-f", "hooks.py", "-u", "4", "-r", "4", "-t", "10s", "--processes", "2",
                   "--master-bind-port", "{port}", "--master-port", "{port}",
                   "--tags", "api", "--my-arg", "9"],
                  ["-f", "hooks.py", "-u", "4", "-r", "4", "-t", "10s", "--processes", "2",
                   "--tags", "api", "--", "--my-arg", "9"], {}, {}),
    "multi": (["-f", "multi_a.py,multi_b.py"], None,
              {"LOCUST_USERS": "4", "LOCUST_HOST": "{host}"},
              {"locust.conf": "users = 2\nspawn-rate = 4\nrun-time = 10s\nstop-timeout = 1\n"}),
    "directory": (["-f", "dir_case"], None, {},
                  {"pyproject.toml": "[tool.locust]\nusers = 2\nspawn-rate = 2\n"
                                     "run-time = \"10s\"\n"}),
    "quitter": (["-f", "quitter.py", "-H", "{host}", "-u", "2", "-r", "2", "-t", "30s"],
                None, {}, {}),
    "shape": (["-f", "shape.py", "-H", "{host}"], None, {}, {}),
    "failing": (["-f", "failing.py", "-H", "{host}", "-u", "2", "-r", "2", "-t", "10s",
                 "--exit-code-on-error", "4"], None, {}, {}),
}


def _setup(case: str, tmp: Path, host: str) -> tuple[Path, dict[str, str]]:
    """A working directory with the corpus files and the case's config files."""
    work = tmp / case
    shutil.copytree(CORPUS, work)
    _, _, env, files = CASES[case]
    for name, text in files.items():
        (work / name).write_text(text)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
    environ.update({k: v.format(host=host) for k, v in env.items()})
    environ["CORPUS_HOST"] = host
    environ["PYTHONUNBUFFERED"] = "1"
    return work, environ


def _start(cmd: list[str], work: Path, env: dict[str, str], out: Path) -> subprocess.Popen:
    env = {**env, "CORPUS_OUT": str(out)}
    return subprocess.Popen(cmd, cwd=work, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _hooks(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _stats(path: Path) -> dict[tuple[str, str], tuple[int, int]]:
    """Locust's --json-file: (method, name) -> (requests, failures)."""
    rows = json.loads(path.read_text())
    return {(r["method"] or "", r["name"]): (r["num_requests"], r["num_failures"])
            for r in rows}


def _within(a: int, b: int, tolerance: float = 0.10) -> bool:
    return abs(a - b) <= max(1, tolerance * max(a, b))


def _side_effects(hooks: list[dict]) -> dict:
    """What the listeners did, without what legitimately differs (pids, timing)."""
    kinds = Counter(h["hook"] for h in hooks if h["hook"] != "request")
    requests = Counter(h["name"] for h in hooks if h["hook"] == "request")
    others = sorted(json.dumps({k: v for k, v in h.items() if k not in ("pid", "worker")},
                               sort_keys=True)
                    for h in hooks if h["hook"] not in ("request",))
    return {"kinds": kinds, "requests": requests, "records": others}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Every case, plain Locust and loadmem run side by side, two cases at a time (each
    spends most of its -t idle)."""
    tmp = tmp_path_factory.mktemp("corpus")
    found: dict[str, dict] = {}
    with http_server() as (_srv, port):
        host = f"http://127.0.0.1:{port}"
        names = list(CASES)
        for i in range(0, len(names), AT_ONCE):
            running = []
            for case in names[i:i + AT_ONCE]:
                work, env = _setup(case, tmp, host)
                args, loadmem_form, _, _ = CASES[case]
                mport = str(free_port())  # plain Locust's master: not its default 5557
                args = [a.format(host=host, port=mport) for a in args]
                lm_args = [a.format(host=host) for a in (loadmem_form or args)]
                plain = _start([sys.executable, "-m", "locust", "--headless", *args,
                                "--json-file", str(work / "plain")],
                               work, env, work / "plain-hooks.jsonl")
                record = (["--interval", "0.5s"] if case in RECORDED else ["--no-record"])
                ours = _start([sys.executable, "-m", "loadmem", "run", *LOADMEM_PHASES,
                               *record, "--out", str(work / "rec"),
                               "--json-file", str(work / "loadmem"), *lm_args],
                              work, env, work / "loadmem-hooks.jsonl")
                running.append((case, work, plain, ours))
            for case, work, plain, ours in running:
                plain_out = plain.communicate(timeout=120)[0]
                ours_out = ours.communicate(timeout=150)[0]
                found[case] = {"work": work, "plain": plain.returncode,
                               "loadmem": ours.returncode, "plain_out": plain_out,
                               "loadmem_out": ours_out}
    return found


@pytest.mark.parametrize("case", list(CASES))
def test_same_exit_code_requests_and_side_effects(results: dict[str, dict], case: str):
    r = results[case]
    work = r["work"]
    why = f"\n--- locust:\n{r['plain_out'][-3000:]}\n--- loadmem:\n{r['loadmem_out'][-3000:]}"
    assert r["plain"] == r["loadmem"], why
    plain, ours = _stats(work / "plain.json"), _stats(work / "loadmem.json")
    assert set(plain) == set(ours), why
    for key, (n, f) in plain.items():
        assert n > 0 or key[1] == "Aggregated", (key, why)
        assert _within(n, ours[key][0]) and _within(f, ours[key][1]), (key, plain, ours)
    a = _side_effects(_hooks(work / "plain-hooks.jsonl"))
    b = _side_effects(_hooks(work / "loadmem-hooks.jsonl"))
    assert a["kinds"] == b["kinds"], (a["kinds"], b["kinds"])
    assert set(a["requests"]) == set(b["requests"])
    for name, n in a["requests"].items():
        assert _within(n, b["requests"][name]), (name, a["requests"], b["requests"])
    assert a["records"] == b["records"]

    # loadmem recorded what Locust counted
    rec = open_recording(work / "rec")
    totals = {(t["method"], t["name"]): (t["requests"], t["failures"])
              for t in rec.events("load_stats")[0]["data"]["rows"]}
    for key, value in ours.items():
        name = "Aggregated" if key[1] == "Aggregated" else key[1]
        method = "" if name == "Aggregated" else key[0]
        assert totals[(method, name)] == value, (key, totals)


def test_what_each_case_exercised(results: dict[str, dict]):
    """The corpus covers what it claims (a case that silently did nothing would pass above)."""
    def hooks(case: str) -> list[dict]:
        return _hooks(results[case]["work"] / "loadmem-hooks.jsonl")

    kinds = Counter(h["hook"] for h in hooks("hooks"))
    for hook in ("init_command_line_parser", "init", "test_start", "spawning_complete",
                 "request", "test_stop", "quitting"):
        assert kinds[hook] >= 1, (hook, kinds)
    init = next(h for h in hooks("hooks") if h["hook"] == "init")
    assert init["my_arg"] == 7 and init["tags"] == ["api"] and init["runner"] == "local"
    names = {h["name"] for h in hooks("hooks") if h["hook"] == "request"}
    assert names == {"/items", "health", "orders"}  # --tags api: /excluded never ran
    spawned = next(h for h in hooks("hooks") if h["hook"] == "spawning_complete")
    assert spawned["user_count"] == 3

    dist = Counter(h["hook"] for h in hooks("processes"))
    assert dist["report_to_master"] >= 2 and dist["worker_report"] >= 2, dist
    runners = Counter(h["runner"] for h in hooks("processes") if h["hook"] == "init")
    assert runners == {"master": 1, "worker": 2}
    assert all(h["my_arg"] == 9 for h in hooks("processes") if h["hook"] == "init")

    host = next(h for h in hooks("multi") if h["hook"] == "options")
    assert host["users"] == 4  # LOCUST_USERS beats locust.conf's users = 2
    assert host["rate"] == 4 and host["run_time"] == 10 and host["stop_timeout"] == 1
    assert host["host"].startswith("http://127.0.0.1:")
    stats = _stats(results["multi"]["work"] / "loadmem.json")
    assert {n for _, n in stats} == {"/a", "/b"}
    stats = _stats(results["directory"]["work"] / "loadmem.json")
    assert {n for _, n in stats} == {"/x", "/y"}

    assert results["quitter"]["loadmem"] == 3 and results["failing"]["loadmem"] == 4
    rec = open_recording(results["quitter"]["work"] / "rec")
    ended = rec.events("load_ended_by_scenario")
    assert ended and ended[0]["message"].startswith("load ended by the scenario after ")
    load = next(p for p in rec.phases() if p[0] == "load")
    assert load[2] - load[1] < 20  # -t 30s: the listener ended it
    assert [p[0] for p in rec.phases()] == ["baseline", "load", "observe"]

    rec = open_recording(results["shape"]["work"] / "rec")
    end = next(e for e in rec.events("phase_end") if e["phase"] == "load")
    assert end["data"]["reason"] == "shape"
    counts = [h["user_count"] for h in hooks("shape") if h["hook"] == "spawning_complete"]
    assert counts == [1, 3]
    failing = results["failing"]["loadmem_out"]
    assert "load failed: Locust exited with code 4" in failing
