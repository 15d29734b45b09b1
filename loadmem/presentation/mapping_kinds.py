"""Where the memory went, by kind of mapping: a small bar chart per process group, and the
same breakdown with the runtime and its documented remedy as text, Markdown and HTML.

Everything here renders the attribution the analysis made (``Analysis.attribution``: the
``Attribution.to_dict()`` of ``loadmem.analysis.attribution``, as ``--json`` carries it);
nothing is recomputed. Names of files and places come from the recording (what the watched
processes mapped): they go through ``presentation.escape`` where they are written out.

- ``draw(container, attribution)``: one horizontal bar chart per group (master, workers,
  ...) on a matplotlib ``Figure`` or ``SubFigure``: for each place (a kind of memory, or one
  file's ``.data``/``.bss``) the bytes unshared (solid) and grown (hatched) between the two
  snapshots, largest first;
- ``text_lines``/``text_block``, ``markdown``, ``html``: the breakdown per group (the share
  of the unsharing each place explains), the runtime, the remedy line and its sources.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure

from loadmem.presentation import escape
from loadmem.units import format_bytes

TITLE = "Where: unshared and grown between two per-mapping snapshots (smaps), by kind"
UNSHARED_COLOUR = "#D55E00"  # vermillion (Okabe-Ito)
GROWN_COLOUR = "#56B4E9"  # sky blue
#: Places drawn per group; the rest are summed into "elsewhere".
MAX_PLACES = 6
#: A place that moved less than this is not drawn.
MIN_DRAWN = 1 << 16
GROUP_NAMES = {"master": "master", "worker": "workers", "process": "other processes",
               "all": "all processes"}

Att = Mapping[str, Any]


def _dict(att: Any) -> Att:
    return att.to_dict() if hasattr(att, "to_dict") else att


def _size(p: Mapping[str, Any]) -> float:
    return max(p["unshared_bytes"], 0) + p["grown_bytes"]


def _places(g: Att, limit: int = MAX_PLACES) -> list[dict[str, Any]]:
    """The places worth a bar (at least 64 KiB and 1 % of the group's largest), most
    unshared or grown first, the rest summed into "elsewhere"."""
    places = g.get("places", [])
    floor = max(MIN_DRAWN, 0.01 * max((_size(p) for p in places), default=0.0))
    moved = [dict(p) for p in places if _size(p) >= floor]
    moved.sort(key=lambda p: -_size(p))
    if len(moved) <= limit:
        return moved
    rest = {"label": "elsewhere", "unshared_bytes": 0.0, "grown_bytes": 0.0,
            "unshared_share": None}
    for p in moved[limit - 1:]:
        rest["unshared_bytes"] += p["unshared_bytes"]
        rest["grown_bytes"] += p["grown_bytes"]
    return [*moved[: limit - 1], rest]


def group_title(g: Att) -> str:
    name = GROUP_NAMES.get(g["group"], g["group"])
    rt = g.get("runtime")
    return f"{name} ({g['processes']}{', ' + rt['display'] if rt else ''})"


def draw(container: Figure | SubFigure, attribution: Any) -> list[Axes]:
    """One bar chart per group that moved, side by side, in ``container``; the axes."""
    att = _dict(attribution)
    groups = [g for g in att["groups"] if _places(g)] or [att["total"]]
    axs = container.subplots(1, len(groups), squeeze=False)[0]
    top = max((max(max(p["unshared_bytes"], 0), p["grown_bytes"])
               for g in groups for p in _places(g)), default=0.0)
    unit = 1 << 30 if top >= 2 << 30 else 1 << 20
    unit_name = "GB" if unit == 1 << 30 else "MB"  # loadmem.units' convention: 2**20
    for ax, g in zip(axs, groups, strict=True):
        places = _places(g)
        ax.set_title(escape.plot(group_title(g)), fontsize=9)
        if not places:
            ax.text(0.5, 0.5, "nothing moved", ha="center", va="center",
                    transform=ax.transAxes, color="#666")
            ax.set_axis_off()
            continue
        ys = list(range(len(places)))[::-1]
        h = 0.38
        ax.barh([y + h / 2 for y in ys], [max(p["unshared_bytes"], 0) / unit for p in places],
                h, color=UNSHARED_COLOUR, label="unshared")
        ax.barh([y - h / 2 for y in ys], [p["grown_bytes"] / unit for p in places], h,
                color=GROWN_COLOUR, hatch="//", edgecolor="white", label="grown")
        ax.set_yticks(ys, [_short(p["label"]) for p in places], fontsize=8)
        ax.set_xlabel(unit_name, fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(True, axis="x", color="#ddd", linewidth=0.6)
        ax.set_axisbelow(True)
        for y, p in zip(ys, places, strict=True):
            s = p.get("unshared_share")
            if s is not None and s >= 0.01:
                ax.text(max(p["unshared_bytes"], 0) / unit, y + h / 2, f" {s * 100:.0f} %",
                        va="center", fontsize=7)
    drawn = [ax for ax in axs if ax.axison]
    if drawn:  # outside the data, like every legend of the plot
        drawn[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                         frameon=False)
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
def _summary(g: Att) -> str:
    parts = [f"{format_bytes(g['unshared_bytes'])} unshared"]
    if g["grown_bytes"]:
        parts.append(f"{format_bytes(g['grown_bytes'])} grown")
    where = g.get("sentence") or ""
    return ", ".join(parts) + (f": {where}" if where else "")


def remedies(attribution: Any) -> list[dict[str, Any]]:
    """The remedy of each group's runtime, once per runtime, for groups that unshared."""
    att = _dict(attribution)
    seen: dict[str, dict[str, Any]] = {}
    for g in [*att["groups"], att["total"]]:
        rt, remedy = g.get("runtime"), g.get("remedy")
        if (remedy is not None and rt is not None and rt["display"] not in seen
                and (g["unshared_bytes"] > 0 or g is att["total"])):
            seen[rt["display"]] = remedy
    return list(seen.values())


def _compared(att: Att) -> str:
    return (f"per-mapping snapshots {att['start']['reason']} -> {att['end']['reason']}, "
            f"{att['compared']} processes compared")


def text_lines(attribution: Any) -> list[str]:
    """The breakdown for the terminal, not yet escaped (``text_block`` escapes it)."""
    att = _dict(attribution)
    lines = [f"Where ({_compared(att)})"]
    for g in att["groups"]:
        lines.append(f"  {group_title(g)}: {_summary(g)}")
    if len(att["groups"]) > 1:
        lines.append(f"  all: {_summary(att['total'])}")
    for r in remedies(att):
        lines.append(f"  runtime: {r['line']}")
        lines += [f"    see {u}" for u in r["sources"]]
    if att["born"] or att["gone"]:
        lines.append(f"  not compared: {att['born']} processes started and {att['gone']} "
                     "ended between the snapshots")
    if att["unread"]:
        errors = ", ".join(sorted({u["error"] for u in att["unread"]}))
        lines.append(f"  not read: {len(att['unread'])} processes ({errors})")
    lines += [f"  note: {n}" for n in att["notes"]]
    return lines


def text_block(attribution: Any, width: int = 100) -> str:
    """``text_lines`` escaped for a terminal and wrapped at ``width``."""
    out = []
    for line in text_lines(attribution):
        indent = " " * (len(line) - len(line.lstrip(" ")))
        out += textwrap.wrap(escape.terminal(line), width, subsequent_indent=indent + "    ",
                             break_on_hyphens=False, break_long_words=False) or [""]
    return "".join(f"{line}\n" for line in out)


def markdown(attribution: Any) -> str:
    att = _dict(attribution)
    md = escape.markdown
    out = [f"**Where** ({md(_compared(att))})\n",
           "| group | unshared | grown | where the unsharing is |", "|---|---:|---:|---|"]
    rows = [*att["groups"], att["total"]] if len(att["groups"]) > 1 else att["groups"]
    for g in rows:
        out.append(f"| {md(group_title(g))} | {format_bytes(g['unshared_bytes'])} | "
                   f"{format_bytes(g['grown_bytes'])} | {md(g.get('sentence') or '-')} |")
    for r in remedies(att):
        links = ", ".join(f"<{u}>" for u in r["sources"])
        out.append(f"\n{md(r['line'], line_start=True)}" + (f" ({links})" if links else ""))
    for n in att["notes"]:
        out.append(f"\n- {md(n, line_start=True)}")
    return "\n".join(out) + "\n"


def html(attribution: Any) -> str:
    att = _dict(attribution)
    e = escape.html
    rows = [*att["groups"], att["total"]] if len(att["groups"]) > 1 else att["groups"]
    body = "".join(
        f"<tr><td>{e(group_title(g))}</td><td>{e(format_bytes(g['unshared_bytes']))}</td>"
        f"<td>{e(format_bytes(g['grown_bytes']))}</td><td>{e(g.get('sentence') or '-')}</td>"
        "</tr>" for g in rows)
    rem = "".join(
        f'<p class="remedy">{e(r["line"])}'
        + "".join(f' <a href="{e(u)}">{e(u)}</a>' for u in r["sources"]) + "</p>"
        for r in remedies(att))
    notes = "".join(f"<li>{e(n)}</li>" for n in att["notes"])
    return (f'<section id="where"><h2>Where</h2><p class="sub">{e(_compared(att))}.</p>'
            "<table><thead><tr><th>group</th><th>unshared</th><th>grown</th>"
            f"<th>where the unsharing is</th></tr></thead><tbody>{body}</tbody></table>{rem}"
            + (f'<ul class="notes">{notes}</ul>' if notes else "") + "</section>")
