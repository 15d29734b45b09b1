"""Where the memory went, by kind of mapping: a small bar chart per process group, and the
same breakdown with the runtime and its documented remedy as text, Markdown and HTML.

Everything here renders an ``Attribution`` (``loadmem.analysis.attribution``) that the
analysis made; nothing is recomputed. Names of files and places come from the recording
(what the watched processes mapped): they go through ``presentation.escape`` where they are
written out.

- ``draw(container, attribution)``: one horizontal bar chart per group (master, workers,
  ...) on a matplotlib ``Figure`` or ``SubFigure``: for each place (a kind of memory, or one
  file's ``.data``/``.bss``) the bytes unshared (solid) and grown (hatched) between the two
  snapshots, largest first;
- ``text_lines``, ``markdown``, ``html``: the breakdown per group (the share of the
  unsharing each place explains), the runtime, the remedy line and its sources.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure

from loadmem.analysis.attribution import Attribution, GroupAttribution, Place
from loadmem.presentation import escape
from loadmem.units import format_bytes

TITLE = "Where: unshared and grown between two per-mapping snapshots (smaps), by kind"
UNSHARED_COLOUR = "#D55E00"  # vermillion (Okabe-Ito)
GROWN_COLOUR = "#56B4E9"  # sky blue
#: Places drawn per group; the rest are summed into "elsewhere".
MAX_PLACES = 6
GROUP_NAMES = {"master": "master", "worker": "workers", "process": "other processes",
               "all": "all processes"}


def _places(g: GroupAttribution, limit: int = MAX_PLACES) -> list[Place]:
    """The places worth a bar: most unshared or grown first, the rest summed."""
    moved = [p for p in g.places if abs(p.unshared) + p.grown >= 1 << 16]
    moved.sort(key=lambda p: -(max(p.unshared, 0) + p.grown))
    if len(moved) <= limit:
        return moved
    rest = Place("rest", None, "elsewhere")
    for p in moved[limit - 1:]:
        rest.unshared += p.unshared
        rest.grown += p.grown
    return [*moved[: limit - 1], rest]


def _group_title(g: GroupAttribution) -> str:
    name = GROUP_NAMES.get(g.group, g.group)
    rt = f", {g.runtime.display}" if g.runtime is not None else ""
    return f"{name} ({g.processes}{rt})"


def draw(container: Figure | SubFigure, att: Attribution) -> list[Axes]:
    """One bar chart per group, side by side, in ``container``; returns the axes."""
    groups = [g for g in att.groups if _places(g)] or [att.total]
    axs = container.subplots(1, len(groups), squeeze=False)[0]
    top = max((max(max(p.unshared, 0), p.grown) for g in groups for p in _places(g)),
              default=0.0)
    unit = 1 << 30 if top >= 2 << 30 else 1 << 20
    unit_name = "GB" if unit == 1 << 30 else "MB"  # loadmem.units' convention: 2**20
    for ax, g in zip(axs, groups, strict=True):
        places = _places(g)
        if not places:
            ax.text(0.5, 0.5, "nothing moved", ha="center", va="center",
                    transform=ax.transAxes, color="#666")
            ax.set_axis_off()
            continue
        ys = list(range(len(places)))[::-1]
        h = 0.38
        ax.barh([y + h / 2 for y in ys], [max(p.unshared, 0) / unit for p in places], h,
                color=UNSHARED_COLOUR, label="unshared")
        ax.barh([y - h / 2 for y in ys], [p.grown / unit for p in places], h,
                color=GROWN_COLOUR, hatch="//", edgecolor="white", label="grown")
        ax.set_yticks(ys, [_short(p.label) for p in places], fontsize=8)
        ax.set_xlabel(unit_name, fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
        ax.set_title(escape.plot(_group_title(g)), fontsize=9)
        ax.grid(True, axis="x", color="#ddd", linewidth=0.6)
        ax.set_axisbelow(True)
        shares = dict((id(p), s) for p, s in g.shares())
        for y, p in zip(ys, places, strict=True):
            s = shares.get(id(p))
            if s is not None and s >= 0.01:
                ax.text(max(p.unshared, 0) / unit, y + h / 2, f" {s * 100:.0f} %",
                        va="center", fontsize=7)
    axs[0].legend(fontsize=7, loc="lower right")
    if isinstance(container, SubFigure):
        container.suptitle(TITLE, fontsize=9.5, x=0.01, ha="left")
    return list(axs)


def _short(label: str, width: int = 26) -> str:
    """A place's label on at most two lines of ``width`` characters, each escaped."""
    lines = textwrap.wrap(label, width) or [label]
    if len(lines) > 2:
        lines = [lines[0], textwrap.shorten(" ".join(lines[1:]), width, placeholder="…")]
    return "\n".join(escape.plot(line) for line in lines)


