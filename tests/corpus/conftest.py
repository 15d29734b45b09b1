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

import contextlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from corpus_servers import (
    forker,
    gc_reports,
    gunicorn,
    nginx,
    node_leak,
    pg_front,
    postgres,
    resident_bytes,
)
from corpus_support import (
    Case,
    MiB,
    Recorder,
    descendants,
    http_get,
    meminfo,
    run_phases,
    smaps_rollup,
)


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


def side_by_side(*makers):
    """Make recordings at the same time (threads of subprocesses), each with its own
    servers; wait for all of them, then raise the first failure. Only for recordings whose
    assertions rest on the watched processes' own figures, which another recording on the
    machine does not change (the machine-wide ones are noisy on CI anyway)."""
    from concurrent.futures import ThreadPoolExecutor, wait

    with ThreadPoolExecutor(max_workers=len(makers)) as pool:
        futures = [pool.submit(m) for m in makers]
        wait(futures)
    return [f.result() for f in futures]


@pytest.fixture(scope="session")
def preload_pair(tmp_path_factory) -> tuple[Case, Case]:
    """The default and the frozen server, recorded side by side (half the wall time)."""
    cases = side_by_side(
        lambda: _preload_case(tmp_path_factory, "gunicorn-preload-default", "default"),
        lambda: _preload_case(tmp_path_factory, "gunicorn-preload-frozen", "frozen"))
    for c in cases:
        c.prefetch(None, "whole")
    return cases[0], cases[1]


@pytest.fixture(scope="session")
def preload_default(preload_pair) -> Case:
    """gunicorn --preload; each idle worker's gc.collect() unshares the table after load."""
    return preload_pair[0]


@pytest.fixture(scope="session")
def preload_frozen(preload_pair) -> Case:
    """The same server with gc.disable() / gc.freeze() before fork / gc.enable() in workers."""
    return preload_pair[1]


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
    case.prefetch(None, "whole")
    return case


def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@pytest.fixture(scope="session")
def postgres_buffers(tmp_path_factory) -> Case:
    """PostgreSQL (shared_buffers=128MB, empty at start) behind an HTTP front end with 4
    persistent connections; the load reads random ranges of a ~115 MB table and index, so
    every backend maps more of the shared buffers (RssShmem) while Shmem grows once."""
    base = tmp_path_factory.mktemp("postgres-shared-buffers")
    rec = base / "rec"
    with postgres() as pg, pg_front(pg) as front:
        buffers_before = pg.buffers_in_use()
        backends = [p for p in descendants(pg.pid) if p != pg.pid]
        rss_shmem_before = sum(_status_kb(p, "RssShmem") for p in backends)
        shmem_before = meminfo()["Shmem"]
        done = run_phases(rec, front.url, extra=("--watch-pid", str(pg.pid)))
        shmem_after = meminfo()["Shmem"]
        rss_shmem_after = sum(_status_kb(p, "RssShmem") for p in backends)
        buffers_after = pg.buffers_in_use()
    case = Case("postgres-shared-buffers", rec, run=done)
    case.facts = {
        "server": "PostgreSQL 128MB shared_buffers, 800k-row table (~115 MB with index), "
                  "HTTP front end with 4 persistent psql sessions, range reads of 2000 rows",
        "buffers_filled_bytes": (buffers_after - buffers_before) * 8192,
        "buffers_before": buffers_before, "buffers_after": buffers_after,
        "postgres_processes": len(backends),
        "rss_shmem_delta_bytes": rss_shmem_after - rss_shmem_before,
        "system_shmem_delta_bytes": shmem_after - shmem_before,
        "phases": _phases(rec),
    }
    case.keep()
    case.prefetch(None, "whole")
    return case


#: Bytes the Node.js server keeps per request.
LEAK_BYTES = 48 * 1024


@pytest.fixture(scope="session")
def node_leak_run(tmp_path_factory) -> Case:
    """Node.js keeping 48 KiB per request in a global array: a step during load, then flat.

    The observe phase is 10 times the load, as in real runs (minutes of load, a long observe
    afterwards): most of the recording is flat before and after a step."""
    base = tmp_path_factory.mktemp("node-leak")
    rec = base / "rec"
    with node_leak(base / "server", LEAK_BYTES) as server:
        rss_before = _status_kb(server.pid, "VmRSS")
        done = run_phases(rec, server.url, load="2s", observe="20s")
        stats = json.loads(http_get(server.port, "/_corpus/stats"))
        rss_after = _status_kb(server.pid, "VmRSS")
    case = Case("node-leak", rec, run=done)
    case.facts = {
        "server": f"node {LEAK_BYTES} bytes kept per request",
        "leak_bytes_per_request": LEAK_BYTES, "requests": stats["requests"],
        "kept_bytes": stats["kept_bytes"], "node_rss_delta_bytes": rss_after - rss_before,
        "node_pid": server.pid, "phases": _phases(rec),
    }
    case.keep()
    case.prefetch(None, "whole", "load")
    return case


