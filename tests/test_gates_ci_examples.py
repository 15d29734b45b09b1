"""The ready-to-use CI examples in ci/: YAML structure, and every loadmem command in them
parses with the real command-line parser (so an option rename breaks this test, not a
user's pipeline). PyYAML is not a dependency: when it is missing, an indentation-based
structural check stands in for the parse.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from loadmem.cli.main import build_parser, parse
from loadmem.gates.config import load_config

CI = Path(__file__).resolve().parent.parent / "ci"
KEY = re.compile(r"""^(?:- )?((?:"[^"]+"|'[^']+'|[A-Za-z0-9_.${}-]+)):(?:\s|$)""")


def key_paths(text: str) -> set[str]:
    """Dotted paths of every mapping key, from indentation (block YAML only)."""
    paths: set[str] = set()
    stack: list[tuple[int, str]] = []
    block_indent: int | None = None  # inside a `|` or `>` block scalar
    for n, raw in enumerate(text.splitlines(), 1):
        assert "\t" not in raw, f"tab on line {n}"
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        indent = len(raw) - len(raw.lstrip())
        if block_indent is not None:
            if indent > block_indent:
                continue
            block_indent = None
        body = raw.strip()
        seq = body.startswith("- ")
        if seq:
            indent += 2
            body = body[2:]
        m = KEY.match(body)
        if not m:
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = m.group(1).strip("\"'")
        path = ".".join([*(k for _, k in stack), key])
        paths.add(path)
        rest = body[m.end():].strip()
        if rest in ("|", ">", "|-", ">-") or rest.startswith(("| ", "> ")):
            block_indent = indent - (2 if seq else 0)
        elif not rest or rest.startswith("#"):
            stack.append((indent, key))
    return paths


def loadmem_commands(text: str) -> list[list[str]]:
    """Every `loadmem <cmd> ...` in the file, continuation lines joined, shell cut off."""
    lines = text.splitlines()
    commands = []
    for i, line in enumerate(lines):
        m = re.search(r"\bloadmem (run|gate|compare|report|analyze|ls)\b", line)
        if not m or line.lstrip().startswith("#"):
            continue
        cmd = line[m.start():].rstrip()
        j = i
        while cmd.endswith("\\") or (j + 1 < len(lines)
                                     and lines[j + 1].strip().startswith("--")):
            j += 1
            cmd = cmd.rstrip("\\ ") + " " + lines[j].strip()
        tokens = shlex.split(cmd)
        for stop in (">>", ">", "||", "&&", ";", "|"):
            if stop in tokens:
                tokens = tokens[: tokens.index(stop)]
        commands.append(tokens[1:])
    return commands


def yaml_or_none():
    try:
        import yaml
    except ImportError:
        return None
    return yaml


@pytest.mark.parametrize(
    ("name", "required"),
    [
        ("github-actions.yml", {"on", "jobs", "jobs.memory-gate.runs-on",
                                "jobs.memory-gate.steps", "permissions.actions"}),
        ("gitlab-ci.yml", {"stages", "loadmem.script", "loadmem.artifacts.reports.junit",
                           "loadmem.after_script"}),
    ],
)
def test_workflow_structure(name, required):
    text = (CI / name).read_text()
    paths = key_paths(text)
    assert required <= paths, required - paths
    yaml = yaml_or_none()
    if yaml is not None:
        data = yaml.safe_load(text)
        assert isinstance(data, dict)
    # what the brief promises each example does
    for needle in ("loadmem run", "--gate", "loadmem report", "loadmem compare", "junit"):
        assert needle in text, needle
    if name.startswith("github"):
        assert "GITHUB_STEP_SUMMARY" in text and "actions/upload-artifact" in text
        assert "--markdown" in text


@pytest.mark.parametrize("name", ["github-actions.yml", "gitlab-ci.yml"])
def test_every_loadmem_command_parses(name):
    commands = loadmem_commands((CI / name).read_text())
    assert {c[0] for c in commands} >= {"run", "gate", "report", "compare"}
    parser = build_parser()
    for argv in commands:
        try:
            parse(parser, argv)  # as `loadmem` parses it (run: Locust options too)
        except SystemExit as e:  # argparse reports and exits on unknown options
            pytest.fail(f"{name}: `loadmem {' '.join(argv)}` does not parse ({e})")


def test_example_gates_config_loads():
    cfg = load_config(CI / "loadmem.toml")
    names = {g.metric.name for g in cfg.gates}
    assert {"window.used_delta_bytes", "cow.unshared_bytes", "latency.p95_ms"} <= names
    assert cfg.fail_on_regression == pytest.approx(0.10)
    assert "cow.unshared_bytes" in cfg.regression_budgets


def test_readme_mentions_every_file():
    readme = (CI / "README.md").read_text()
    for f in ("github-actions.yml", "gitlab-ci.yml", "loadmem.toml"):
        assert f in readme
