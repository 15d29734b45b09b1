"""CI gates: budgets from TOML, evaluation, JUnit; rendering lives in ``loadmem.presentation``.

``run_gates(recording_path)`` is the one call ``loadmem gate`` and ``loadmem run --gate``
make: open the recording, analyse it, evaluate the configured budgets, return a
``GateReport`` whose ``exit_code`` is 0 (all passed) or 1 (a gate failed). Bad input
(missing recording, malformed config) raises ``LoadmemError`` (exit code 2).
"""

from __future__ import annotations

from pathlib import Path

from loadmem.analysis import Analysis, analyze
from loadmem.gates.config import GateConfig, load_config, resolve_config
from loadmem.gates.evaluate import GateReport, GateResult, evaluate
from loadmem.gates.junit import write_junit
from loadmem.presentation.gate_render import render_json, render_markdown, render_text

__all__ = [
    "GateConfig",
    "GateReport",
    "GateResult",
    "evaluate",
    "load_config",
    "render_json",
    "render_markdown",
    "render_text",
    "resolve_config",
    "run_gates",
    "write_junit",
]


def run_gates(
    recording_path: str | Path,
    config_path: Path | None = None,
    start_dir: Path | None = None,
    window: str | None = None,
    analysis: Analysis | None = None,
) -> GateReport:
    """Analyse the recording and evaluate the gates from ``config_path``.

    Without ``config_path`` the nearest ``loadmem.toml`` / ``pyproject.toml`` from
    ``start_dir`` (default: the current directory) upwards is used, else the built-in
    defaults. The config is read first so that a bad config fails fast, before analysis.
    ``window`` is the analyzer's (``START:END`` or a phase name; default: the load and
    observe phases); ``analysis``: one already made of this recording (``loadmem run``).
    """
    from loadmem.recording import TABLES, Recording, open_recording

    config = resolve_config(config_path, start_dir)
    recording = (recording_path if isinstance(recording_path, Recording)
                 else open_recording(recording_path))
    if analysis is None:
        analysis = analyze(recording, window=window)
    damaged = {t: d for t in TABLES if (d := recording.damage(t)) is not None}
    report = evaluate(analysis, config.gates, config.source, damaged)
    if config.is_default:
        report.notes.insert(0, "no gates config found: using the built-in default gates")
    return report