#: nginx serves this many files of this many MiB (96 MiB, cold at the start).
NGINX_FILES, NGINX_FILE_MIB = 12, 8


#: Re-record nginx (at most this many times) while the rest of the machine moved the page
#: cache by more than this share of the files: other suites read and delete files, which no
#: analysis can tell apart from what the load cached. The last attempt is kept whatever
#: happened, so a wrong verdict still fails.
NGINX_ATTEMPTS, NGINX_CACHE_TOLERANCE = 3, 0.25


def _page_cache_noise(rec: Path, cached: float) -> float:
    """How far the system page cache (Cached - Shmem + Buffers, the recording's own samples)
    moved beyond what the load cached, over the spans the tests judge: the load, the load to
    the end (the default window) and the whole recording; the largest |Δ - cached|."""
    import numpy as np

    from loadmem.analysis.series.system import read_system
    from loadmem.recording import open_recording

    recording = open_recording(rec)
    system = read_system(recording)
    t, cache = system.t, system.get("file_cache")

    def level(at: float) -> float:  # the median of the samples around ``at``
        i = max(int(np.searchsorted(t, at, side="right")) - 1, 0)
        return float(np.nanmedian(cache[max(i - 1, 0):i + 2]))

    phases = {name: (t0, t1) for name, t0, t1 in recording.phases()}
    load0, load1 = phases["load"][0], phases["load"][1] or float(t[-1])
    spans = ((load0, load1), (load0, float(t[-1])), (float(t[0]), float(t[-1])))
    return max(abs(level(b) - level(a) - cached) for a, b in spans)


@pytest.fixture(scope="session")
def nginx_static(tmp_path_factory) -> Case:
    """nginx (2 workers, sendfile) serving 96 MiB of files dropped from the page cache first:
    the load reads them into the page cache. Recorded again while the rest of the machine
    moved the page cache by more than a quarter of the files (``NGINX_ATTEMPTS``)."""
    base = tmp_path_factory.mktemp("nginx-static")
    files_bytes = NGINX_FILES * NGINX_FILE_MIB * MiB
    noises: list[int] = []
    for attempt in range(NGINX_ATTEMPTS):
        rec = base / f"rec{attempt}"
        with nginx(base / f"server{attempt}", NGINX_FILES, NGINX_FILE_MIB) as server:
            files = sorted((server.workdir / "www").glob("*.bin"))
            before = sum(resident_bytes(f) for f in files)
            cached_before = meminfo()
            paths = ",".join(f"/{f.name}" for f in files)
            done = run_phases(rec, server.url,
                              env={"CORPUS_PATHS": paths, "CORPUS_WAIT": "0.05"}, users=4)
            after = sum(resident_bytes(f) for f in files)
            cached_after = meminfo()
        noises.append(int(_page_cache_noise(rec, after - before)))
        if noises[-1] < NGINX_CACHE_TOLERANCE * files_bytes:
            break
    case = Case("nginx-static", rec, run=done)
    case.facts = {
        "server": f"nginx 2 workers, sendfile, {NGINX_FILES} files x {NGINX_FILE_MIB} MiB",
        "files_bytes": files_bytes,
        "resident_before_bytes": before, "resident_after_bytes": after,
        "cached_into_page_cache_bytes": after - before,
        "system_cached_delta_bytes": cached_after["Cached"] - cached_before["Cached"],
        # per attempt: how far the rest of the machine moved the page cache
        "page_cache_noise_bytes": noises,
        "phases": _phases(rec),
    }
    case.keep()
    case.prefetch(None, "whole")
    return case


#: The classic demonstration: 100 idle children sharing 100 MiB with their parent.
FORK_CHILDREN, FORK_SHARED_MIB = 100, 100


def _group_snapshot(pids: list[int]) -> dict:
    """The test's own reading of the group: sum VmRSS, sum Pss, and system used memory."""
    rss = sum(_status_kb(p, "VmRSS") for p in pids)
    pss = 0
    for p in pids:
        with contextlib.suppress(OSError):
            pss += smaps_rollup(p)["Pss"]
    m = meminfo()
    return {"sum_rss_bytes": rss, "sum_pss_bytes": pss,
            "used_bytes": m["MemTotal"] - m["MemAvailable"], "processes": len(pids)}


