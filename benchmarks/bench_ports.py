"""What the port lookup across network namespaces costs, at selection and per tick.

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
   paid per tick), and how often ``find_port`` ran during the ticks (target: 0).

Needs root (namespaces, cgroups). Everything it makes is removed at the end. About
``--ticks x --interval x 2`` seconds plus a few seconds of setup.

Run: ``.venv/bin/python benchmarks/bench_ports.py`` (``--no-write`` to only print).
Results: ``benchmarks/RESULTS-ports.md``.
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--namespaces", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--ticks", type=int, default=300)
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_ports needs root (network namespaces, cgroups)", file=sys.stderr)
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
    with contextlib.suppress(OSError):
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()

    m_port, m_pid = statistics.median(ticks_port), statistics.median(ticks_pid)
    lines = [
        "## Port lookup across network namespaces",
        "",
        f"Generated by `benchmarks/bench_ports.py` on "
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
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        (ROOT / "benchmarks" / "RESULTS-ports.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
