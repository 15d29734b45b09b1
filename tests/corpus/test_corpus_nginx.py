"""Corpus: nginx serving static files under load fills the page cache (benign).

96 MiB of files, written by the test and dropped from the page cache (fsync, then
posix_fadvise DONTNEED), are served by nginx (2 workers, sendfile) under ``loadmem run``;
the load reads them into the page cache. The independent measure is mincore(2) over the
files before and after the run. Right verdict: page cache, info only; nothing at warning or
above (the kernel gives that memory back on demand).
"""

from __future__ import annotations

import pytest
from corpus_support import COW, GROWTH, PAGE_CACHE, MiB

pytestmark = [pytest.mark.slow, pytest.mark.corpus]


def test_nginx_load_read_the_files_into_the_cache(nginx_static):
    f = nginx_static.facts
    noise = [round(n / MiB, 1) for n in f["page_cache_noise_bytes"]]
    print(f"nginx: cached {f['cached_into_page_cache_bytes'] / MiB:.1f} MiB; the rest of the "
          f"machine moved the page cache by {noise} MiB (per attempt)")
    assert f["resident_before_bytes"] < 8 * MiB, f
    assert f["cached_into_page_cache_bytes"] > 0.9 * f["files_bytes"], f


@pytest.mark.parametrize("window", [None, "whole"])
def test_nginx_nothing_at_warning(nginx_static, window):
    a = nginx_static.analyze(window)
    assert a.at_least("warning") == [], a.describe()
    a.absent(GROWTH)
    a.absent(COW)


@pytest.mark.parametrize("window", [None, "whole"])
def test_nginx_page_cache_info(nginx_static, window):
    a = nginx_static.analyze(window)
    pc = a.require(PAGE_CACHE)
    assert pc["severity"] == "info", a.describe()
    # the finding covers the load, when the files were read (not only machine noise later)
    assert pc["t_start"] < nginx_static.phase("load")[1] - 1.0, a.describe()
    # at least most of what the load cached (the rest of the machine may add its own)
    cached = nginx_static.facts["cached_into_page_cache_bytes"]
    assert (pc["explained_bytes"] or 0) > 0.5 * cached, (nginx_static.facts, a.describe())
