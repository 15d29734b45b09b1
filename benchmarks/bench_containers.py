"""What container support costs the recorder: the port lookup across network namespaces (at
selection and per tick), and the cgroup files read every tick.

Sets up ``--namespaces`` "containers" (default 8): each a network namespace with a veth pair
and a memory cgroup ``<own>/docker/<id>``, with a pre-forking server (master + 1 worker)
listening on the same port 8080 inside, as a host running several web containers does.
In front of container 0, a forwarder named ``docker-proxy`` (with docker-proxy's flags); in
front of container 1, an anonymous forwarder (found by the probe); on this side, one plain
server that is not a proxy (the probe finds nothing, and waits its full time).

Measured:

1. ``find_port`` (the whole lookup: every process's namespace link and fd links, every
   namespace's ``net/tcp{,6}``, the command line or the probe), wall and CPU time, median of
   ``--rounds``, for each of the three cases and for a port only listened on inside a
   namespace (no proxy);
2. ``ProcessSelector.update()`` per tick, for ``--ticks`` ticks at ``--interval``, selecting
   the server behind the docker-proxy with ``--port`` and the same server with ``--pid``:
   the median CPU per tick of each, their ratio (target: about 1, i.e. the lookup is not
   paid per tick), and how often ``find_port`` ran during the ticks (target: 0);
3. one sampling tick (``Sampler.tick``: meminfo, the cheap tier, the cgroup rows) of 16
   processes in one v1 memory cgroup with a limit, with the cgroup rows and without
   (``read_cgroups``), interleaved, with a sleep between ticks as in a recording (cache
   cold): the median CPU per tick of each, and what the cgroup rows add per second at the
   default 1 s interval.

Needs root (namespaces, cgroups). Everything it makes is removed at the end. About
``--ticks x --interval x 2`` seconds plus a few seconds of setup.

Run: ``.venv/bin/python benchmarks/bench_containers.py`` (``--no-write`` to only print).
Results: ``benchmarks/RESULTS-containers.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the namespace/cgroup helpers the tests use

from _netns_support import (  # noqa: E402
    FORWARDER,
    PREFORK,
    docker_id,
    memory_cgroup,
    named_python,
    netns,
    spawn,
    stop,
    system_python,
    wait_listening,
)

import loadmem.recorder.selection as selection_mod  # noqa: E402
from loadmem.procfs.reader import KeptOpenProcFS, ProcFS  # noqa: E402
from loadmem.recorder.ports import find_port  # noqa: E402
from loadmem.recorder.sampler import Sampler  # noqa: E402
from loadmem.recorder.scheduler import TokenBucket  # noqa: E402
from loadmem.recorder.selection import ProcessSelector, Selection  # noqa: E402

PORT = 8080


def machine() -> dict[str, str]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"nproc": str(os.cpu_count()), "cpu": cpu, "kernel": platform.release(),
            "python": platform.python_version(),
            "processes": str(sum(1 for n in os.listdir("/proc") if n.isdigit()))}


def timed(fn, rounds: int) -> tuple[float, float, object]:
    walls, cpus, result = [], [], None
    for _ in range(rounds):
        w0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        cpus.append(time.process_time() - c0)
        walls.append(time.perf_counter() - w0)
    return statistics.median(walls), statistics.median(cpus), result


def per_tick(sel: ProcessSelector, ticks: int, interval: float) -> list[float]:
    out = []
    for _ in range(ticks):
        c0 = time.process_time()
        sel.update()
        out.append(time.process_time() - c0)
        time.sleep(interval)
    return out


def cgroup_ticks(ticks: int, interval: float) -> tuple[list[float], list[float], int]:
    """CPU per Sampler.tick with and without the cgroup rows, 16 processes in one cgroup."""
    import datetime as _dt

    code = ("import os, time\nb = bytearray(8 << 20)\nfor _ in range(15):\n"
            "    if os.fork() == 0:\n        break\nprint('ok', flush=True)\ntime.sleep(600)")
    with memory_cgroup(f"docker/{docker_id()}", limit="1G") as cg:
        p = spawn([system_python(), "-c", code], cgroup=cg)
        try:
            for _ in range(16):
                p.stdout.readline()
            samplers = {}
            for with_cg in (True, False):
                fs = KeptOpenProcFS()
                sel = ProcessSelector(Selection(cgroups=[cg.path]), fs, {os.getpid()})
                sel.check_initial()
                # a huge max age: no smaps_rollup reads (the same in both; not measured here)
                samplers[with_cg] = Sampler(sel, TokenBucket(1e-9), fs, max_age=1e9,
                                            read_cgroups=with_cg)
            n = 0
            rows = 0
            cpu: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(ticks // 20):
                for with_cg in (True, False):
                    for _ in range(20):
                        c0 = time.process_time()
                        res = samplers[with_cg].tick(n, float(n), _dt.datetime.now(_dt.UTC))
                        cpu[with_cg].append(time.process_time() - c0)
                        n += 1
                        rows = max(rows, len(res.cgroup))
                        time.sleep(interval)
            for s in samplers.values():
                s.procfs.close()
            return cpu[True], cpu[False], rows
        finally:
            stop(p)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--namespaces", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--ticks", type=int, default=300)
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("--cgroup-ticks", type=int, default=200)
    ap.add_argument("--cgroup-interval", type=float, default=0.25)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_containers needs root (network namespaces, cgroups)", file=sys.stderr)
        return 2
    started = time.monotonic()
    tmp = Path(f"/tmp/bench-ports-{os.getpid()}")
    tmp.mkdir(exist_ok=True)
    with contextlib.ExitStack() as stack:
        servers, spaces = [], []
        for _ in range(args.namespaces):
            ns = stack.enter_context(netns())
            cg = stack.enter_context(memory_cgroup(f"docker/{docker_id()}"))
            p = spawn([system_python(), "-c", PREFORK, "0.0.0.0", str(PORT), "1"], ns, cg)
            stack.callback(stop, p)
            wait_listening(p)
            servers.append(p)
            spaces.append(ns)
        dproxy = spawn([named_python(tmp, "docker-proxy"), "-c", FORWARDER, "-container-ip",
                        spaces[0].ns_ip, "-container-port", str(PORT)])
        stack.callback(stop, dproxy)
        fwd = spawn([system_python(), "-c", FORWARDER, "-container-ip", spaces[1].ns_ip,
                     "-container-port", str(PORT)])
        stack.callback(stop, fwd)
        plain = spawn([system_python(), "-c", PREFORK, "127.0.0.1", "0", "1"])
        stack.callback(stop, plain)
        dport, fport, pport = wait_listening(dproxy), wait_listening(fwd), wait_listening(plain)
        # one namespace alone listening on a port: move container 2's port? use its own
        solo = spawn([system_python(), "-c", PREFORK, "0.0.0.0", "0", "1"], spaces[2])
        stack.callback(stop, solo)
        sport = wait_listening(solo)
        time.sleep(0.5)

        fs = ProcFS()
        me = {os.getpid()}
        lookups = {}
        for name, port in (("docker-proxy (command line)", dport),
                           ("anonymous forwarder (probe)", fport),
                           ("plain server here (probe finds nothing)", pport),
                           ("listener only in a namespace", sport)):
            wall, cpu, f = timed(lambda port=port: find_port(fs, port, me), args.rounds)
            assert f.found, name  # type: ignore[union-attr]
            lookups[name] = (wall, cpu, f)

        calls = {"n": 0}
        real = selection_mod.find_port

        def counting(*a, **kw):
            calls["n"] += 1
            return real(*a, **kw)

        selection_mod.find_port = counting
        try:
            by_port = ProcessSelector(Selection(ports=[dport]), KeptOpenProcFS(), me)
            by_port.check_initial()
            after_check = calls["n"]
            by_pid = ProcessSelector(Selection(pids=[servers[0].pid]), KeptOpenProcFS(), me)
            by_pid.check_initial()
            for s in (by_port, by_pid):
                per_tick(s, 5, 0.0)  # warm: first listing, kept-open files
            assert set(by_pid.watched) <= set(by_port.watched)
            ticks_port, ticks_pid = [], []
            for _ in range(args.ticks // 50):  # interleaved blocks: a drift hits both
                ticks_port += per_tick(by_port, 50, args.interval)
                ticks_pid += per_tick(by_pid, 50, args.interval)
            during = calls["n"] - after_check
        finally:
            selection_mod.find_port = real
    with_cg, without_cg, cg_rows = cgroup_ticks(args.cgroup_ticks, args.cgroup_interval)
    with contextlib.suppress(OSError):
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()

    m_port, m_pid = statistics.median(ticks_port), statistics.median(ticks_pid)
    added = statistics.median(with_cg) - statistics.median(without_cg)
    lines = [
        "## Containers: port lookup across network namespaces, cgroup rows",
        "",
        f"Generated by `benchmarks/bench_containers.py` on "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC (total run time "
        f"{time.monotonic() - started:.0f} s).",
        "",
        "### Machine",
        "",
        *[f"- {k}: {v}" for k, v in machine().items()],
        "",
        f"### Setup: {args.namespaces} network namespaces, each with a pre-forking server on "
        f"port {PORT} (all the same port), docker-proxy in front of one, an anonymous "
        "forwarder in front of another, one plain server on this side",
        "",
        f"`find_port`, median of {args.rounds} lookups:",
        "",
        "| case | wall | CPU | found by |",
        "|---|---|---|---|",
    ]
    for name, (wall, cpu, f) in lookups.items():
        how = f.proxies[0].how if f.proxies else ("listener" if not f.other_netns  # type: ignore[union-attr]
                                                  else "other namespace")
        lines.append(f"| {name} | {wall * 1000:.1f} ms | {cpu * 1000:.1f} ms | {how} |")
    lines += [
        "",
        f"`ProcessSelector.update()` per tick, {len(ticks_port)} ticks each at "
        f"{args.interval * 1000:.0f} ms, interleaved in blocks of 50:",
        "",
        "| selection | median CPU per tick | p95 |",
        "|---|---|---|",
        f"| `--port` (server behind docker-proxy, in a namespace) | {m_port * 1e6:.0f} µs | "
        f"{sorted(ticks_port)[int(0.95 * len(ticks_port))] * 1e6:.0f} µs |",
        f"| `--pid` (the same server) | {m_pid * 1e6:.0f} µs | "
        f"{sorted(ticks_pid)[int(0.95 * len(ticks_pid))] * 1e6:.0f} µs |",
        "",
        f"- ratio `--port` / `--pid`: {m_port / m_pid:.2f} (the lookup is not paid per tick)",
        f"- `find_port` calls during the {len(ticks_port)} `--port` ticks: {during} (the "
        "listening sockets in this namespace are re-read every 5 s; nothing changed)",
        "",
        f"`Sampler.tick` of 16 processes in one v1 memory cgroup ({cg_rows} cgroup rows a "
        f"tick), {len(with_cg)} ticks each with and without the cgroup rows, interleaved in "
        f"blocks of 20, {args.cgroup_interval * 1000:.0f} ms apart (cache cold, as in a "
        "recording):",
        "",
        "| | median CPU per tick |",
        "|---|---|",
        f"| with the cgroup rows | {statistics.median(with_cg) * 1e6:.0f} µs |",
        f"| without | {statistics.median(without_cg) * 1e6:.0f} µs |",
        "",
        f"- the cgroup rows add {added * 1e6:.0f} µs per tick: {added * 100:.3f} % of a "
        "core at the default 1 s interval",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        (ROOT / "benchmarks" / "RESULTS-containers.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
