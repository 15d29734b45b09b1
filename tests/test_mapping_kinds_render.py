"""The mapping-kind breakdown as a chart, text, Markdown and HTML: what it shows, and that a
hostile file name (a process decides what it maps) is escaped in every output."""

from __future__ import annotations

import datetime as dt
import io

import pyarrow as pa
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from loadmem.analysis.attribution import attribute
from loadmem.presentation import mapping_kinds as mk
from loadmem.recording.schema import MAPPINGS, SNAPSHOTS

MiB = 1 << 20
EVIL = "/srv/app/\x1b[31m$x$ <b>|lib|<i>\n.so"  # a basename holds anything but "/"


def _table(schema: pa.Schema, rows: list[dict]) -> pa.Table:
    return pa.table({f.name: pa.array([r.get(f.name) for r in rows], f.type) for f in schema})


def _attribution():
    ts = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    rows, snaps = [], []
    for n in (0, 1):
        for pid in (10, 11, 12):
            base = {"ts": ts, "t": 10.0 * n, "tick": n, "snapshot": n,
                    "reason": ("load_end", "observe_end")[n], "pid": pid, "start_time": 5}
            snaps.append({**base, "exe": "/usr/bin/python3.11", "error": None})
            copied = n == 1 and pid != 10  # the two workers copy
            rows.append({**base, "address": 0x7F00_0000_0000, "size": 32 * MiB,
                         "perms": "rw-p", "offset": 0, "path": "", "kind": "anon",
                         "mappings": 1, "rss": 30 * MiB,
                         "pss": (28 if copied else 10) * MiB})
            rows.append({**base, "address": 0x5600_0000_0000, "size": 2 * MiB,
                         "perms": "rw-p", "offset": 0x1000, "path": EVIL, "kind": "data",
                         "file": EVIL, "mappings": 1, "rss": 2 * MiB,
                         "pss": (2 if copied else 1) * MiB})
    groups = {(10, 5): "master", (11, 5): "worker", (12, 5): "worker"}
    att = attribute(_table(MAPPINGS, rows), _table(SNAPSHOTS, snaps), 0.0, 10.0, groups,
                    {(10, 5): "gunicorn: master [app]"})
    assert att is not None
    return att


def test_text_shows_the_breakdown_runtime_and_remedy_escaped():
    att = _attribution()
    text = mk.text_block(att)
    assert "\x1b" not in text and "\\x1b" in text
    assert "workers (2, CPython 3.11)" in text and "gc.freeze()" in text
    assert "https://docs.python.org/3/library/gc.html#gc.freeze" in text
    workers = att.group("worker")
    assert workers is not None and workers.unshared == 2 * (18 + 1) * MiB - 2 * 0
    assert workers.sentence().startswith("95 % in anonymous mappings (CPython object arenas)")
    assert all("\n" not in line for line in text.splitlines())


def test_markdown_and_html_escape_the_file_name():
    att = _attribution()
    md = mk.markdown(att)
    assert "<b>" not in md and "\x1b" not in md and "&lt;b&gt;" in md
    assert "| workers \\(2, CPython 3.11\\) |" in md
    html = mk.html(att)
    assert "<b>" not in html and "&lt;b&gt;" in html and "\x1b" not in html
    assert 'href="https:' in html and "gc.freeze()" in html


def test_chart_one_panel_per_group_that_moved_with_escaped_labels():
    att = _attribution()
    fig = Figure(figsize=(10, 2.5), layout="constrained")
    FigureCanvasAgg(fig)
    axs = mk.draw(fig.subfigures(1, 1), att)
    # the master moved nothing: no panel for it
    assert [ax.get_title() for ax in axs] == ["workers (2, CPython 3.11)"]
    labels = [t.get_text() for t in axs[0].get_yticklabels()]
    assert labels[0].startswith("anonymous mappings")
    evil = [lbl for lbl in labels if "lib" in lbl]
    assert evil and all("\x1b" not in lbl and "\\$" in lbl for lbl in evil)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:4] == b"\x89PNG"
