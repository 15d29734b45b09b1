"""Session fixtures of the validation corpus: each real-server recording is made once.

Every fixture starts real software on 127.0.0.1 (gunicorn, PostgreSQL, nginx, Node.js, or
plain forked Python processes), records it with the real CLI (``loadmem run`` or ``loadmem
record`` as subprocesses), stops everything it started, and returns a ``Case``: the
recording, the run's output, and the figures the test measured itself (from the servers'
own reports or from /proc), which the assertions hold loadmem's verdicts against.

Sizes are small (tens of MiB; 100 MiB for the forked-children case, which is the classic
demonstration) and phases short (2.5 s baseline, 4 s load, 8 s observe, 0.5 s interval).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from corpus_servers import gc_reports, gunicorn
from corpus_support import Case, run_phases


def _start_monotonic(rec: Path) -> float:
    return float(json.loads((rec / "meta.json").read_text())["start_monotonic"])


def _phases(rec: Path) -> dict[str, tuple[float, float]]:
    """Phase name -> (start, end) in recording seconds, from the events table."""
    rows = pq.read_table(rec / "events.parquet", columns=["t", "kind", "phase"]).to_pylist()
    start = {r["phase"]: r["t"] for r in rows if r["kind"] == "phase_start"}
    end = {r["phase"]: r["t"] for r in rows if r["kind"] == "phase_end"}
    return {p: (start[p], end.get(p, float("nan"))) for p in start}


def _gc_facts(workdir: Path, rec: Path) -> dict:
    """What the workers' idle collections copied, by the workers' own smaps_rollup."""
    t0 = _start_monotonic(rec)
    reports = gc_reports(workdir)
    return {
        "gc_workers": len(reports),
        "gc_pids": [r["pid"] for r in reports],
        "gc_t": [round(r["t0"] - t0, 2) for r in reports],
        "gc_copied_bytes": sum(r["after"]["private_dirty"] - r["before"]["private_dirty"]
                               for r in reports),
        "gc_rss_delta_bytes": sum(r["after"]["rss"] - r["before"]["rss"] for r in reports),
        "phases": _phases(rec),
    }


def _preload_case(tmp_path_factory, name: str, variant: str, extra: tuple[str, ...] = ()
                  ) -> Case:
    base = tmp_path_factory.mktemp(name)
    rec = base / "rec"
    with gunicorn(base / "server", variant=variant, extra=extra) as server:
        done = run_phases(rec, server.url)
    case = Case(name, rec, run=done)
    case.facts = {"variant": variant, "server": "gunicorn --preload, 3 sync workers, 40 MiB "
                  "table of lists", "gunicorn_args": list(extra),
                  **_gc_facts(server.workdir, rec)}
    case.keep()
    return case


@pytest.fixture(scope="session")
def preload_default(tmp_path_factory) -> Case:
    """gunicorn --preload; each idle worker's gc.collect() unshares the table after load."""
    return _preload_case(tmp_path_factory, "gunicorn-preload-default", "default")


@pytest.fixture(scope="session")
def preload_frozen(tmp_path_factory) -> Case:
    """The same server with gc.disable() / gc.freeze() before fork / gc.enable() in workers."""
    return _preload_case(tmp_path_factory, "gunicorn-preload-frozen", "frozen")


@pytest.fixture(scope="session")
def preload_respawn(tmp_path_factory) -> Case:
    """gunicorn --preload --max-requests: workers replaced all through the load."""
    case = _preload_case(tmp_path_factory, "gunicorn-respawn", "default",
                         extra=("--max-requests", "80", "--max-requests-jitter", "40"))
    procs = pq.read_table(case.rec / "processes.parquet",
                          columns=["pid", "start_time", "role", "ppid"]).to_pylist()
    target = {(r["pid"], r["start_time"]) for r in procs if r["role"] == "target"}
    case.facts["target_processes_seen"] = len(target)
    case.keep()
    return case
