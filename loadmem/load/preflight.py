"""Preflight for ``loadmem run``: is the scenario usable, does the target answer?

Both checks run before anything is recorded, so a typo costs one clear line and exit 2
rather than a half-made recording. The scenario is loaded in a child process
(``locust_child --check``) because loading a locustfile imports Locust, which
monkey-patches the standard library with gevent: the loadmem parent must never do that.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from loadmem.errors import LoadmemError
from loadmem.load.target import Target, check_reachable

#: Scenarios shipped inside the package, found by name when no such file exists here.
BUNDLED = Path(__file__).resolve().parent.parent / "scenarios"
CHECK_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class ScenarioInfo:
    path: Path
    user_classes: list[str]
    shape: str | None  # the LoadTestShape class name, when the scenario defines one


def resolve_scenario(text: str) -> Path:
    """The scenario file: a path, or the name of a bundled scenario (``demo``, ``demo.py``)."""
    p = Path(text)
    if p.is_file():
        return p
    name = p.name if p.suffix == ".py" else p.name + ".py"
    if not p.exists():
        for candidate in (Path("scenarios") / name, BUNDLED / name):
            if candidate.is_file():
                return candidate
    if p.exists():
        raise LoadmemError(f"scenario {text} is not a file", "give a locustfile (.py)")
    bundled = sorted(f.stem for f in BUNDLED.glob("*.py") if not f.name.startswith("_"))
    hint = f"bundled scenarios: {', '.join(bundled)}" if bundled else "give a locustfile path"
    raise LoadmemError(f"no scenario file at {text}", hint)


def check_scenario(path: Path, timeout: float = CHECK_TIMEOUT_S) -> ScenarioInfo:
    """Load the scenario in a throw-away child; raise ``LoadmemError`` naming the problem."""
    cmd = [sys.executable, "-m", "loadmem.load.locust_child", str(path), "--check"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise LoadmemError(
            f"loading {path} took more than {timeout:.0f}s",
            "does the scenario do work at import time?",
        ) from None
    messages = []
    for line in proc.stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict):
            messages.append(msg)
    for msg in messages:
        if msg.get("type") == "error":
            raise LoadmemError(str(msg.get("message")), "fix the scenario and run again")
        if msg.get("type") == "ready":
            return ScenarioInfo(path=path, user_classes=list(msg.get("users") or []),
                                shape=msg.get("shape"))
    tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
    raise LoadmemError(
        f"could not load scenario {path} (exit {proc.returncode}): {tail or 'no output'}",
        "try `locust -f SCENARIO --headless -t 1s` to see Locust's own message",
    )


def check_target(target: Target) -> None:
    """The target accepts connections (checked from this process with a plain socket)."""
    if not target.is_demo:
        check_reachable(target)
