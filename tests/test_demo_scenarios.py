"""The bundled scenarios: one copy (scenarios/ links to it), each runs under real Locust.

Locust is only ever imported in child processes: importing it here would monkey-patch
this pytest process with gevent for every other test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadmem.demo.launch import start_demo
from loadmem.errors import LoadmemError
from loadmem.load.preflight import BUNDLED, resolve_scenario

REPO = Path(__file__).resolve().parent.parent
ORIGINALS = REPO / "scenarios"
LOCUST = Path(sys.executable).with_name("locust")


def test_repository_scenarios_are_the_packaged_ones() -> None:
    """``scenarios/*.py`` are links to the package's files: one source, nothing to drift."""
    originals = {p.name: p.resolve() for p in ORIGINALS.glob("*.py")}
    packaged = {p.name: p.resolve() for p in BUNDLED.glob("*.py") if not p.name.startswith("_")}
    assert {"demo.py", "browse.py", "step_load.py"} <= set(originals)
    assert originals == packaged


def test_bundled_scenario_lookup(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # outside a clone: the package's own copies
    assert resolve_scenario("demo").resolve() == (BUNDLED / "demo.py").resolve()
    assert resolve_scenario("step_load.py").name == "step_load.py"
    with pytest.raises(LoadmemError, match="no scenario file"):
        resolve_scenario("nope")


_SHAPE_PROBE = """
import json, sys
from locust.util.load_locustfile import load_locustfile
users, shapes = load_locustfile(sys.argv[1])
shape = shapes[0]
ticks = []
for t in (0.0, 0.5, 1.5, 2.5, 3.5):
    shape.get_run_time = lambda t=t: t
    ticks.append(shape.tick())
print(json.dumps({"users": sorted(users), "ticks": ticks}))
"""


def test_step_load_shape_steps_up_then_ends_by_itself() -> None:
    env = {**os.environ, "STEP_USERS": "3", "STEP_SECONDS": "1", "STEPS": "3"}
    out = subprocess.run(
        [sys.executable, "-c", _SHAPE_PROBE, str(ORIGINALS / "step_load.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["users"] == ["StepUser"]
    assert result["ticks"] == [[3, 3.0], [3, 3.0], [6, 3.0], [9, 3.0], None]


def _locust(scenario: str, url: str, seconds: int, users: int = 5, env=None) -> list[dict]:
    """Run real headless Locust against ``url``; return its final per-endpoint stats."""
    proc = subprocess.run(
        [
            str(LOCUST),
            "--headless",
            "-f",
            str(ORIGINALS / scenario),
            "--host",
            url,
            "-u",
            str(users),
            "-r",
            str(users),
            "-t",
            f"{seconds}s",
            "--json",
            "--only-summary",
            "--loglevel",
            "WARNING",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def _by_name(stats: list[dict]) -> dict[str, dict]:
    return {s["name"]: s for s in stats}


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_demo_and_browse_scenarios_against_the_demo_server() -> None:
    with start_demo(workers=2, table_mb=4) as server:
        demo = _by_name(_locust("demo.py", server.url, seconds=3))
        browse = _by_name(_locust("browse.py", server.url, seconds=4))
        env = {**os.environ, "STEP_USERS": "2", "STEP_SECONDS": "1", "STEPS": "2"}
        # The shape ends the run at 2 s, well before the 30 s limit.
        step = _by_name(_locust("step_load.py", server.url, seconds=30, env=env))
    assert {"/", "/api/items", "/item/[id]"} <= set(demo)
    assert all(s["num_failures"] == 0 for s in demo.values())
    assert demo["/api/items"]["num_requests"] > demo["/item/[id]"]["num_requests"] > 0
    # Browse found the same-origin links on "/" and followed some of them.
    assert "/" in browse
    assert any(name.startswith("/item/") or name == "/api/items" for name in browse)
    assert all(s["num_failures"] == 0 for s in browse.values())
    assert step["/"]["num_requests"] > 0


_LINKS_PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from browse import same_origin_links
html = '''<a href="/a">a</a> <a href="b?x=1#frag">b</a> <a href="http://other.example/c">c</a>
<a href="https://h.test:8080/s">s</a> <a href="mailto:x@y">m</a> <a href="javascript:void(0)">j</a>
<a href="//h.test:8080/d">d</a> <a>no href</a> <a href="http://h.test:8080/e">e</a>'''
print(json.dumps(same_origin_links("http://h.test:8080/dir/page", html)))
"""


def test_browse_follows_same_origin_links_only() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _LINKS_PROBE, str(ORIGINALS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    links = json.loads(out.strip().splitlines()[-1])
    assert links == ["/a", "/dir/b?x=1", "/d", "/e"]
