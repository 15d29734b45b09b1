"""Which stretch of a recording a verdict is about.

- ``loadmem run`` recordings have phases (baseline, load, observe): the verdict is about the
  load and observe phases together (``load+observe``: from just before the load to the end),
  each of them judged and named in the findings (a leak during load, a drain after it); the
  noise floor comes from the baseline phase.
- ``--window START:END`` gives durations from the recording start (``30s:5m``, ``:10m``,
  ``2m:``), parsed by ``loadmem.units.parse_duration``; ``--window NAME`` picks a phase
  (``baseline``, ``load``, ``observe``, ``load+observe``) or ``whole``.
- Otherwise the whole recording.
"""

from __future__ import annotations

from dataclasses import dataclass

from loadmem.analysis.model import Window
from loadmem.errors import LoadmemError
from loadmem.units import format_duration, parse_duration

#: The default window of a recording with a load phase: the load and what follows it.
RUN_WINDOW = "load+observe"
#: Phases a verdict window is split into (the baseline is the reference, not a part).
PART_PHASES = ("load", "observe")


@dataclass(frozen=True)
class Windows:
    """The verdict's window plus the phases the analysis compares it with."""

    main: Window
    baseline: Window | None  # noise floor and "before load" figures
    load: Window | None  # "after load" figures and request statistics
    phases: tuple[Window, ...]  # every phase, in order
    notes: tuple[str, ...] = ()
    #: the phases the main window is split into, each judged and named (load, observe)
    parts: tuple[Window, ...] = ()

    def all(self) -> list[Window]:
        """The main window, the phases and the parts, each once (by name)."""
        out: dict[str, Window] = {self.main.name: self.main}
        for w in (*self.phases, *self.parts):
            out.setdefault(w.name, w)
        return list(out.values())


def phase_windows(
    phases: list[tuple[str, float, float | None]], t_first: float, t_last: float
) -> tuple[list[Window], list[str]]:
    """Phase events -> windows; a phase never closed (cut-short recording) ends at the last
    sample."""
    out: list[Window] = []
    notes: list[str] = []
    for name, t0, t1 in phases:
        if t1 is None:
            notes.append(
                f"phase {name!r} was never closed (recording cut short?): "
                f"analysed up to the last sample at {format_duration(t_last)}"
            )
            t1 = t_last
        t0, t1 = max(t0, t_first), min(t1, t_last)
        if t1 > t0:
            out.append(Window(name, t0, t1))
    return out, notes


def parse_window_spec(spec: str, t_first: float, t_last: float) -> Window:
    """``START:END`` in durations from the recording start; either side may be empty."""
    left, _, right = spec.partition(":")
    start = parse_duration(left) if left.strip() else t_first
    end = parse_duration(right) if right.strip() else t_last
    if left.strip() and right.strip() and end < start:
        raise LoadmemError(
            f"window end before start in {spec!r} ({format_duration(end)} < "
            f"{format_duration(start)})",
            f"write the start first: --window {right.strip()}:{left.strip()}",
        )
    if start >= t_last or end <= t_first:
        raise LoadmemError(
            f"window {spec!r} is outside the recording "
            f"({format_duration(t_first)} to {format_duration(t_last)})",
            "give durations from the recording start within its length",
        )
    if end <= start:
        raise LoadmemError(
            f"empty window {spec!r}: the end must come after the start",
            "write it as START:END, e.g. 30s:5m, :10m or 2m:",
        )
    return Window("custom", max(start, t_first), min(end, t_last))


def resolve(
    phases: list[tuple[str, float, float | None]],
    t_first: float,
    t_last: float,
    spec: str | None = None,
) -> Windows:
    """Pick the verdict window (``spec`` first, then the observe phase, then everything)."""
    wins, notes = phase_windows(phases, t_first, t_last)
    by_name = {w.name: w for w in wins}
    if "load" in by_name:  # from just before the load to the end of what follows it
        after = [w for w in wins if w.t_start >= by_name["load"].t_start]
        by_name[RUN_WINDOW] = Window(RUN_WINDOW, by_name["load"].t_start,
                                     max(w.t_end for w in after))
    baseline = by_name.get("baseline")
    load = by_name.get("load")
    if spec is not None and spec.strip():
        spec = spec.strip()
        if ":" in spec:
            main = parse_window_spec(spec, t_first, t_last)
        elif spec in by_name:
            main = by_name[spec]
        elif spec in ("whole", "all"):
            main = Window("whole", t_first, t_last)
        else:
            known = ", ".join(by_name) or "none in this recording"
            raise LoadmemError(
                f"unknown window {spec!r} (phases: {known})",
                "give a phase name or START:END durations from the start, e.g. 30s:5m",
            )
    elif RUN_WINDOW in by_name:
        main = by_name[RUN_WINDOW]
    elif "observe" in by_name:
        main = by_name["observe"]
    else:
        main = Window("whole", t_first, t_last)
        if wins:
            notes.append("no load or observe phase: the whole recording was analysed")
    if baseline is not None and baseline == main:
        baseline = None
    parts = tuple(w for w in wins if w.name in PART_PHASES
                  and w.t_start >= main.t_start - 1e-6 and w.t_end <= main.t_end + 1e-6)
    if len(parts) < 2:
        parts = ()
    return Windows(main=main, baseline=baseline, load=load, phases=tuple(wins),
                   notes=tuple(notes), parts=parts)