def _pss_coverage(rec: Path) -> dict:
    """From the recording's own rows: how many processes had a PSS figure, per tick."""
    rows = pq.read_table(rec / "processes.parquet",
                         columns=["tick", "t", "pid", "role", "pss"]).to_pylist()
    ticks: dict[int, list] = {}
    for r in rows:
        if r["role"] == "target":
            ticks.setdefault(r["tick"], []).append(r)
    order = sorted(ticks)
    per_tick = [(round(ticks[k][0]["t"], 2), sum(r["pss"] is not None for r in ticks[k]),
                 len(ticks[k])) for k in order]
    most = max(total for _, _, total in per_tick)
    full = next((t for t, n, total in per_tick if n == total == most), None)
    return {"pss_coverage_first": per_tick[0][1:], "pss_coverage_last": per_tick[-1][1:],
            "pss_full_coverage_from_s": full,
            "pss_coverage_partial_ticks": sum(n < total for _, n, total in per_tick)}


def _forked_after(tmp_path_factory) -> Case:
    """(a) 100 children forked, then recorded for 12 s the way a user would (1 s interval),
    with a PSS budget of 1 %: the recorder reads smaps_rollup of the 101 processes over the
    first seconds (its budget's initial burst cannot cover them all at the first tick), so
    PSS coverage grows while nothing moves."""
    rec = tmp_path_factory.mktemp("forked-after") / "rec"
    used0 = meminfo()
    with forker(FORK_SHARED_MIB, FORK_CHILDREN, 0.0, wait=False) as fk:
        recorder = Recorder(rec, "--pid", str(fk.pid), "--interval", "1s", "--duration", "12s",
                            "--pss-budget", "2%")
        try:
            recorder.sleep_until(1.0)
            start = _group_snapshot(fk.pids)
            recorder.sleep_until(11.0)
            end = _group_snapshot(fk.pids)
            recorder.wait()
        finally:
            recorder.kill()
    case = Case("forked-100-after", rec)
    case.facts = {
        "workload": f"1 parent with {FORK_SHARED_MIB} MiB written, {FORK_CHILDREN} idle "
                    "children forked before the recording",
        "used_before_workload_bytes": used0["MemTotal"] - used0["MemAvailable"],
        "at_1s": start, "at_end": end, **_pss_coverage(rec),
    }
    case.keep()
    case.prefetch(None)
    return case


def _forked_while(tmp_path_factory) -> Case:
    """(b) recording starts, then 100 children are forked over 3 s, then idle. PSS re-read
    every 2 s (a 10 % budget allows it) so each child's figure follows the sharing."""
    rec = tmp_path_factory.mktemp("forked-while") / "rec"
    with forker(FORK_SHARED_MIB, FORK_CHILDREN, 3.0, wait=True) as fk:
        recorder = Recorder(rec, "--pid", str(fk.pid), "--interval", "0.5s", "--duration", "14s",
                            "--pss-budget", "10%", "--pss-max-age", "2s")
        try:
            recorder.sleep_until(2.5)
            before = _group_snapshot([fk.pid])
            t_go = recorder.t()
            fk.go()
            t_forked = recorder.t()
            recorder.sleep_until(13.0)
            end = _group_snapshot(fk.pids)
            recorder.wait()
        finally:
            recorder.kill()
    case = Case("forked-100-while", rec)
    case.facts = {
        "workload": f"1 parent with {FORK_SHARED_MIB} MiB written; {FORK_CHILDREN} idle "
                    "children forked over 3 s while recording",
        "before_fork": before, "at_end": end, "fork_start_t": round(t_go, 2),
        "fork_end_t": round(t_forked, 2), **_pss_coverage(rec),
    }
    case.keep()
    case.prefetch(None)
    return case


@pytest.fixture(scope="session")
def forked_pair(tmp_path_factory) -> tuple[Case, Case]:
    """Both forked-children recordings side by side (each about 20 s of wall time)."""
    after, while_ = side_by_side(lambda: _forked_after(tmp_path_factory),
                                 lambda: _forked_while(tmp_path_factory))
    return after, while_


@pytest.fixture(scope="session")
def forked_after(forked_pair) -> Case:
    return forked_pair[0]


@pytest.fixture(scope="session")
def forked_while(forked_pair) -> Case:
    return forked_pair[1]
