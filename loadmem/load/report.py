"""What ``loadmem run`` prints when the run is over: summary, verdict, gates, next steps.

The run is analysed once: the summary's memory figures and the verdict come from that
analysis (the same numbers ``loadmem analyze`` prints), and ``--gate`` evaluates its gates on
it. A run still ends with its summary when the analysis fails (the verdict is a bonus, the
recording is the product), while ``--gate`` is a contract with CI: if the gates cannot run,
that is an error (exit 2).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from loadmem.analysis import Analysis, analyze
from loadmem.errors import LoadmemError
from loadmem.load.orchestrator import RunResult
from loadmem.load.summary import summary_lines
from loadmem.presentation.escape import terminal
from loadmem.recording.reader import Recording, open_recording

if TYPE_CHECKING:
    from loadmem.gates import GateReport


@dataclass
class Finish:
    """What the end of a run decided: the verdict's analysis and the gates' report (None when
    they did not run); the caller maps them to the exit code."""

    analysis: Analysis | None = None
    gates: GateReport | None = None

    @property
    def gate_code(self) -> int | None:
        return int(self.gates.exit_code) if self.gates is not None else None


def _analyse(rec: Recording, out: TextIO) -> Analysis | None:
    """The run's analysis (the summary's memory figures and the verdict come from it); None,
    with a line saying why, when it cannot be made: the recording is the product, the
    verdict a bonus."""
    try:
        return analyze(rec)
    except LoadmemError as e:
        print(f"verdict:  not available ({terminal(e)})", file=out)
    except Exception as e:  # never lose the run over the analysis
        print(f"verdict:  analysis failed ({type(e).__name__}: {terminal(e)}); "
              f"try `loadmem analyze {terminal(rec.path)}`", file=out)
    return None


def _gates(path: Path, gate: str, out: TextIO, analysis: Analysis | None) -> GateReport:
    try:
        from loadmem.gates import render_text, run_gates
    except ImportError as e:
        raise LoadmemError(f"--gate: the gates are not available ({e})") from None
    report = run_gates(path, Path(gate) if gate else None, start_dir=Path.cwd(),
                       analysis=analysis)
    print("gates:", file=out)
    render_text(report, out)
    return report


def finish(result: RunResult, gate: str | None = None, out: TextIO | None = None) -> Finish:
    """Print the summary (and verdict, gates); return the analysis and the gates' report."""
    done = Finish()
    out = out or sys.stdout
    rec: Recording | None = None
    try:
        rec = open_recording(result.path)
    except LoadmemError as e:
        print(f"note: the recording cannot be read back: {terminal(e)}", file=out)
    target = ("demo " if result.target.is_demo else "") + result.target.url
    print(f"loadmem run: {result.status}; scenario {terminal(result.scenario.path)}, target "
          f"{terminal(target)}", file=out)
    analysis = _analyse(rec, out) if rec is not None and result.recorded else None
    for line in summary_lines(result, analysis):
        print(line, file=out)
    if analysis is not None and result.status == "complete":
        print(f"verdict:  {terminal(analysis.headline)}", file=out)
        done.analysis = analysis
    print(f"recording: {result.path}", file=out)
    if result.recorded:
        print(f"next:     loadmem analyze {result.path}   |   loadmem report {result.path}",
              file=out)
    else:
        print("next:     join it to the server's recording: see docs/multi-machine.md", file=out)
    out.flush()
    if gate is not None and result.status == "complete":
        done.gates = _gates(result.path, gate, out, analysis)
    return done
