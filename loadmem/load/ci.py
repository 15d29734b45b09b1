"""The end of ``loadmem run`` for machines: its exit code, GitHub Actions output, JSON.

- ``exit_code``: one decision, in one place, from the run's result, the verdict and the
  gates (the table is in ``docs/exit-codes.md`` and ``loadmem run --help``).
- ``github_outputs``: under GitHub Actions (``GITHUB_STEP_SUMMARY`` set), the Markdown
  summary (run, verdict, gates) is appended to the step summary file, and each failure
  (the load, a finding at or above ``--fail-on``, a failed gate) becomes an ``::error``
  workflow command on stdout, which GitHub shows as an annotation.
- ``summary_json``: ``--json``'s one object (schema in ``docs/run.md``).

Nothing here computes a figure: the analysis, the gates and the run's result say them.
"""

from __future__ import annotations

import io
import json
import os
from typing import IO, Any

from loadmem.errors import EXIT_FINDING, EXIT_OK
from loadmem.load.orchestrator import RunResult
from loadmem.load.report import Finish
from loadmem.presentation.escape import markdown

EXIT_INTERRUPTED = 130  # interrupted (Ctrl-C, SIGTERM)


def failing_findings(analysis: Any, fail_on: str) -> list[Any]:
    """Findings at or above ``fail_on`` (``never``: none)."""
    if analysis is None or fail_on == "never":
        return []
    from loadmem.analysis.model import severity_rank

    bar = severity_rank(fail_on)
    return [f for f in analysis.findings if severity_rank(f.severity) >= bar]


def exit_code(result: RunResult, done: Finish, fail_on: str) -> int:
    """0 ok; 1 the load failed (Locust's own non-zero code is kept), a finding reached
    ``fail_on`` or a gate failed; 130 interrupted. (2, bad input, is raised earlier.)"""
    if result.status == "interrupted":
        return EXIT_INTERRUPTED
    load = result.load
    if load.problem is not None:
        code = load.exit_code
        if load.process_exit_code not in (None, 0) or (code is not None and 0 < code < 128
                                                       and code != 2):
            return int(load.process_exit_code or code or EXIT_FINDING)  # as Locust decided it
        return EXIT_FINDING
    if failing_findings(done.analysis, fail_on):
        return EXIT_FINDING
    if done.gate_code not in (None, 0):
        return EXIT_FINDING
    return EXIT_OK


def _escape_command(text: str) -> str:
    """GitHub workflow-command data: %, CR and LF are escaped."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def annotations(result: RunResult, done: Finish,  # type: ignore[no-redef]
                fail_on: str) -> list[str]:
    """``::error`` lines for every failure of the run."""
    title = "loadmem run"
    lines = []
    if result.load.problem:
        lines.append(f"load failed: {result.load.problem}")
    for f in failing_findings(done.analysis, fail_on):
        lines.append(f"{f.severity}: {f.statement}")
    if done.gates is not None:
        for g in done.gates.failed:
            lines.append(f"gate {g.name} failed: {g.message}")
    return [f"::error title={title}::{_escape_command(text)}" for text in lines]


def markdown_summary(result: RunResult, done: Finish, summary_lines: list[str]) -> str:
    """The run's summary for ``$GITHUB_STEP_SUMMARY``: run lines, verdict, gates."""
    out = io.StringIO()
    out.write(f"## loadmem run: {markdown(result.status)}\n\n")
    out.write("```\n" + "\n".join(line.replace("```", "'''") for line in summary_lines)
              + "\n```\n\n")
    if result.load.problem:
        out.write(f"**Load failed:** {markdown(result.load.problem)}\n\n")
    if done.analysis is not None:
        from loadmem.presentation.markdown import render

        render(done.analysis, out)
        out.write("\n")
    if done.gates is not None:
        from loadmem.presentation.gate_render import render_markdown

        render_markdown(done.gates, out)
        out.write("\n")
    out.write(f"Recording: `{markdown(str(result.path))}`\n")
    return out.getvalue()


def github_outputs(result: RunResult, done: Finish, fail_on: str, summary_lines: list[str],
                   stdout: IO[str], env: dict[str, str] | None = None) -> bool:
    """Under GitHub Actions: step summary and annotations. False when not under Actions."""
    env = dict(os.environ) if env is None else env
    path = env.get("GITHUB_STEP_SUMMARY")
    if not path:
        return False
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(markdown_summary(result, done, summary_lines))
    except OSError as e:
        stdout.write(f"::warning title=loadmem run::cannot write GITHUB_STEP_SUMMARY "
                     f"({_escape_command(str(e))})\n")
    for line in annotations(result, done, fail_on):  # type: ignore[operator]
        stdout.write(line + "\n")
    stdout.flush()
    return True


def summary_json(result: RunResult, done: Finish, fail_on: str, code: int) -> dict[str, Any]:
    """``--json``: the run's outcome, its load, verdict and gates, and the exit code."""
    load = result.load
    total = next((r for r in result.totals if r.get("name") == "Aggregated"), None)
    analysis = done.analysis
    return {
        "command": "run",
        "exit_code": code,
        "status": result.status,
        "recording": str(result.path),
        "recorded": result.recorded,
        "scenario": str(result.scenario.path),
        "target": "demo" if result.target.is_demo else result.target.url,
        "phases": [p.to_dict() for p in result.phases],
        "load": {
            "ok": load.problem is None,
            "problem": load.problem,
            "ended_by": load.ended_by,
            "locust_exit_code": load.exit_code,
            "requests": load.requests,
            "failures": load.failures,
            "errors": load.errors,
            "exceptions": load.exceptions,
            "totals": total,
        },
        "verdict": None if analysis is None else {
            "severity": analysis.severity,
            "headline": analysis.headline,
            "fail_on": fail_on,
            "failing": [f.id for f in failing_findings(analysis, fail_on)],
            "findings": [{"id": f.id, "severity": f.severity, "statement": f.statement}
                         for f in analysis.findings],
        },
        "gates": None if done.gates is None else {
            "passed": done.gates.passed,
            "failed": [g.name for g in done.gates.failed],
            "results": [{"name": g.name, "status": g.status, "measured": g.measured,
                         "budget": g.budget, "message": g.message}
                        for g in done.gates.results],
        },
        "warnings": result.warnings,
    }


def print_json(obj: dict[str, Any], stdout: IO[str]) -> None:
    stdout.write(json.dumps(obj, default=str) + "\n")
    stdout.flush()
