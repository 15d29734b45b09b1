"""The demo pair's settings (``conftest.demo_pair`` records it), for tests that check figures
against them."""

from __future__ import annotations

import sys
from pathlib import Path

#: The demo run's settings, for tests that check figures against them.
DEMO_TABLE_MB = 32
DEMO_WORKERS = 2


def demo_command(out: Path, variant: str) -> list[str]:
    return [sys.executable, "-m", "loadmem", "run", "demo", "--target", "demo",
            "--demo-variant", variant, "--demo-workers", str(DEMO_WORKERS),
            "--demo-table-mb", str(DEMO_TABLE_MB), "--demo-idle-gc-after", "1s",
            "--demo-idle-gc-stagger", "1s", "--baseline", "2s", "--load", "4s",
            "--observe", "16s", "--users", "5", "--interval", "0.5s", "--pss-budget", "25%",
            "--out", str(out), "--label", variant,
            "--fail-on", "never"]  # the run's exit code on findings: test_run_demo_e2e