# --- text ----------------------------------------------------------------------------------------
def _summary(g: GroupAttribution) -> str:
    parts = [f"{format_bytes(g.unshared)} unshared"]
    if g.grown:
        parts.append(f"{format_bytes(g.grown)} grown")
    where = g.sentence()
    return ", ".join(parts) + (f": {where}" if where else "")


def text_lines(att: Attribution) -> list[str]:
    """The breakdown for the terminal (not yet escaped: pass each line to
    ``escape.terminal`` when writing it; ``text_block`` does)."""
    lines = [f"where (per-mapping snapshots {att.start.reason} -> {att.end.reason}, "
             f"{att.compared} processes compared):"]
    for g in att.groups:
        lines.append(f"  {_group_title(g)}: {_summary(g)}")
    if len(att.groups) > 1:
        lines.append(f"  all: {_summary(att.total)}")
    for r in _remedies(att):
        lines.append(f"  runtime: {r.line}")
        lines += [f"    see {u}" for u in r.sources]
    if att.born or att.gone:
        lines.append(f"  not compared: {len(att.born)} processes started and {len(att.gone)} "
                     "ended between the snapshots")
    if att.unread:
        lines.append(f"  not read: {len(att.unread)} processes ("
                     f"{', '.join(sorted({e for _, e in att.unread}))})")
    lines += [f"  note: {n}" for n in att.notes]
    return lines


def text_block(att: Attribution) -> str:
    return "".join(escape.terminal(line) + "\n" for line in text_lines(att))


def _remedies(att: Attribution) -> list[Any]:
    """The remedy of each group's runtime, once per runtime, for groups that unshared."""
    seen: dict[str, Any] = {}
    for g in [*att.groups, att.total]:
        if (g.remedy is not None and g.runtime is not None and g.runtime.display not in seen
                and (g.unshared > 0 or g is att.total)):
            seen[g.runtime.display] = g.remedy
    return list(seen.values())


def markdown(att: Attribution) -> str:
    md = escape.markdown
    out = [f"**Where** (per-mapping snapshots `{md(att.start.reason)}` → "
           f"`{md(att.end.reason)}`, {att.compared} processes compared)\n",
           "| group | unshared | grown | where the unsharing is |", "|---|---:|---:|---|"]
    rows: Sequence[GroupAttribution] = [*att.groups, att.total] if len(att.groups) > 1 \
        else att.groups
    for g in rows:
        out.append(f"| {md(_group_title(g))} | {format_bytes(g.unshared)} | "
                   f"{format_bytes(g.grown)} | {md(g.sentence() or '-')} |")
    for r in _remedies(att):
        links = ", ".join(f"<{u}>" for u in r.sources)
        out.append(f"\n{md(r.line, line_start=True)}" + (f" ({links})" if links else ""))
    for n in att.notes:
        out.append(f"\n- {md(n, line_start=True)}")
    return "\n".join(out) + "\n"


def html(att: Attribution) -> str:
    e = escape.html
    rows = [*att.groups, att.total] if len(att.groups) > 1 else att.groups
    body = "".join(
        f"<tr><td>{e(_group_title(g))}</td><td>{e(format_bytes(g.unshared))}</td>"
        f"<td>{e(format_bytes(g.grown))}</td><td>{e(g.sentence() or '-')}</td></tr>"
        for g in rows)
    remedies = "".join(
        f"<p class=\"remedy\">{e(r.line)}"
        + "".join(f' <a href="{e(u)}">{e(u)}</a>' for u in r.sources) + "</p>"
        for r in _remedies(att))
    notes = "".join(f"<li>{e(n)}</li>" for n in att.notes)
    return (f"<section class=\"where\"><h2>Where</h2><p>Per-mapping snapshots "
            f"<code>{e(att.start.reason)}</code> → <code>{e(att.end.reason)}</code>, "
            f"{att.compared} processes compared.</p><table><thead><tr><th>group</th>"
            "<th>unshared</th><th>grown</th><th>where the unsharing is</th></tr></thead>"
            f"<tbody>{body}</tbody></table>{remedies}"
            + (f"<ul>{notes}</ul>" if notes else "") + "</section>")
