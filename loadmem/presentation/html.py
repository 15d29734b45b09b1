"""``loadmem report``: one self-contained HTML file for CI artifacts and sharing.

Order follows what a reader asks: the verdict and findings first, then the figure (inlined as
a base64 PNG), the phase table, the per-process table, and the recording's metadata with the
observer's own cost. The file needs nothing else: CSS is inline, there is no script and no
URL to fetch, so it opens the same from a CI artifact store, an e-mail or a laptop offline.

Every piece of text that comes from a recording or an analysis (labels, command lines,
process names, statements) goes through ``loadmem.presentation.escape.html``. Numbers are
shown as the analyzer gave them, formatted by the unit in their name (``_bytes``, ``_s``,
``_ms``, ``_ratio``); nothing is recomputed here except the recorder-table totals the
metadata section lists.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from loadmem import __version__
from loadmem.analysis.figures import format_figure, lookup
from loadmem.analysis.model import Analysis, Finding, Window
from loadmem.analysis.series import RecordingSeries
from loadmem.errors import LoadmemError
from loadmem.presentation import escape, mapping_kinds
from loadmem.presentation.plot import PNG_DPI, render_figure
from loadmem.recording.reader import Recording, open_recording
from loadmem.units import format_bytes, format_duration

#: Metadata shown first, in this order (the rest is listed under "all metadata").
META_KEYS = (
    ("label", "label"),
    ("host", "host"),
    ("kernel", "kernel"),
    ("loadmem_version", "loadmem version"),
    ("start_iso", "started (UTC)"),
    ("interval_s", "sampling interval"),
    ("pss_budget", "PSS read budget"),
    ("status", "status"),
    ("writer", "written by"),
    ("scenario", "scenario"),
    ("target", "target"),
    ("users", "users"),
)

#: Recorder figures from the analysis (observer cost), shown with the metadata.
RECORDER_FIGURES = (
    ("recorder.cpu_fraction", "recorder CPU (share of one core)"),
    ("recorder.rss_bytes", "recorder RSS"),
    ("recorder.smaps_max_stall_ms", "longest smaps_rollup read (stall imposed)"),
)

SEVERITY_TEXT = {
    "ok": "OK",
    "info": "INFO",
    "warning": "WARNING",
    "critical": "CRITICAL",
}

CSS = """
:root { color-scheme: light; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  color: #1b1b1b; background: #fff; margin: 0 auto; max-width: 1260px; padding: 16px 24px; }
h1 { font-size: 1.45em; margin: 0.2em 0; }
h2 { font-size: 1.15em; margin: 1.6em 0 0.5em; border-bottom: 2px solid #ddd; }
.sub { color: #555; margin: 0 0 1em; }
.verdict { border-left: 8px solid #888; padding: 10px 16px; background: #f6f6f6;
  font-size: 1.12em; margin: 0.6em 0; }
.verdict.warning { border-color: #D55E00; background: #fff3ea; }
.verdict.critical { border-color: #9b1c00; background: #fde8e4; }
.verdict.info { border-color: #0072B2; background: #eef5fb; }
.verdict.ok { border-color: #009E73; background: #ecf8f3; }
.badge { display: inline-block; font-weight: 700; font-size: 0.8em; padding: 1px 7px;
  border-radius: 3px; color: #fff; background: #666; letter-spacing: 0.03em; }
.badge.ok { background: #007a5a; } .badge.info { background: #0072B2; }
.badge.warning { background: #b34700; } .badge.critical { background: #8a1900; }
table { border-collapse: collapse; margin: 0.4em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #d4d4d4; padding: 3px 8px; vertical-align: top; }
th { background: #f0f0f0; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fafafa; }
.wide { overflow-x: auto; }
figure { margin: 0.5em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.9em; }
.notes li { color: #7a3d00; }
details { margin: 0.5em 0; } summary { cursor: pointer; color: #333; }
code { font-size: 0.92em; background: #f3f3f3; padding: 0 3px; }
footer { color: #777; font-size: 0.85em; margin-top: 2em; }
"""


def _e(value: Any) -> str:
    """Escape recorded text for element content and attribute values alike.

    A URL in it (the load target, say) has its first slash written as ``&#47;``: it shows and
    copies the same, yet the file contains no ``http://`` at all, so nothing (a browser, a
    CI artifact scanner, our own test) can take it for a reference to fetch."""
    return escape.html(value)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def format_value(key: str, value: Any) -> str:
    """A value formatted by the unit its key names (``_bytes``, ``_s``, ``_ms``, ``_ratio``);
    a key figure of the catalogue as the catalogue prints it (as every output does)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    metric = lookup(key)
    if metric is not None and _is_num(value):
        return metric.format(float(value))
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not _is_num(value):
        if isinstance(value, (list, tuple)):
            return ", ".join(str(v) for v in value)
        if isinstance(value, dict):
            return json.dumps(value, sort_keys=True, default=str)
        return str(value)
    v = float(value)
    k = key.lower()
    if k in _IDS:
        return str(int(v)) if v.is_integer() else str(v)
    if k.endswith("_bytes_per_s"):
        return f"{format_bytes(v, signed=v < 0)}/s"
    if k.endswith("_bytes") or k.endswith("bytes") or k in ("rss", "pss", "uss"):
        return format_bytes(v, signed="delta" in k)
    if k.endswith("_ms"):
        return f"{v:,.1f} ms"
    if (
        k.endswith("_ratio")
        or k.startswith("sharing_ratio")
        or k.endswith("_fraction")
        or k == "pss_budget"
    ):
        return f"{100 * v:.1f}%"
    if k.endswith("_s") or k in ("start", "end", "duration"):
        return format_duration(v)
    if k.endswith("_per_s") or k in ("rps",):
        return f"{v:,.1f}/s"
    if float(v).is_integer():
        return f"{int(v):,}"
    return f"{v:,.3g}"


_IDS = {"pid", "ppid", "tick", "start_time", "depth", "recorder_pid", "cpus", "page_size"}
_UNIT_SUFFIXES = ("_bytes_per_s", "_per_s", "_bytes", "_ms", "_ratio", "_s")


_HEADERS = {"rss": "RSS", "pss": "PSS", "uss": "USS (private)", "rps": "requests/s",
            "p95": "p95", "first": "first seen", "smaps rss": "RSS (smaps)"}  # fmt: skip


def header_of(key: str) -> str:
    """``pss_end_bytes`` -> ``pss end``; ``duration_s`` -> ``duration``; ``rss`` -> ``RSS``."""
    k = key
    for suffix in _UNIT_SUFFIXES:
        if k.endswith(suffix) and len(k) > len(suffix):
            k = k[: -len(suffix)]
            break
    k = k.replace("_", " ").replace(".", " ")
    return _HEADERS.get(k, k)


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[str] | None]]:
    """Column keys in first-seen order; a key whose values are dicts becomes a column group."""
    cols: dict[str, dict[str, None] | None] = {}
    for r in rows:
        for k, v in r.items():
            if isinstance(v, Mapping):
                sub = cols.get(k)
                if not isinstance(sub, dict):
                    sub = {}
                    cols[k] = sub
                for sk in v:
                    sub.setdefault(sk, None)
            elif k not in cols:
                cols[k] = None
    return [(k, list(v) if isinstance(v, dict) else None) for k, v in cols.items()]


def table_html(
    rows: Sequence[Mapping[str, Any]],
    skip: Iterable[str] = (),
    caption: str | None = None,
    skip_inner: Iterable[str] = (),
) -> str:
    """A table of dict rows; nested dicts (e.g. ``baseline: {rss_bytes: ...}``) get a
    two-level header. Every cell is escaped."""
    skipped, inner_skipped = set(skip), set(skip_inner)
    cols = [
        (k, None if sub is None else [s for s in sub if s not in inner_skipped])
        for k, sub in _columns(rows)
        if k not in skipped
    ]
    if not rows or not cols:
        return '<p class="sub">none</p>'
    grouped = any(sub is not None for _, sub in cols)
    out = ['<div class="wide"><table>']
    if caption:
        out.append(f"<caption>{_e(caption)}</caption>")
    out.append("<thead><tr>")
    for k, sub in cols:
        if sub is None:
            rs = ' rowspan="2"' if grouped else ""
            out.append(f"<th{rs}>{_e(header_of(k))}</th>")
        else:
            out.append(f'<th colspan="{len(sub)}">{_e(header_of(k))}</th>')
    out.append("</tr>")
    if grouped:
        out.append("<tr>")
        for _, sub in cols:
            for sk in sub or []:
                out.append(f"<th>{_e(header_of(sk))}</th>")
        out.append("</tr>")
    out.append("</thead><tbody>")
    for r in rows:
        out.append("<tr>")
        for k, sub in cols:
            cells = [(k, r.get(k))] if sub is None else [
                (sk, (r.get(k) or {}).get(sk)) for sk in sub
            ]  # fmt: skip
            for key, v in cells:
                cls = ' class="num"' if _is_num(v) else ""
                out.append(f"<td{cls}>{_e(format_value(key, v))}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


_PROCESS_POINT = re.compile(r"^(?P<metric>.+?)_(?P<point>baseline|load_end|end)_bytes$")
_PHASE_POINT = re.compile(r"^(?P<metric>used|rss|pss|uss)_(?P<point>start|end)_bytes$")
_METRIC_NAMES = {"used": "used (system)", "rss": "sum RSS", "pss": "sum PSS", "uss": "sum USS"}


def regroup(
    rows: Sequence[Mapping[str, Any]],
    pattern: re.Pattern[str],
    group_names: Mapping[str, str],
    by: str,
) -> list[dict[str, Any]]:
    """Fold flat keys such as ``rss_baseline_bytes`` into column groups for a two-level header.

    ``by="point"``: one group per point in time (``baseline: {rss, pss, ...}``); ``by="metric"``:
    one group per metric (``sum RSS: {start, end}``). Values are moved, never changed.
    """
    out = []
    for r in rows:
        row: dict[str, Any] = {}
        for k, v in r.items():
            m = pattern.match(k)
            if not m:
                row[k] = v
                continue
            outer = m.group(by)
            inner = m.group("metric" if by == "point" else "point")
            name = group_names.get(outer, outer)
            row.setdefault(name, {})[f"{inner}_bytes"] = v
        out.append(row)
    return out


def _badge(severity: str) -> str:
    return f'<span class="badge {_e(severity)}">{_e(SEVERITY_TEXT.get(severity, severity))}</span>'


def _when(f: Finding) -> str:
    if f.t_start is None:
        return "–"
    if f.t_end is None:
        return f"from {format_duration(f.t_start)}"
    return f"{format_duration(f.t_start)} – {format_duration(f.t_end)}"


def _findings_html(findings: Sequence[Finding]) -> str:
    if not findings:
        return '<p class="sub">No findings.</p>'
    out = [
        '<div class="wide"><table class="findings"><thead><tr><th>severity</th><th>finding</th>'
        "<th>what happened</th><th>explains</th><th>when</th></tr></thead><tbody>"
    ]
    for f in findings:
        explained = format_bytes(f.explained_bytes, signed=True) if f.explained_bytes else "–"
        out.append(
            f"<tr><td>{_badge(f.severity)}</td><td><code>{_e(f.id)}</code></td>"
            f'<td>{_e(f.statement)}</td><td class="num">{_e(explained)}</td>'
            f'<td class="num">{_e(_when(f))}</td></tr>'
        )
    out.append("</tbody></table></div>")
    with_evidence = [f for f in findings if f.evidence]
    if with_evidence:
        out.append("<details><summary>evidence behind each finding</summary>")
        for f in with_evidence:
            rows = [{"figure": k, "value": v} for k, v in f.evidence.items()]
            out.append(f"<p><code>{_e(f.id)}</code></p><table><tbody>")
            for r in rows:
                v = r["value"]
                cls = ' class="num"' if _is_num(v) else ""
                out.append(
                    f"<tr><th>{_e(r['figure'])}</th>"
                    f"<td{cls}>{_e(format_value(r['figure'], v))}</td></tr>"
                )
            out.append("</tbody></table>")
        out.append("</details>")
    return "".join(out)


def _kv_table(pairs: Iterable[tuple[str, str]]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in pairs)
    return f"<table><tbody>{rows}</tbody></table>" if rows else '<p class="sub">none</p>'


def _recorder_totals(rec: Recording) -> list[tuple[str, str]]:
    """Totals of the recorder table: how much observing cost (reads, time spent, stalls)."""
    cols = ["t", "tick_us", "smaps_reads", "smaps_us", "smaps_max_us", "errors", "lag_s"]
    table = rec.table("recorder", cols)
    if table.num_rows == 0:
        return []

    def col(name: str) -> np.ndarray:
        c = table.column(name)
        return np.asarray(c.to_numpy(zero_copy_only=False), dtype=np.float64)

    tick_us, reads = col("tick_us"), col("smaps_reads")
    max_us, errors, lag = col("smaps_max_us"), col("errors"), col("lag_s")
    out = [("recorder ticks", f"{table.num_rows:,}")]
    if not np.all(np.isnan(tick_us)):
        out.append(("median tick time", f"{np.nanmedian(tick_us) / 1000:.2f} ms"))
    if not np.all(np.isnan(reads)):
        out.append(("smaps_rollup reads", f"{int(np.nansum(reads)):,}"))
    if not np.all(np.isnan(max_us)):
        out.append(("longest smaps_rollup read", f"{np.nanmax(max_us) / 1000:.1f} ms"))
    if not np.all(np.isnan(errors)) and np.nansum(errors):
        out.append(("failed reads", f"{int(np.nansum(errors)):,}"))
    if not np.all(np.isnan(lag)):
        out.append(("worst tick lag", format_duration(float(np.nanmax(lag)))))
    return out


def _meta_html(rec: Recording, analysis: Analysis) -> str:
    meta = {**rec.meta, **(analysis.meta or {})}
    pairs: list[tuple[str, str]] = [("recording", str(rec.path))]
    for key, label in META_KEYS:
        if meta.get(key) not in (None, ""):
            pairs.append((label, format_value(key, meta[key])))
    if "duration_s" not in meta or meta.get("duration_s") is None:
        pairs.append(("length", format_duration(rec.duration)))
    if isinstance(meta.get("argv"), list):  # writers store it redacted (loadmem.redact)
        pairs.append(("command", shlex.join(str(a) for a in meta["argv"])))
    for e in meta.get("selected") or []:  # what --port/--cgroup/... found (docs/containers.md)
        if isinstance(e, dict) and isinstance(e.get("text"), str):
            pairs.append(("watching", e["text"]))
    cost = [
        (label, format_value(name, analysis.figures[name]))
        for name, label in RECORDER_FIGURES
        if analysis.figures.get(name) is not None
    ]
    have_stall = analysis.figures.get("recorder.smaps_max_stall_ms") is not None
    cost += [
        (k, v)
        for k, v in _recorder_totals(rec)
        if not (have_stall and k == "longest smaps_rollup read")  # the same figure, shown once
    ]
    shown = {k for k, _ in META_KEYS}
    rest = {k: v for k, v in sorted(meta.items()) if k not in shown and k != "argv"}
    parts = [_kv_table(pairs), "<h3>What observing cost</h3>", _kv_table(cost)]
    if rest:
        parts.append("<details><summary>all metadata (meta.json)</summary>")
        parts.append(_kv_table((k, format_value(k, v)) for k, v in rest.items()))
        parts.append("</details>")
    return "".join(parts)


def figure_png(
    rec: Recording, analysis: Analysis, window: Window | tuple[float, float] | str | None,
    series: RecordingSeries | None = None,
) -> bytes:
    fig = render_figure(rec, analysis, window, series=series)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=PNG_DPI, metadata={"Software": "loadmem"})
    return buf.getvalue()


def render_report(
    recording: Recording | str | Path,
    analysis: Analysis,
    window: Window | tuple[float, float] | str | None = None,
    series: RecordingSeries | None = None,
) -> str:
    """The whole report as one HTML string."""
    rec = recording if isinstance(recording, Recording) else open_recording(recording)
    name = analysis.label or Path(analysis.recording).name
    sev = analysis.severity
    png = base64.b64encode(figure_png(rec, analysis, window, series)).decode("ascii")
    w = analysis.window
    notes = [*analysis.notes, *(n for n in rec.notes if n not in analysis.notes)]
    figures = [{"figure": k, "value": format_figure(k, v)}
               for k, v in sorted(analysis.figures.items())]
    body = [
        f"<h1>loadmem report: {_e(name)}</h1>",
        f'<p class="sub">{_e(rec.path)} · verdict about the <b>{_e(w.name)}</b> window, '
        f"{_e(format_duration(w.t_start))} to {_e(format_duration(w.t_end))} "
        f"({_e(format_duration(w.duration))})</p>",
        '<section id="verdict"><h2>Verdict</h2>',
        f'<div class="verdict {_e(sev)}">{_badge(sev)} <span class="headline">'
        f"{_e(analysis.headline)}</span></div>",
        _findings_html(analysis.findings),
    ]
    if analysis.attribution:  # where, by kind of mapping; runtime and remedy
        body.append(mapping_kinds.html(analysis.attribution))
    if notes:
        body.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    body += [
        "</section>",
        '<section id="figure"><h2>Memory over time</h2><figure>',
        f'<img alt="loadmem figure: system memory, RSS by group, RSS vs PSS vs USS and load '
        f'over time for {_e(name)}" src="data:image/png;base64,{png}">',
        "<figcaption>Top to bottom: phases; system memory as change since start; RSS of the "
        "watched processes stacked by group; the truth panel (private pages growing into "
        "shared ones is copy-on-write unsharing); load and latency when the recording has "
        "them. See docs/plots.md.</figcaption></figure></section>",
        '<section id="phases"><h2>Phases</h2>',
        table_html(regroup(analysis.phases, _PHASE_POINT, _METRIC_NAMES, by="metric"))
        if analysis.phases
        else '<p class="sub">No phases: a plain <code>loadmem record</code> recording.</p>',
        "</section>",
        '<section id="processes"><h2>Processes</h2>',
        table_html(
            regroup(
                analysis.processes,
                _PROCESS_POINT,
                {
                    "baseline": "at baseline",
                    "load_end": "end of load",
                    "end": f"end of {w.name}",
                },
                by="point",
            ),
            # USS is the private part (Private_Clean + Private_Dirty): one column says it.
            skip=("start_time", "depth", "ppid", "last_s"),
            skip_inner=("private_dirty_bytes",),
        ),
        "</section>",
        '<section id="figures"><h2>Key figures</h2><details><summary>all '
        f"{len(figures)} named figures (stable names, see docs/analysis.md)</summary>",
        table_html(figures),
        "</details></section>",
        '<section id="recording"><h2>Recording</h2>',
        _meta_html(rec, analysis),
        "</section>",
        f"<footer>Written by loadmem {_e(__version__)} on "
        f"{_e(datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC'))}.</footer>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>loadmem report: {_e(name)} [{_e(SEVERITY_TEXT.get(sev, sev))}]</title>\n"
        f"<style>{CSS}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


def write_report(
    recording: Recording | str | Path,
    analysis: Analysis,
    path: str | Path,
    window: Window | tuple[float, float] | str | None = None,
    series: RecordingSeries | None = None,
) -> Path:
    """Render the report and write it to ``path`` (UTF-8)."""
    out = Path(path)
    text = render_report(recording, analysis, window, series)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    except OSError as e:
        raise LoadmemError(
            f"cannot write {out}: {e.strerror or e}", "choose a writable -o path"
        ) from None
    return out
