"""What the preflight of ``loadmem run`` learns from Locust, and how the child is started.

Locust decides: the Locust child of the run (``locust_child``) parses the options with
Locust's own parser (config files, ``LOCUST_*`` variables, ``-f`` lists and directories,
custom arguments from ``init_command_line_parser``, Locust's precedence), loads the
locustfiles, and, inside Locust's ``init`` event, reports the resolved options and the User
classes (with their ``host``) as its ``ready`` line (``ScenarioInfo`` here), then waits for
the parent's go. Loading a locustfile imports Locust, which monkey-patches the standard
library with gevent: the loadmem parent never does that.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadmem.errors import LoadmemError
from loadmem.load import lifeline
from loadmem.load.target import Target, check_reachable

#: Scenarios shipped inside the package, found by name when no such file exists here.
BUNDLED = Path(__file__).resolve().parent.parent / "scenarios"


@dataclass(frozen=True)
class UserClass:
    name: str
    host: str | None
    weight: int = 1
    fixed_count: int = 0


@dataclass(frozen=True)
class ScenarioInfo:
    """What Locust resolved: the locustfiles, the User classes to run, the shape, options."""

    path: Path  # the first locustfile (names the recording; meta's ``scenario``)
    user_classes: list[str]
    shape: str | None  # the LoadTestShape class name, when the scenario defines one
    locustfiles: list[Path] = field(default_factory=list)
    users: list[UserClass] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    shape_uses_common_options: bool = False
    runner: str = "local"  # local | master | worker (Locust's runner for this process)

    def option(self, name: str, default: Any = None) -> Any:
        value = self.options.get(name)
        return default if value is None else value


def resolve_scenario(text: str) -> Path:
    """The scenario file: a path, or the name of a bundled scenario (``demo``, ``demo.py``)."""
    p = Path(text)
    if p.is_file() or p.is_dir():
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


def child_cmd() -> list[str]:
    """The Locust child's command line: nothing secret, the arguments go in the environment."""
    return [sys.executable, "-m", "loadmem.load.locust_child"]


def child_env(argv: list[str], mode: str = "run", stats_fd: int | None = None,
              extra: dict[str, str] | None = None) -> dict[str, str]:
    env = lifeline.child_env()
    env["LOADMEM_LOCUST_ARGV"] = json.dumps(argv)
    env["LOADMEM_LOCUST_MODE"] = mode
    if stats_fd is not None:
        env["LOADMEM_STATS_FD"] = str(stats_fd)
    env.update(extra or {})
    return env


def scenario_info(msg: dict[str, Any]) -> ScenarioInfo:
    """A ``ScenarioInfo`` from the plugin's ``ready`` line."""
    files = [Path(f) for f in msg.get("locustfiles") or []]
    users = [UserClass(name=str(u.get("name")), host=u.get("host") or None,
                       weight=int(u.get("weight") or 1), fixed_count=int(u.get("fixed_count") or 0))
             for u in msg.get("users") or []]
    return ScenarioInfo(
        path=files[0] if files else Path("locustfile.py"),
        user_classes=[u.name for u in users],
        shape=msg.get("shape"),
        locustfiles=files,
        users=users,
        options=dict(msg.get("options") or {}),
        shape_uses_common_options=bool(msg.get("shape_uses_common_options")),
        runner=str(msg.get("runner") or "local"),
    )


def check_target(target: Target) -> None:
    """The target accepts connections (checked from this process with a plain socket)."""
    if not target.is_demo:
        check_reachable(target)
