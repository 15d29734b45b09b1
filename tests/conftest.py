"""Fixtures shared by the test modules.

``demo_pair``: the bundled demo server under ``loadmem run``, the default variant (its idle
workers run ``gc.collect()`` after the load: copy-on-write unsharing) and the frozen one
(``gc.freeze()`` before fork: no unsharing), recorded once per test session, both at once to
keep it short (their figures are per process, so they do not disturb each other). The
analysis, compare, plot, report and consistency tests all read these two recordings instead
of each making their own. The observe phase (16 s) outlasts the recorder's default
``--pss-max-age`` (15 s), so every worker's PSS is re-read during it even when the
recorder's fault heuristics miss the unsharing on a busy machine.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from demo_support import demo_command


@pytest.fixture(scope="session")
def demo_pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"default": recording, "frozen": recording}``, plus each run's stdout under
    ``"default.stdout"`` / ``"frozen.stdout"`` (a path to a text file)."""
    base = tmp_path_factory.mktemp("demo-pair")
    outs = {v: base / v for v in ("default", "frozen")}
    procs = {v: subprocess.Popen(demo_command(o, v), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
             for v, o in outs.items()}
    result: dict[str, Path] = dict(outs)
    try:
        for v, p in procs.items():
            out, err = p.communicate(timeout=180)
            assert p.returncode == 0, f"{v}: exit {p.returncode}\n{err}\n{out}"
            (base / f"{v}.stdout").write_text(out)
            result[f"{v}.stdout"] = base / f"{v}.stdout"
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.communicate()
    return result
