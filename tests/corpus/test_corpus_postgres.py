"""Corpus: PostgreSQL's shared buffers mapped by its backends under load (a look-alike).

A fresh cluster (shared_buffers=128MB, empty after a restart) behind a small HTTP front end
with a pool of 4 persistent connections (``servers/pgfront.py``); the load reads random
ranges of a ~115 MB table through the shared buffers. Every backend's RSS rises as it maps
buffer pages (RssShmem), so the sum of RSS rises about 4 times what the shared segment
(Shmem) does, while what each backend holds alone stays flat. The independent measure is
PostgreSQL's own count of filled buffers (pg_buffercache) × 8 KiB.

Right verdict: the shmem finding, sized by ΔShmem and printed with that size; no growth, no
copy-on-write.
"""

from __future__ import annotations

import re

import pytest
from corpus_support import COW, GROWTH, SHMEM, MiB, near, sizes_in

pytestmark = [pytest.mark.slow, pytest.mark.corpus]

def test_postgres_load_filled_the_shared_buffers(postgres_buffers):
    f = postgres_buffers.facts
    assert f["buffers_filled_bytes"] > 48 * MiB, f
    # every backend mapped much of it: the sum of RssShmem rose well beyond the buffers
    assert f["rss_shmem_delta_bytes"] > 2 * f["buffers_filled_bytes"], f


@pytest.mark.parametrize("window", [None, "whole"])
def test_postgres_shmem_found_and_sized(postgres_buffers, window):
    a = postgres_buffers.analyze(window)
    filled = postgres_buffers.facts["buffers_filled_bytes"]
    shmem = a.require(SHMEM)
    # the finding covers the load, when the buffers were mapped
    assert shmem["t_start"] < postgres_buffers.phase("load")[1] - 1.0, a.describe()
    assert near(shmem["explained_bytes"] or 0, filled, 0.25), (filled, a.describe())
    assert any(near(s, filled, 0.25) for s in sizes_in(shmem["statement"])), a.describe()
    m = re.search(rf"{SHMEM} \(\w+, ([^)]*)\)", a.data["headline"])
    assert m and any(near(s, filled, 0.25) for s in sizes_in(m.group(1))), a.describe()


@pytest.mark.parametrize("window", [None, "whole"])
def test_postgres_no_growth(postgres_buffers, window):
    a = postgres_buffers.analyze(window)
    a.absent(GROWTH)
    assert a.at_least("warning") == [], a.describe()


@pytest.mark.parametrize("window", [None, "whole"])
def test_postgres_no_cow(postgres_buffers, window):
    postgres_buffers.analyze(window).absent(COW)
