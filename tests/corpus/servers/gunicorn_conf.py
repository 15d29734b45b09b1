"""gunicorn configuration for the corpus' pre-fork server (``pyapp.py``, run with --preload).

Environment:

- ``CORPUS_VARIANT``: ``default`` (the workers' idle garbage collection unshares the
  preloaded table) or ``frozen`` (CPython's documented fix: ``gc.disable()`` early in the
  master, ``gc.freeze()`` before each fork, ``gc.enable()`` in the workers).
- ``CORPUS_IDLE_GC_AFTER``: seconds without a request (to any worker) before a worker runs
  its housekeeping ``gc.collect()``; ``CORPUS_IDLE_GC_STAGGER``: extra seconds per worker
  index, so the workers' collections are spread out as they would be on a real server.
- ``CORPUS_REPORT``: a file each worker appends one JSON line to after its collection, with
  its own smaps_rollup figures before and after (the test's independent measure of what it
  copied: the worker's Private_Dirty rises by the pages it copied, as the master still maps
  the originals).

A housekeeping collection runs once per quiet spell that follows traffic: the baseline (no
request yet) triggers nothing. "Traffic" is read from a clock shared by every worker (a
MAP_SHARED page made by the master before forking), so a worker the kernel happened to give
few connections still collects when the server goes quiet.
"""

from __future__ import annotations

import gc
import json
import mmap
import os
import struct
import threading
import time

VARIANT = os.environ.get("CORPUS_VARIANT", "default")
IDLE_AFTER = float(os.environ.get("CORPUS_IDLE_GC_AFTER", "2"))
STAGGER = float(os.environ.get("CORPUS_IDLE_GC_STAGGER", "1"))
REPORT = os.environ.get("CORPUS_REPORT", "")

preload_app = True
worker_class = "sync"
loglevel = "warning"
if VARIANT == "frozen":
    gc.disable()  # before the app (and its table) is imported: no collection leaves holes

_CLOCK = mmap.mmap(-1, 8)  # shared by the workers: time.monotonic() of the last request


def _last_request() -> float:
    return struct.unpack_from("d", _CLOCK, 0)[0]


def pre_request(worker, req):
    if not req.path.startswith("/_corpus/"):  # the test's readiness probe is not traffic
        struct.pack_into("d", _CLOCK, 0, time.monotonic())


def pre_fork(server, worker):
    if VARIANT == "frozen":
        gc.freeze()


def post_fork(server, worker):
    if VARIANT == "frozen":
        gc.enable()


def _rollup() -> dict[str, int]:
    out = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":").lower()] = int(parts[1]) * 1024
    return out


def _idle_gc(index: int) -> None:
    answered = 0.0  # the last request time a collection already followed
    wait = IDLE_AFTER + index * STAGGER
    while True:
        time.sleep(0.1)
        last = _last_request()
        if last <= answered or time.monotonic() - last < wait:
            continue
        answered = last
        before = _rollup()
        t0 = time.monotonic()
        collected = gc.collect()
        t1 = time.monotonic()
        after = _rollup()
        if REPORT:
            line = json.dumps({
                "pid": os.getpid(), "index": index, "variant": VARIANT, "t0": t0, "t1": t1,
                "collected": collected, "before": before, "after": after,
            }) + "\n"
            fd = os.open(REPORT, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)


def post_worker_init(worker):
    index = (worker.age - 1) % max(1, worker.cfg.workers)
    threading.Thread(target=_idle_gc, args=(index,), name="idle-gc", daemon=True).start()
