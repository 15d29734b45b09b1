"""The recorder's observer effect, measured against procpath on the same processes.

One run, one process set: a parent allocates and touches 512 MiB of private anonymous
memory, forks 15 children (16 processes sharing those pages copy-on-write), and all of them
sit idle. On that set:

1. ``loadmem record --pid PARENT`` at its defaults (interval 1 s, PSS budget 2 %, PSS max
   age 15 s, flush 5 s) runs from start to end: one recording;
2. ``procpath record -f stat,status,smaps_rollup -i 1 -d bench.sqlite -p PIDLIST``,
   installed in its own throw-away venv (``--procpath-venv``, default
   ``/tmp/procpath-venv``; procpath is the reference, never a loadmem dependency), is
   started for each of its windows and ends by itself after it.

The time is cut into ``--rounds`` windows per tool, interleaved L P P L L P ...: loadmem's
CPU is measured in the windows where it runs alone, procpath's in its own. On a shared VM
the CPU cost of the same work drifts by a fifth over minutes (the caches are colder or
warmer after each sleep); measured one after the other, the two tools could land on
different sides of a drift, and the ratio with them. Interleaving puts both on the same.

For each tool: CPU per second (the run time of its threads from
``/proc/PID/task/*/schedstat``, i.e. utime + stime unrounded, over its windows, so start-up
is not counted), CPU per process-sample, bytes on disk per process-sample. For loadmem
also: the cheap tier and the smaps_rollup reads per process-sample from its own
``recorder`` table, and the oldest PSS figure the recording carried (its freshness
guarantee). A direct measurement of the raw read cost of
``stat + status`` and of ``smaps_rollup`` for these processes is printed for scale.

The process set is double-forked away from this script so that procpath's ``-p`` branch
(which also reads every ancestor of the listed pids) holds no large ancestor; procpath is
also given a JSONPath query that keeps only the 16 processes in its database. Both choices
lower procpath's figures, so the ratios are conservative.

Run (about 11 minutes at the defaults, ~600 MiB; keep the machine otherwise quiet)::

    .venv/bin/python benchmarks/bench_recorder.py                  # 300 s per tool
    .venv/bin/python benchmarks/bench_recorder.py --seconds 90 --rounds 3 --no-write

Results go to ``benchmarks/RESULTS-recorder.md`` (unless ``--no-write``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS-recorder.md"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1 << 20

# Targets from issue 2.
CPU_RATIO_TARGET = 0.10
BYTES_RATIO_TARGET = 0.05
PSS_AGE_TARGET_S = 15.0

#: The process set: a parent that touches ``size`` bytes, forks ``children``, all idle.
#: Double-forked (the launcher exits) and in its own session, so it hangs off init and
#: one killpg ends it; ``alarm`` ends every member on its own if this script dies.
PROCESS_SET = textwrap.dedent(
    """
    import os, signal, sys
    size, children, life = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    if os.fork():
        os._exit(0)
    os.setsid()
    signal.alarm(life)
    buf = bytearray(size)
    buf[::4096] = b"\\x01" * len(range(0, size, 4096))  # make every page resident
    pids = [os.getpid()]
    for _ in range(children):
        pid = os.fork()
        if pid == 0:
            signal.alarm(life)
            while True:
                signal.pause()
        pids.append(pid)
    sys.stdout.write(" ".join(map(str, pids)) + "\\n")
    sys.stdout.flush()
    os.close(1)
    while True:
        signal.pause()
    """
)


@dataclass
class ToolRun:
    """What one tool cost over the steady window, and over its whole life."""

    name: str
    window_s: float = 0.0
    window_cpu_s: float = 0.0
    life_cpu_s: float = 0.0
    life_s: float = 0.0
    samples: int = 0  # process-samples stored (rows)
    window_samples: int = 0  # of which inside the steady window
    bytes_on_disk: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu_per_s(self) -> float:
        return self.window_cpu_s / self.window_s if self.window_s else float("nan")

    @property
    def cpu_us_per_sample(self) -> float:
        n = self.window_samples
        return self.window_cpu_s / n * 1e6 if n else float("nan")

    @property
    def bytes_per_sample(self) -> float:
        return self.bytes_on_disk / self.samples if self.samples else float("nan")


# --- process set ------------------------------------------------------------------------


def start_process_set(size: int, children: int, life_s: int) -> list[int]:
    launcher = subprocess.Popen(
        [sys.executable, "-c", PROCESS_SET, str(size), str(children), str(life_s)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert launcher.stdout is not None
    line = launcher.stdout.readline()
    launcher.wait(timeout=60)
    pids = [int(p) for p in line.split()]
    if len(pids) != children + 1:
        raise SystemExit(f"process set did not start (got {line!r})")
    return pids


def stop_process_set(pids: list[int]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pids[0], signal.SIGTERM)  # the parent leads its own session and group


def ancestors(pid: int) -> list[str]:
    chain = []
    while pid > 0:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        chain.append(f"{pid}:{comm}")
        pid = int(stat[stat.rindex(")") + 2 :].split()[1])
    return chain


# --- measuring a tool -------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """CPU time of one process: the run time of all its threads in nanoseconds from
    ``/proc/PID/task/*/schedstat`` (what utime + stime are scaled from, without their 10 ms
    clock-tick rounding), or utime + stime from ``/proc/PID/stat`` where schedstat is absent."""
    try:
        return sum(int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
                   for tid in os.listdir(f"/proc/{pid}/task")) / 1e9
    except (OSError, ValueError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK


def run_tool(
    name: str,
    cmd: list[str],
    warmup: float,
    seconds: float,
    stop_after: float,
    log: Path,
    profiler: Callable[[int], subprocess.Popen] | None = None,
) -> ToolRun:
    """Start ``cmd``; read its CPU at ``warmup`` and ``warmup + seconds``; let it finish.

    The tool ends itself after ``stop_after`` seconds (its own duration option); it is sent
    SIGINT if it overruns by 30 s, then killed. ``profiler(pid)``, if given, is started
    when the window opens (``--profile``).
    """
    run = ToolRun(name)
    with log.open("w") as out:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        time.sleep(max(0.0, t0 + warmup - time.monotonic()))
        prof = profiler(proc.pid) if profiler else None
        c0, w0, wall0 = cpu_seconds(proc.pid), time.monotonic(), time.time()
        time.sleep(max(0.0, w0 + seconds - time.monotonic()))
        c1, w1, wall1 = cpu_seconds(proc.pid), time.monotonic(), time.time()
        run.window_s, run.window_cpu_s = w1 - w0, c1 - c0
        run.extra["windows_wall"] = [(wall0, wall1)]
        run.extra["steady_wall"] = (wall0, wall1)
        if prof is not None:
            prof.wait(timeout=seconds + 60)
        status, rusage = _wait(proc, t0 + stop_after + 30)
        run.life_s = time.monotonic() - t0
        run.life_cpu_s = rusage.ru_utime + rusage.ru_stime
        run.extra["exit_status"] = status
    return run


def _wait(proc: subprocess.Popen, deadline: float) -> tuple[int, Any]:
    sent = None
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, rusage
        now = time.monotonic()
        if now > deadline and sent is None:
            proc.send_signal(signal.SIGINT)
            sent = now
        elif sent is not None and now > sent + 20:
            proc.kill()
        time.sleep(0.1)


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --- loadmem ----------------------------------------------------------------------------


def bench_loadmem(
    pids: list[int],
    work: Path,
    warmup: float,
    seconds: float,
    profiler: Callable[[int], subprocess.Popen] | None = None,
) -> ToolRun:
    out = work / "rec"
    duration = warmup + seconds + 1
    cmd = [sys.executable, "-m", "loadmem", "record", "--pid", str(pids[0]),
           "--duration", f"{duration:g}s", "--out", str(out)]  # fmt: skip
    run = run_tool(
        "loadmem record", cmd, warmup, seconds, duration, work / "loadmem.log", profiler
    )
    run.extra["cmd"] = " ".join(cmd[1:]).replace(str(out), "DIR")
    if run.extra["exit_status"] != 0:
        raise SystemExit(
            f"loadmem record failed ({run.extra['exit_status']}):\n"
            + (work / "loadmem.log").read_text()[-2000:]
        )
    analyse_recording(run, out, set(pids))
    return run


def analyse_recording(run: ToolRun, out: Path, pids: set[int]) -> None:
    """Fill ``run`` from the recording: rows, bytes, PSS ages, the recorder's own timings."""
    import pyarrow.compute as pc

    from loadmem.recording import open_recording

    rec = open_recording(out)
    procs = rec.table("processes")
    in_window = _window_mask(procs, run.extra["windows_wall"])
    steady = _window_mask(procs, [run.extra["steady_wall"]])
    run.samples = procs.num_rows
    run.window_samples = _count(in_window)
    run.bytes_on_disk = dir_bytes(out)
    x = run.extra
    x["complete"] = rec.complete
    x["watched_pids"] = len(set(procs.column("pid").to_pylist()) & pids)
    x["ticks"] = len(set(procs.column("tick").to_pylist()))
    x["tables"] = {
        name: (rec.table(name).num_rows, sum(f.stat().st_size for f in rec.files(name)))
        for name in ("system", "processes", "cgroup", "recorder", "events")
        if rec.has(name)
    }
    x["marginal_bytes_per_sample"] = marginal_bytes(rec, x["ticks"], procs.num_rows)

    # the freshness promise: how long a figure went unconfirmed (0 while nothing that moves
    # PSS moved); recordings from before pss_stale_s: the age of the read
    read_age = pc.subtract(procs.column("t"), procs.column("pss_read_t"))
    age = procs.column("pss_stale_s") if "pss_stale_s" in procs.column_names else read_age
    x["pss_age_max_s"] = pc.max(age).as_py()
    x["pss_age_max_window_s"] = pc.max(pc.filter(age, steady)).as_py()
    x["pss_age_p99_window_s"] = _quantile(pc.filter(age, steady), 0.99)
    x["pss_read_age_max_window_s"] = pc.max(pc.filter(read_age, steady)).as_py()
    x["pss_never_read_rows"] = procs.column("pss_read_t").null_count

    r = rec.table("recorder")
    if not r.num_rows:
        return

    def total(col: str) -> float:
        return float(pc.sum(pc.fill_null(r.column(col), 0)).as_py() or 0)

    samples, reads = total("processes"), total("smaps_reads")
    x["cheap_us_per_sample"] = total("cheap_us") / samples if samples else None
    x["smaps_us_per_read"] = total("smaps_us") / reads if reads else None
    x["smaps_max_us"] = pc.max(r.column("smaps_max_us")).as_py()
    x["smaps_reads"] = reads
    per_tick = [v or 0 for v in r.column("smaps_reads").to_pylist()]
    x["ticks_with_reads"] = sum(1 for v in per_tick if v)
    x["max_reads_per_tick"] = max(per_tick)
    x["other_us_per_tick"] = (total("tick_us") - total("cheap_us") - total("smaps_us")) / r.num_rows
    x["tick_us_mean"] = total("tick_us") / r.num_rows
    x["budget_min_s"] = pc.min(r.column("budget_s")).as_py()
    x["pss_oldest_s_max"] = pc.max(r.column("pss_oldest_s")).as_py()
    if "cpu_children" in r.column_names:  # compaction children: their CPU, in the windows
        start = float(rec.meta["start_epoch"])
        ts = r.column("t").to_pylist()
        kids = [v or 0.0 for v in r.column("cpu_children").to_pylist()]

        def kids_at(wall: float) -> float:
            before = [k for t, k in zip(ts, kids, strict=True) if start + t <= wall]
            return before[-1] if before else 0.0

        extra = sum(kids_at(w1) - kids_at(w0) for w0, w1 in run.extra["windows_wall"])
        x["children_cpu_window_s"] = extra
        x["children_cpu_life_s"] = kids[-1] if kids else 0.0
        run.window_cpu_s += extra
    sel = _window_mask(r, [run.extra["steady_wall"]])
    cpu = pc.filter(pc.add(r.column("cpu_user"), r.column("cpu_system")), sel).to_pylist()
    rt = pc.filter(r.column("t"), sel).to_pylist()
    if len(cpu) >= 2 and rt[-1] > rt[0]:
        x["self_reported_cpu_per_s"] = (cpu[-1] - cpu[0]) / (rt[-1] - rt[0])
    x["notes"] = rec.notes


def _window_mask(table: Any, windows: list[tuple[float, float]]) -> Any:
    """Rows whose ``ts`` falls in any of the wall-clock windows."""
    import datetime as dt

    import pyarrow as pa
    import pyarrow.compute as pc

    ts_type = table.schema.field("ts").type
    ts = table.column("ts")
    mask = None
    for window in windows:
        w0, w1 = (pa.scalar(dt.datetime.fromtimestamp(w, dt.UTC), ts_type) for w in window)
        m = pc.and_(pc.greater_equal(ts, w0), pc.less_equal(ts, w1))
        mask = m if mask is None else pc.or_(mask, m)
    return mask


def _count(mask: Any) -> int:
    import pyarrow.compute as pc

    return int(pc.sum(pc.cast(mask, "int64")).as_py() or 0)


def _quantile(values: Any, q: float) -> float | None:
    import pyarrow.compute as pc

    got = pc.quantile(values, q=q).to_pylist()
    return got[0] if got else None


def marginal_bytes(rec: Any, ticks: int, samples: int) -> float | None:
    """Bytes one more tick adds per process-sample, all tables together, once merged.

    Each table is written again (zstd, as the merge writes it) with the rows of the first
    half of the ticks; (full - half) / (samples of the second half) is what a longer
    recording converges to, without the fixed cost of the files' footers and schemas.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if ticks < 4:
        return None
    half_tick = ticks // 2
    extra_bytes, extra_samples = 0, 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("system", "processes", "cgroup", "recorder", "events"):
            if not rec.has(name):
                continue
            table = rec.table(name)
            if "tick" in table.column_names:
                half = table.filter(pc.less(table.column("tick"), half_tick))
            else:  # events: no tick; split by time
                half = table.slice(0, table.num_rows // 2)
            sizes = []
            for i, part in enumerate((table, half)):
                path = Path(tmp) / f"{name}-{i}.parquet"
                pq.write_table(part, path, compression="zstd", use_dictionary=True)
                sizes.append(path.stat().st_size)
            extra_bytes += sizes[0] - sizes[1]
            if name == "processes":
                extra_samples = table.num_rows - half.num_rows
    return extra_bytes / extra_samples if extra_samples else None


# --- procpath ---------------------------------------------------------------------------


def ensure_procpath(venv: Path) -> tuple[Path, str]:
    exe = venv / "bin" / "procpath"
    if not exe.exists():
        print(f"installing procpath into {venv} (a throw-away venv, not a loadmem dependency)")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "procpath"], check=True)
    version = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import importlib.metadata as m; print(m.version('procpath'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    print(f"procpath {version} from {exe}")
    return exe, version


def procpath_cmd(exe: Path, pids: list[int], db: Path, records: int) -> tuple[list[str], str]:
    """procpath's command for ``records`` 1-s samples, and how the report shows it."""
    query = f"$..children[?(@.stat.pid == {pids[0]})]"
    cmd = [str(exe), "record", "-f", "stat,status,smaps_rollup", "-i", "1", "-r", str(records),
           "-d", str(db), "-p", ",".join(map(str, pids)), query]  # fmt: skip
    shown = " ".join(cmd[1:-3]).replace(str(db), "bench.sqlite")
    return cmd, f"procpath {shown} -p PIDLIST '{query}'"


def add_procpath_db(run: ToolRun, db: Path, window: tuple[float, float]) -> None:
    """Add one procpath database's rows and bytes to ``run``."""
    with sqlite3.connect(db) as con:
        run.samples += con.execute("select count(*) from record").fetchone()[0]
        run.window_samples += con.execute(  # procpath's ts is the wall clock (epoch seconds)
            "select count(*) from record where ts >= ? and ts <= ?", window
        ).fetchone()[0]
        run.extra["ticks"] = run.extra.get("ticks", 0) + con.execute(
            "select count(distinct ts) from record").fetchone()[0]
        run.extra["pids"] = con.execute("select count(distinct stat_pid) from record").fetchone()[0]
    run.bytes_on_disk += db.stat().st_size


# --- the interleaved run ----------------------------------------------------------------


def window_order(rounds: int) -> list[str]:
    """``L`` (loadmem alone) and ``P`` (procpath) windows, ABBA: L P P L L P ... so that a
    drift of the machine over the run weighs on both tools alike."""
    order: list[str] = []
    for r in range(rounds):
        order += ["L", "P"] if r % 2 == 0 else ["P", "L"]
    return order


def interleaved(exe: Path, pids: list[int], work: Path, warmup: float, seconds: float,
                rounds: int) -> tuple[ToolRun, ToolRun]:
    """One ``loadmem record`` for the whole run; ``procpath record`` started and stopped
    around it. loadmem's CPU is measured in the windows where it runs alone, procpath's in
    its own windows (loadmem keeps recording meanwhile: one long recording, for the bytes
    and the PSS ages). Each tool gets ``seconds`` in ``rounds`` windows."""
    window = seconds / rounds
    order = window_order(rounds)
    pp_records = int(warmup + window + 1)
    total = warmup + rounds * (2 * window + warmup + 3) + 10
    out = work / "rec"
    cmd = [sys.executable, "-m", "loadmem", "record", "--pid", str(pids[0]),
           "--duration", f"{total:.0f}s", "--out", str(out)]  # fmt: skip
    lm, pp = ToolRun("loadmem record"), ToolRun("procpath record")
    lm.extra.update(cmd=" ".join(cmd[1:]).replace(str(out), "DIR"), windows=[],
                    windows_wall=[], beside_procpath=[])
    pp.extra.update(windows=[], windows_wall=[], runs=0)
    with (work / "loadmem.log").open("w") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        time.sleep(max(0.0, t0 + warmup - time.monotonic()))
        first_wall = time.time()
        for n, kind in enumerate(order):
            print(f"  window {n + 1}/{len(order)}: {'loadmem alone' if kind == 'L' else 'procpath'}"
                  f" ({window:.0f} s)", flush=True)
            if kind == "L":
                c0, w0, wall0 = cpu_seconds(proc.pid), time.monotonic(), time.time()
                time.sleep(window)
                c1, w1, wall1 = cpu_seconds(proc.pid), time.monotonic(), time.time()
                lm.window_s += w1 - w0
                lm.window_cpu_s += c1 - c0
                lm.extra["windows"].append((c1 - c0) / (w1 - w0))
                lm.extra["windows_wall"].append((wall0, wall1))
                continue
            db = work / f"procpath-{n}.sqlite"
            pcmd, pp.extra["cmd"] = procpath_cmd(exe, pids, db, pp_records)
            with (work / f"procpath-{n}.log").open("w") as plog:
                p0 = time.monotonic()
                pproc = subprocess.Popen(pcmd, stdout=plog, stderr=subprocess.STDOUT)
                time.sleep(warmup)
                c0, l0, w0, wall0 = (cpu_seconds(pproc.pid), cpu_seconds(proc.pid),
                                     time.monotonic(), time.time())
                time.sleep(window)
                c1, l1, w1, wall1 = (cpu_seconds(pproc.pid), cpu_seconds(proc.pid),
                                     time.monotonic(), time.time())
                status, rusage = _wait(pproc, p0 + pp_records + 30)
            if status != 0:
                raise SystemExit(f"procpath record failed ({status}): see {plog.name}")
            pp.window_s += w1 - w0
            pp.window_cpu_s += c1 - c0
            pp.life_cpu_s += rusage.ru_utime + rusage.ru_stime
            pp.life_s += time.monotonic() - p0
            pp.extra["runs"] += 1
            pp.extra["windows"].append((c1 - c0) / (w1 - w0))
            pp.extra["windows_wall"].append((wall0, wall1))
            lm.extra["beside_procpath"].append((l1 - l0) / (w1 - w0))
            add_procpath_db(pp, db, (wall0, wall1))
        lm.extra["steady_wall"] = (first_wall, time.time())
        status, rusage = _wait(proc, t0 + total + 30)
    lm.life_s = time.monotonic() - t0
    lm.life_cpu_s = rusage.ru_utime + rusage.ru_stime
    if status != 0:
        raise SystemExit(f"loadmem record failed ({status}):\n"
                         + (work / "loadmem.log").read_text()[-2000:])
    analyse_recording(lm, out, set(pids))
    return lm, pp


# --- raw read costs ---------------------------------------------------------------------


def raw_read_costs(pids: list[int], rounds: int = 20) -> dict[str, float]:
    """CPU µs (user + kernel, ``time.process_time``) per process for the raw file reads."""

    def cost(names: tuple[str, ...], n: int) -> float:
        c0 = time.process_time()
        for _ in range(n):
            for pid in pids:
                for name in names:
                    with open(f"/proc/{pid}/{name}", "rb") as f:
                        f.read()
        return (time.process_time() - c0) / (n * len(pids)) * 1e6

    return {
        "stat+status": cost(("stat", "status"), rounds * 10),
        "smaps_rollup": cost(("smaps_rollup",), rounds),
    }


# --- profile (--profile) ----------------------------------------------------------------


def ensure_py_spy(venv: Path) -> Path:
    exe = venv / "bin" / "py-spy"
    if not exe.exists():
        print(f"installing py-spy into {venv} (a throw-away venv)")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "py-spy"], check=True)
    return exe


def py_spy(exe: Path, out: Path, seconds: float) -> Callable[[int], subprocess.Popen]:
    def start(pid: int) -> subprocess.Popen:
        return subprocess.Popen(
            [str(exe), "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "200",
             "--nonblocking", "--format", "raw", "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    return start


def profile_summary(raw: Path, depth: int = 3, top: int = 15) -> list[str]:
    """The call paths (``depth`` frames below the recording loop) that took the most CPU."""
    paths: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        total += int(n)
        loop = next((i for i, f in enumerate(frames) if f.startswith("Recorder._loop")), None)
        below = frames[loop + 1 : loop + 1 + depth] if loop is not None else frames[-depth:]
        paths[" > ".join(below) or "(the loop itself)"] += int(n)
    lines = [f"{total} samples at 200 Hz ({total / 200:.2f} s of CPU):", ""]
    lines += [f"- {100 * n / total:5.1f} %  {path}" for path, n in paths.most_common(top)]
    return lines


# --- report -----------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "memory": f"{int(mem) // 1024} MiB",
        "thp": _read("/sys/kernel/mm/transparent_hugepage/enabled"),
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return "n/a"


def _f(x: Any, fmt: str) -> str:
    return "n/a" if x is None or x != x else format(x, fmt)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


@dataclass
class Verdict:
    cpu_ratio: float | None
    bytes_ratio: float | None
    pss_age: float | None

    @property
    def checks(self) -> dict[str, bool]:
        return {
            "cpu": self.cpu_ratio is not None and self.cpu_ratio <= CPU_RATIO_TARGET,
            "pss_age": self.pss_age is not None and self.pss_age <= PSS_AGE_TARGET_S,
            "bytes": self.bytes_ratio is not None and self.bytes_ratio <= BYTES_RATIO_TARGET,
        }

    @property
    def ok(self) -> bool:
        return all(self.checks.values())


def _met(ok: bool) -> str:
    return "met" if ok else "**MISSED**"


def results_table(lm: ToolRun, pp: ToolRun, v: Verdict) -> list[str]:
    c = v.checks
    x = lm.extra
    marginal = x.get("marginal_bytes_per_sample")
    rows = [
        ("recorder CPU per second, steady window (% of one core)",
         _f(lm.cpu_per_s * 100, ".2f"), _f(pp.cpu_per_s * 100, ".2f"), _f(v.cpu_ratio, ".3f"),
         f"<= {CPU_RATIO_TARGET:g}: {_met(c['cpu'])}"),
        ("the same, window by window (% of one core)",
         " / ".join(_f(100 * w, ".2f") for w in lm.extra.get("windows", [])),
         " / ".join(_f(100 * w, ".2f") for w in pp.extra.get("windows", [])), "", ""),
        ("CPU per process-sample, everything included (µs)",
         _f(lm.cpu_us_per_sample, ".0f"), _f(pp.cpu_us_per_sample, ".0f"),
         _f(_ratio(lm.cpu_us_per_sample, pp.cpu_us_per_sample), ".3f"), ""),
        ("longest a PSS figure went unconfirmed, steady window (s)",
         _f(v.pss_age, ".1f"), "~1 (all read every tick)", "",
         f"<= {PSS_AGE_TARGET_S:g} s: {_met(c['pss_age'])}"),
        ("bytes on disk per process-sample (whole recording / rows)",
         _f(lm.bytes_per_sample, ".1f"), _f(pp.bytes_per_sample, ".1f"),
         _f(v.bytes_ratio, ".4f"), f"<= {BYTES_RATIO_TARGET:g}: {_met(c['bytes'])}"),
        ("bytes per process-sample, marginal (a longer recording tends to this)",
         _f(marginal, ".1f"), _f(pp.bytes_per_sample, ".1f"),
         _f(_ratio(marginal, pp.bytes_per_sample), ".4f"), ""),
        ("process-samples stored (rows)", str(lm.samples), str(pp.samples), "", ""),
        ("bytes on disk", str(lm.bytes_on_disk), str(pp.bytes_on_disk), "", ""),
    ]  # fmt: skip
    return [
        "| figure | loadmem record | procpath record | ratio | target |",
        "|---|---|---|---|---|",
        *[f"| {' | '.join(r)} |" for r in rows],
    ]


def loadmem_details(lm: ToolRun) -> list[str]:
    x = lm.extra
    tables = ", ".join(
        f"{name} {size} B / {rows} rows" for name, (rows, size) in x.get("tables", {}).items()
    )
    self_cpu = x.get("self_reported_cpu_per_s")
    return [
        "Where loadmem's time and bytes go (its own `recorder` table; wall time per tick):",
        "",
        f"- cheap tier (meminfo, discovery, stat + status of every watched process): "
        f"{_f(x.get('cheap_us_per_sample'), '.0f')} µs per process-sample",
        f"- smaps_rollup: {_f(x.get('smaps_us_per_read'), '.0f')} µs per read (longest "
        f"{_f(x.get('smaps_max_us'), '.0f')} µs); {_f(x.get('smaps_reads'), '.0f')} reads in "
        f"{x.get('ticks')} ticks for {x.get('watched_pids')} processes, on "
        f"{x.get('ticks_with_reads')} ticks, at most {x.get('max_reads_per_tick')} in one tick",
        f"- the rest of a tick (cgroup files, building rows): "
        f"{_f(x.get('other_us_per_tick'), '.0f')} µs; mean tick {_f(x.get('tick_us_mean'), '.0f')} "
        f"µs; segment writes and the merge come on top",
        f"- CPU per second it reports itself (`recorder` table): "
        f"{_f(self_cpu * 100 if self_cpu is not None else None, '.2f')} %; "
        f"lowest budget balance {_f(x.get('budget_min_s'), '.3f')} CPU s",
        f"- PSS figures unconfirmed (`pss_stale_s`) in the steady window: max "
        f"{_f(x.get('pss_age_max_window_s'), '.1f')} s, p99 "
        f"{_f(x.get('pss_age_p99_window_s'), '.1f')} s; over the whole recording "
        f"{_f(x.get('pss_age_max_s'), '.1f')} s. The reads themselves: up to "
        f"{_f(x.get('pss_read_age_max_window_s'), '.0f')} s old in the window (`pss_oldest_s` "
        f"max {_f(x.get('pss_oldest_s_max'), '.1f')} s): idle figures stay current and are "
        f"re-read every 8 x --pss-max-age; rows before the first read: "
        f"{x.get('pss_never_read_rows')}",
        f"- compaction children (counted in the windows they ended in): "
        f"{_f(x.get('children_cpu_window_s'), '.3f')} CPU s in the windows, "
        f"{_f(x.get('children_cpu_life_s'), '.3f')} over the whole recording",
        f"- on disk, merged, finished cleanly: {x.get('complete')}: {tables}",
        *bytes_projection(lm),
    ]


def bytes_projection(lm: ToolRun) -> list[str]:
    """Split the recording's size into a fixed part (footers, schemas) and a per-row part."""
    marginal = lm.extra.get("marginal_bytes_per_sample")
    procs = lm.extra.get("watched_pids") or 0
    if marginal is None or not procs:
        return []
    fixed = lm.bytes_on_disk - marginal * lm.samples
    hour = 3600 * procs
    return [
        f"- size = fixed part {fixed / 1024:.0f} KiB (Parquet footers, schemas, column chunk "
        f"headers of the tables: independent of the length) + {marginal:.1f} bytes per "
        f"process-sample; projected for a 1-hour recording of these {procs} processes at 1 s: "
        f"{(fixed + marginal * hour) / hour:.1f} bytes per process-sample",
    ]


def render(lm: ToolRun, pp: ToolRun, raw: dict[str, float], setup: dict[str, Any]
           ) -> tuple[str, Verdict]:  # fmt: skip
    v = Verdict(
        cpu_ratio=_ratio(lm.cpu_per_s, pp.cpu_per_s),
        bytes_ratio=_ratio(lm.bytes_per_sample, pp.bytes_per_sample),
        pss_age=lm.extra.get("pss_age_max_window_s"),
    )
    missed = [k for k, ok in v.checks.items() if not ok]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "# Recorder benchmark: `loadmem record` vs `procpath record`",
        "",
        f"Generated by `benchmarks/bench_recorder.py` on {when} "
        f"(total run time {setup['elapsed_s']:.0f} s).",
        "",
        "## Machine",
        "",
        *[f"- {k}: {val}" for k, val in machine().items()],
        "",
        "## Process set and commands",
        "",
        f"- {setup['processes']} processes: a Python parent touched {setup['size_mib']} MiB of "
        "private anonymous memory, then forked the others; all idle, sharing it copy-on-write.",
        f"- ancestors of the parent: {' <- '.join(setup['ancestors'][1:]) or 'none'}",
        f"- measured: {lm.window_s:.0f} s of loadmem alone and {pp.window_s:.0f} s of procpath, "
        f"in {len(lm.extra.get('windows', []))} windows each, interleaved L P P L L P ... "
        "(a drift of the machine during the run weighs on both tools alike). One "
        "`loadmem record` ran from start to end (one recording, for the bytes and PSS "
        f"ages); procpath was started for each of its windows, after a {setup['warmup']:g} s "
        "warm-up, and ended by itself after it. CPU is the run time of each tool's threads "
        "(`/proc/PID/task/*/schedstat`: utime + stime, unrounded) over its windows only.",
        "- loadmem's CPU while procpath ran beside it (not counted above): "
        + " / ".join(_f(100 * w, ".2f") for w in lm.extra.get("beside_procpath", [])) + " %",
        f"- whole life: loadmem {_f(lm.life_cpu_s, '.2f')} CPU s over {lm.life_s:.0f} s "
        f"(start-up and merge included); procpath {_f(pp.life_cpu_s, '.2f')} CPU s over "
        f"{pp.extra.get('runs')} runs of {pp.life_s / max(pp.extra.get('runs') or 1, 1):.0f} s",
        f"- loadmem: `loadmem {' '.join(lm.extra['cmd'].split()[2:])}` "
        "(defaults: interval 1 s, PSS budget 2 %, PSS max age 15 s, flush 5 s)",
        f"- procpath {pp.extra.get('version', '')}: `{pp.extra['cmd']}`",
        "",
        "## Results",
        "",
        *results_table(lm, pp, v),
        "",
        *loadmem_details(lm),
        "",
        "Raw read cost on these processes (`time.process_time`, user + kernel, no parsing):",
        "",
        f"- `stat` + `status`: {raw['stat+status']:.0f} µs per process",
        f"- `smaps_rollup`: {raw['smaps_rollup']:.0f} µs per process "
        f"({setup['size_mib']} MiB resident each)",
        "",
        "Targets: " + ("all met." if v.ok else "NOT all met: " + ", ".join(missed) + "."),
        "",
    ]
    return "\n".join(lines), v


NOTES_MARK = "<!-- notes below are written by hand and kept when the script rewrites this file -->"


def kept_notes(path: Path) -> str:
    """The hand-written part of an existing results file (after ``NOTES_MARK``)."""
    try:
        old = path.read_text()
    except OSError:
        return ""
    i = old.find(NOTES_MARK)
    return "\n" + old[i:] if i >= 0 else ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=300,
                    help="steady time per tool, split into --rounds windows (default 300)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="windows per tool, interleaved L P P L L P ... (default 3)")
    ap.add_argument("--warmup", type=float, default=5, help="seconds before the window opens")
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--processes", type=int, default=16)
    ap.add_argument("--procpath-venv", type=Path, default=Path("/tmp/procpath-venv"))
    ap.add_argument("--keep", type=Path, help="keep the recording and the SQLite file here")
    ap.add_argument("--profile", action="store_true",
                    help="instead: profile loadmem record with py-spy (a throw-away venv, "
                    "--py-spy-venv) over the window and print where its CPU goes")
    ap.add_argument("--py-spy-venv", type=Path, default=Path("/tmp/pyspy-venv"))
    ap.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.name}")
    args = ap.parse_args(argv)

    if args.profile:
        return profile(args)
    t_start = time.monotonic()
    exe, version = ensure_procpath(args.procpath_venv)
    life = int(2 * args.seconds + args.rounds * (args.warmup + 3) + args.warmup + 300)
    pids = start_process_set(args.size_mib * MIB, args.processes - 1, life)
    setup: dict[str, Any] = {"processes": len(pids), "size_mib": args.size_mib,
                             "warmup": args.warmup, "ancestors": ancestors(pids[0])}  # fmt: skip
    print(f"process set: parent {pids[0]}, {len(pids)} processes; ancestors {setup['ancestors']}")
    try:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="bench-recorder-", dir=args.keep) as tmp:
            work = Path(tmp)
            raw = raw_read_costs(pids)
            print("raw read CPU per process (µs):", {k: round(v) for k, v in raw.items()})
            print(f"{args.rounds} rounds of {args.seconds / args.rounds:.0f} s per tool, "
                  "loadmem recording throughout ...", flush=True)
            lm, pp = interleaved(exe, pids, work, args.warmup, args.seconds, args.rounds)
            pp.extra["version"] = version
            for run in (lm, pp):
                print(f"  {run.name}: {run.cpu_per_s * 100:.2f} % of a core (windows: "
                      + ", ".join(f"{100 * w:.2f}" for w in run.extra["windows"])
                      + f"), {run.bytes_per_sample:.1f} B/sample")
            setup["elapsed_s"] = time.monotonic() - t_start
            text, verdict = render(lm, pp, raw, setup)
            if args.keep:
                for f in work.iterdir():
                    f.rename(args.keep / f.name)
    finally:
        stop_process_set(pids)
    print()
    print(text)
    if not args.no_write:
        RESULTS.write_text(text + kept_notes(RESULTS))
        print(f"written to {RESULTS}")
    return 0 if verdict.ok else 1


def profile(args: argparse.Namespace) -> int:
    """``--profile``: only loadmem, under py-spy; nothing is written to the results file."""
    spy = ensure_py_spy(args.py_spy_venv)
    pids = start_process_set(args.size_mib * MIB, args.processes - 1, int(args.seconds) + 240)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-recorder-") as tmp:
            raw = Path(tmp) / "profile.txt"
            lm = bench_loadmem(
                pids, Path(tmp), args.warmup, args.seconds, py_spy(spy, raw, args.seconds)
            )
            print(f"loadmem record (profiled): {lm.cpu_per_s * 100:.2f} % of a core")
            print("\n".join(profile_summary(raw)))
    finally:
        stop_process_set(pids)
    return 0


if __name__ == "__main__":
    sys.exit(main())
