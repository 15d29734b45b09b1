"""What ``loadmem run`` prints when the run is over: summary, verdict, gates, next steps.

The analyzer and the gates are other packages; a run still ends with its summary when the
analyzer is missing or fails (the verdict is a bonus, the recording is the product), while
``--gate`` is a contract with CI: if the gates cannot run, that is an error (exit 2).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from loadmem.errors import LoadmemError
from loadmem.load.orchestrator import RunResult
from loadmem.load.summary import summary_lines
from loadmem.presentation.escape import terminal
from loadmem.recording.reader import Recording, open_recording


@dataclass
class Finish:
    """What the end of a run decided: the verdict's analysis and the gates' report (None when
    they did not run); the caller maps them to the exit code."""

    analysis: Any = None  # loadmem.analysis.model.Analysis
    gates: Any = None  # loadmem.gates.GateReport

    @property
    def gate_code(self) -> int | None:
        return int(self.gates.exit_code) if self.gates is not None else None


def _verdict(rec: Recording, out: IO[str]) -> Any:
    try:
        from loadmem.analysis import analyze  # type: ignore[attr-defined]
    except ImportError:
        return None
    try:
        analysis = analyze(rec)
    except LoadmemError as e:
        print(f"verdict:  not available ({terminal(e)})", file=out)
        return None
    except Exception as e:  # the analyzer is a bonus here; never lose the run over it
        print(f"verdict:  analysis failed ({type(e).__name__}: {terminal(e)}); "
              f"try `loadmem analyze {terminal(rec.path)}`", file=out)
        return None
    print(f"verdict:  {terminal(analysis.headline)}", file=out)
    return analysis


def _gates(path: Path, gate: str, out: IO[str]) -> Any:
    try:
        from loadmem.gates import render_text, run_gates
    except ImportError as e:
        raise LoadmemError(f"--gate: the gates are not available ({e})") from None
    report = run_gates(path, Path(gate) if gate else None, start_dir=Path.cwd())
    print("gates:", file=out)
    render_text(report, out)
    return report


def finish(result: RunResult, gate: str | None = None, out: IO[str] | None = None) -> Finish:
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
    for line in summary_lines(result, rec):
        print(line, file=out)
    if rec is not None and result.recorded and result.status == "complete":
        done.analysis = _verdict(rec, out)
    print(f"recording: {result.path}", file=out)
    if result.recorded:
        print(f"next:     loadmem analyze {result.path}   |   loadmem report {result.path}",
              file=out)
    else:
        print("next:     join it to the server's recording: see docs/multi-machine.md", file=out)
    out.flush()
    if gate is not None and result.status == "complete":
        done.gates = _gates(result.path, gate, out)
    return done
