"""A small WSGI app whose import builds a table of Python objects (the preloaded state).

Served by gunicorn with ``--preload`` (``gunicorn_conf.py``): the master imports this module,
so the table is built once and its pages are shared copy-on-write by every forked worker.
The table is ``CORPUS_TABLE_MB`` MiB (default 32) of small lists: each list object is a
GC-tracked container, so a full ``gc.collect()`` in a worker writes to the header of every
one of them and the kernel copies those pages for that worker (the unsharing under test).

Requests never touch the table: only the garbage collector does.
"""

from __future__ import annotations

import os

MIB = 1 << 20


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def build_table(mib: int) -> list[list[int]]:
    """Lists of two ints, appended until this process's RSS grew by ``mib`` MiB."""
    table: list[list[int]] = []
    start = _rss()
    i = 1000
    while _rss() - start < mib * MIB:
        for _ in range(20_000):
            table.append([i, i * 3])
            i += 1
    return table


TABLE = build_table(int(os.environ.get("CORPUS_TABLE_MB", "32")))
BODY = b"<html><body>" + str(len(TABLE)).encode() + b" rows</body></html>"


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/html"),
                              ("Content-Length", str(len(BODY)))])
    return [BODY]
