"""Soak: `loadmem record` accelerated for a long time, then killed.

Time is compressed ten times: ``--interval 0.1s`` and ``--flush 0.5s``, so that half an
hour writes as many rows, segments and compactions (one every 120 segments: every minute)
as five hours at the defaults. The process set has something for every part of the
recorder: a parent that touched 64 MiB and forked 9 children sharing it, 7 of them idle
(their figures stay current) and 2 faulting all the time (touching 4 MiB and dropping it
every 100 ms: re-read within the budget); the parent forks a short-lived child every 20 s
(process start and exit, pid churn).

Every ``--sample`` seconds (default 60) it records the recorder's RSS, its CPU over the last
sample (run time of its threads from ``/proc/PID/task/*/schedstat``, plus its compaction
children, from its own ``recorder`` table at the end), the files and bytes of the recording,
and the gaps so far. At the end it kills the recorder with SIGKILL and measures what was
lost: the time from the kill back to the last row on disk (target: at most ``--flush`` plus
one interval), and whether every table still reads.

Targets: RSS flat (the last sample within 5 MiB of the one after the first compaction); CPU
flat (no upward trend); the file count bounded (compacted files grow by five per compaction,
segments never pile up); no gap caused by the recorder itself; loss on SIGKILL <= flush +
interval.

Run from the repository root: ``.venv/bin/python benchmarks/bench_soak.py`` (30 minutes at
the defaults, ``--minutes 120`` for longer; ``--minutes 2 --sample 15 --no-write`` for a
smoke test). About 150 MiB. Results go to ``benchmarks/RESULTS-soak.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "RESULTS-soak.md"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_recorder import cpu_seconds  # noqa: E402
from machine import machine_lines, publish  # noqa: E402

TAG = "loadmem-soak-set"

#: The process set (see the module docstring); prints its parent's pid.
SET = r'''
import contextlib, mmap, os, signal, time
shared = bytearray(64 << 20)
for i in range(0, len(shared), 4096):
    shared[i] = 1
def idle():
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    while True:
        signal.sigwait({signal.SIGUSR1})
def busy():
    m = mmap.mmap(-1, 4 << 20)
    while True:
        for i in range(0, len(m), 4096):
            m[i] = 1
        m.madvise(mmap.MADV_DONTNEED)
        time.sleep(0.1)
for role in [idle] * 7 + [busy] * 2:
    if os.fork() == 0:
        role()
print(os.getpid(), flush=True)
while True:
    pid = os.fork()
    if pid == 0:
        time.sleep(5)
        os._exit(0)
    time.sleep(5.2)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    time.sleep(14.8)
'''


def _rss(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _files(out: Path) -> tuple[int, int, int]:
    """(files, segments not yet compacted, bytes) of the recording directory."""
    files = segs = size = 0
    for p in out.rglob("*"):
        if p.is_file():
            files += 1
            size += p.stat().st_size
            if p.parent != out and p.name.count("-") == 1:
                segs += 1
    return files, segs, size


def run(args: argparse.Namespace) -> dict:
    from loadmem.recording import open_recording

    work = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    (work / "set.py").write_text(SET)
    out = work / "rec"
    pset = subprocess.Popen([sys.executable, str(work / "set.py"), TAG], stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    rec_proc = None
    samples: list[dict] = []
    res: dict = {"work": str(work)}
    try:
        assert pset.stdout is not None
        parent = int(pset.stdout.readline())
        log = (work / "loadmem.log").open("w")
        rec_proc = subprocess.Popen(
            [sys.executable, "-m", "loadmem", "record", "--pid", str(parent), "--out", str(out),
             "--interval", f"{args.interval}s", "--flush", f"{args.flush}s",
             "--pss-budget", f"{args.budget * 100:g}%", "--status-stdout"],
            stdout=subprocess.DEVNULL, stderr=log)
        t0 = time.monotonic()
        c_prev, t_prev = cpu_seconds(rec_proc.pid), t0
        end = t0 + args.minutes * 60
        while time.monotonic() < end:
            time.sleep(max(0.0, min(args.sample, end - time.monotonic())))
            now, cpu = time.monotonic(), cpu_seconds(rec_proc.pid)
            files, segs, size = _files(out)
            samples.append({"t": now - t0, "rss": _rss(rec_proc.pid),
                            "cpu": (cpu - c_prev) / (now - t_prev), "files": files,
                            "segments": segs, "bytes": size})
            c_prev, t_prev = cpu, now
            s = samples[-1]
            print(f"{s['t']:7.0f} s  RSS {s['rss'] / 2**20:6.1f} MiB  CPU {s['cpu'] * 100:5.2f} %"
                  f"  files {files:4d} (segments {segs:3d})  {size / 2**20:7.1f} MiB", flush=True)
        killed_at = time.monotonic()
        rec_proc.kill()
        rec_proc.wait()
    finally:
        if rec_proc is not None and rec_proc.poll() is None:
            rec_proc.kill()
            rec_proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pset.pid, signal.SIGKILL)
        pset.wait()

    rec = open_recording(out)
    start = float(rec.meta["start_monotonic"])
    tables = {}
    for name in ("system", "processes", "cgroup", "recorder", "events"):
        tables[name] = rec.table(name).num_rows if rec.has(name) else 0
    last_t = max(rec.table("system", ["t"]).column("t").to_pylist())
    own = rec.table("recorder", ["t", "cpu_children", "missed_ticks", "rss"]).to_pylist()
    events = rec.table("events").to_pylist()
    gaps = [json.loads(e["data"]) for e in events if e["kind"] == "gap"]
    # the compaction children's CPU, spread over the samples they ended in
    for s in samples:
        lo, hi = s["t"] - args.sample, s["t"]
        kids = [x["cpu_children"] or 0.0 for x in own if lo <= x["t"] <= hi]
        before = [x["cpu_children"] or 0.0 for x in own if x["t"] < lo]
        if kids:
            s["cpu_children"] = (kids[-1] - (before[-1] if before else 0.0)) / args.sample
    res.update(samples=samples, tables=tables, loss_s=killed_at - start - last_t,
               gaps=gaps, warnings=[e["message"] for e in events if e["kind"] == "warning"],
               notes=rec.notes, ticks=len(own),
               segment_dirs=sum(1 for p in out.iterdir() if p.is_dir()),
               missed=sum(x["missed_ticks"] or 0 for x in own),
               children_cpu_s=own[-1]["cpu_children"] if own else None)
    return res


def report(res: dict, args: argparse.Namespace) -> str:
    s = res["samples"]
    after_first = next((x for x in s if x["t"] >= 120 * args.flush + args.sample), s[0])
    rss_step = (s[-1]["rss"] - after_first["rss"]) / 2**20
    cpu = [x["cpu"] + x.get("cpu_children", 0.0) for x in s]
    half = len(cpu) // 2
    first, second = (sum(cpu[:half]) / max(half, 1), sum(cpu[half:]) / max(len(cpu) - half, 1))
    own_gaps = [g for g in res["gaps"] if g["cause"] == "recorder"]
    loss_ok = 0 <= res["loss_s"] <= args.flush + args.interval
    rss_ok = abs(rss_step) <= 5
    cpu_ok = second <= 1.1 * first
    segs_ok = max(x["segments"] for x in s) <= res["segment_dirs"] * (120 + 10)
    lines = [
        "# Soak: `loadmem record` accelerated, then SIGKILLed",
        "",
        "Generated by `benchmarks/bench_soak.py` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "", "## Machine", "", *machine_lines(), "",
        "## Method", "",
        f"- {args.minutes:g} minutes of `loadmem record --interval {args.interval}s --flush "
        f"{args.flush}s --pss-budget {args.budget * 100:g}%` (ten times the defaults' pace: "
        "one compaction every "
        f"{120 * args.flush:.0f} s) on a parent and 9 children sharing 64 MiB (7 idle, 2 faulting "
        "all the time), the parent forking a short-lived child every 20 s; then SIGKILL.",
        f"- sampled every {args.sample:g} s: RSS (`VmRSS`), CPU (schedstat of its threads, plus "
        "its compaction children from `recorder.cpu_children`), files and bytes on disk.",
        "", "## Results", "",
        "| figure | measured | target |", "|---|---|---|",
        f"| loss on the final SIGKILL (kill to last row on disk) | {res['loss_s']:.3f} s | <= "
        f"{args.flush + args.interval:g} s: {'met' if loss_ok else '**missed**'} |",
        f"| RSS: after the first compaction / at the end | {after_first['rss'] / 2**20:.1f} / "
        f"{s[-1]['rss'] / 2**20:.1f} MiB ({rss_step:+.1f}) | flat (within 5 MiB): "
        f"{'met' if rss_ok else '**missed**'} |",
        f"| CPU, first half / second half (% of a core) | {first * 100:.2f} / {second * 100:.2f} "
        f"| no upward trend: {'met' if cpu_ok else '**missed**'} |",
        f"| segments waiting for compaction, at most | {max(x['segments'] for x in s)} | "
        f"<= {res['segment_dirs']} tables x 130: {'met' if segs_ok else '**missed**'} |",
        f"| files at the end | {s[-1]['files']} | |",
        f"| ticks / missed / gaps (recorder's own) | {res['ticks']} / {res['missed']} / "
        f"{len(res['gaps'])} ({len(own_gaps)}) | no gap of its own |",
        f"| compaction children, CPU in all | {res['children_cpu_s'] or 0:.2f} s | |",
        "| rows read back after the kill | "
        + ", ".join(f"{k} {v}" for k, v in res["tables"].items()) + " | every table reads |",
        "", "Over time:", "",
        "| t (s) | RSS (MiB) | CPU (% of a core) | files | segments | MiB on disk |",
        "|---|---|---|---|---|---|",
        *[f"| {x['t']:.0f} | {x['rss'] / 2**20:.1f} | "
          f"{(x['cpu'] + x.get('cpu_children', 0.0)) * 100:.2f} | {x['files']} | "
          f"{x['segments']} | {x['bytes'] / 2**20:.1f} |" for x in s],
        "",
    ]
    if own_gaps:
        lines += ["The recorder's own gaps:", "", *[f"- {json.dumps(g)}" for g in own_gaps], ""]
    if res["warnings"] or res["notes"]:
        lines += ["Warnings and notes:", "", *[f"- {w}" for w in res["warnings"] + res["notes"]],
                  ""]
    ok = loss_ok and rss_ok and cpu_ok and segs_ok and not own_gaps
    lines += ["Targets: " + ("all met." if ok else "not all met."), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--sample", type=float, default=60)
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--flush", type=float, default=0.5)
    ap.add_argument("--budget", type=float, default=0.10,
                    help="--pss-budget as a fraction (default 0.10: ten ticks a second cost "
                         "ten times the cheap tier of the defaults)")
    ap.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.name}")
    args = ap.parse_args(argv)
    res = run(args)
    text = report(res, args)
    publish(text, RESULTS, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
