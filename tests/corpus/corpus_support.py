"""What every corpus test shares: the loadmem CLI, its JSON answers, and independent checks.

The corpus asserts on loadmem's **public outputs** only (``loadmem analyze --json``, exit
codes, ``loadmem compare --json``, the run's printed verdict), never on internals, so the
tests keep their meaning while the analysis behind them is rewritten (issue 11).

Finding ids the corpus relies on are named once, here: if the analysis renames one, change
it here (and nowhere else).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SERVERS = HERE / "servers"
LOCUSTFILE = SERVERS / "locustfile.py"
MiB = 1 << 20

#: Finding ids (see docs/analysis.md).
COW = "cow-unsharing"
GROWTH = "rss-growth"
PAGE_CACHE = "page-cache"
SHMEM = "shmem"
SEVERITIES = ("ok", "info", "warning", "critical")

#: Set LOADMEM_CORPUS_KEEP=DIR to keep a copy of every corpus recording (with the test's
#: independent figures in DIR/<name>.facts.json) for working on the analysis.
KEEP = os.environ.get("LOADMEM_CORPUS_KEEP")


class CorpusSetupError(RuntimeError):
    """A server or a recording could not be made: not an analysis verdict.

    The xfail markers of the corpus say ``raises=AssertionError``, so a broken set-up is
    reported as a failure even in a test that documents a known wrong verdict."""


def loadmem_exe() -> list[str]:
    """The venv's ``loadmem`` entry point (the command a user types)."""
    exe = Path(sys.executable).with_name("loadmem")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "loadmem"]


def cli(*args: str, timeout: float = 120.0, cwd: Path | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*loadmem_exe(), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(port: int, timeout: float, what: str, path: str = "/") -> None:
    """Wait until ``GET path`` on 127.0.0.1:port answers (any status)."""
    import http.client

    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            conn.getresponse().read()
            conn.close()
            return
        except OSError as e:
            last = str(e)
            time.sleep(0.1)
    raise CorpusSetupError(f"{what} did not answer on 127.0.0.1:{port} within {timeout}s "
                           f"({last})")


def http_get(port: int, path: str) -> bytes:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().read()
    finally:
        conn.close()


def run_phases(out: Path, target: str, *, baseline: str = "2.5s", load: str = "4s",
               observe: str = "8s", users: int = 10, extra: tuple[str, ...] = (),
               env: dict[str, str] | None = None, timeout: float = 120.0
               ) -> subprocess.CompletedProcess[str]:
    """``loadmem run`` of the corpus locustfile against ``target``, sampled every 0.5 s."""
    done = cli("run", str(LOCUSTFILE), "--target", target, "--users", str(users),
               "--spawn-rate", str(users), "--baseline", baseline, "--load", load,
               "--observe", observe, "--interval", "0.5s", "--pss-max-age", "1s",
               "--out", str(out), "--label", out.name, *extra, timeout=timeout, env=env)
    if not (out / "meta.json").exists() or done.returncode not in (0, 1):
        raise CorpusSetupError(f"loadmem run failed (exit {done.returncode}):\n"
                               f"{done.stdout}\n{done.stderr}")
    return done


@dataclass
class Analysis:
    """One ``loadmem analyze --json`` answer, with the exit code of the default --fail-on."""

    rec: Path
    window: str | None
    data: dict[str, Any]
    _text: subprocess.CompletedProcess[str] | None = None

    def _text_run(self) -> subprocess.CompletedProcess[str]:
        if self._text is None:
            win = ("--window", self.window) if self.window else ()
            self._text = cli("analyze", str(self.rec), *win)
        return self._text

    @property
    def exit_code(self) -> int:
        """Exit code of ``loadmem analyze`` with the default ``--fail-on``."""
        return self._text_run().returncode

    @property
    def text(self) -> str:
        return self._text_run().stdout

    @property
    def findings(self) -> dict[str, dict[str, Any]]:
        return {f["id"]: f for f in self.data["findings"]}

    def severity(self, finding_id: str) -> str | None:
        f = self.findings.get(finding_id)
        return None if f is None else f["severity"]

    def at_least(self, severity: str) -> list[str]:
        """Ids of the findings at ``severity`` or above."""
        floor = SEVERITIES.index(severity)
        return [f["id"] for f in self.data["findings"]
                if SEVERITIES.index(f["severity"]) >= floor]

    @property
    def figures(self) -> dict[str, Any]:
        return self.data["figures"]

    def all_text(self) -> str:
        """Headline, every finding's statement and the notes."""
        parts = [self.data["headline"]]
        parts += [f["statement"] for f in self.data["findings"]]
        parts += list(self.data.get("notes") or [])
        return "\n".join(parts)

    def require(self, finding_id: str, at_least: str = "info") -> dict[str, Any]:
        """Assert the finding is there at ``at_least`` severity or above; return it."""
        f = self.findings.get(finding_id)
        assert f is not None, f"no {finding_id} finding:\n{self.describe()}"
        assert SEVERITIES.index(f["severity"]) >= SEVERITIES.index(at_least), (
            f"{finding_id} is {f['severity']}, expected at least {at_least}:\n"
            f"{self.describe()}")
        return f

    def absent(self, finding_id: str) -> None:
        """Assert there is no such finding (at any severity above ok)."""
        f = self.findings.get(finding_id)
        assert f is None or f["severity"] == "ok", (
            f"unexpected {finding_id} finding:\n{self.describe()}")

    def describe(self) -> str:
        lines = [f"window {self.data['window']}", self.data["headline"]]
        lines += [f"  [{f['severity']}] {f['id']}: {f['statement']}"
                  for f in self.data["findings"]]
        lines += [f"  note: {n}" for n in self.data.get("notes") or []]
        return "\n".join(lines)


@dataclass
class Case:
    """A corpus recording, the run's own output, and the test's independent figures."""

    name: str
    rec: Path
    facts: dict[str, Any] = field(default_factory=dict)
    run: subprocess.CompletedProcess[str] | None = None
    _analyses: dict[str | None, Analysis] = field(default_factory=dict)

    def analyze(self, window: str | None = None) -> Analysis:
        if window not in self._analyses:
            self._analyses[window] = analyze(self.rec, window)
        return self._analyses[window]

    def prefetch(self, *windows: str | None) -> None:
        """Run ``loadmem analyze --json`` for these windows side by side (2 cores: about
        half the wall time of one after the other); the tests then read the cache."""
        from concurrent.futures import ThreadPoolExecutor

        todo = [w for w in windows if w not in self._analyses]
        with ThreadPoolExecutor(max_workers=2) as pool:
            for w, a in zip(todo, pool.map(lambda w: analyze(self.rec, w), todo), strict=True):
                self._analyses[w] = a

    def phase(self, name: str) -> tuple[float, float]:
        """(start, end) of a phase in recording seconds (``facts["phases"]``)."""
        start, end = self.facts["phases"][name]
        return float(start), float(end)

    def keep(self) -> None:
        if not KEEP:
            return
        dest = Path(KEEP) / self.name
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(self.rec, dest)
        facts = {**self.facts, "recording": str(dest)}
        if self.run is not None:
            facts["run_exit_code"] = self.run.returncode
            facts["run_stdout"] = self.run.stdout
        (Path(KEEP) / f"{self.name}.facts.json").write_text(json.dumps(facts, indent=2) + "\n")


def analyze(rec: Path, window: str | None = None) -> Analysis:
    win = ("--window", window) if window else ()
    js = cli("analyze", str(rec), "--json", "--fail-on", "never", *win)
    if js.returncode != 0:
        raise CorpusSetupError(f"loadmem analyze {rec} failed ({js.returncode}): {js.stderr}")
    return Analysis(rec, window, json.loads(js.stdout))


_SIZE = re.compile(r"([+\-−]?\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\b")
#: loadmem prints binary sizes with short names (MB = MiB, as ``free -m`` and ``top`` do).
_UNIT = {"B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30, "TB": 2**40,
         "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


def sizes_in(text: str) -> list[float]:
    """Every byte size printed in ``text`` (``+64.2 MB``, ``10.9 GB``, ``−1.91 MB``), in bytes.

    loadmem's MB is a MiB (``loadmem.units.format_bytes``)."""
    return [float(n.replace("−", "-")) * _UNIT[u] for n, u in _SIZE.findall(text)]


def levels_in(text: str) -> list[float]:
    """The unsigned sizes in ``text`` (levels such as ``10.9 GB``, not changes ``+64.2 MB``)."""
    return [float(n) * _UNIT[u] for n, u in _SIZE.findall(text) if n[0] not in "+-−"]


def near(value: float, expected: float, rel: float, floor: float = 0.0) -> bool:
    return abs(value - expected) <= max(rel * abs(expected), floor)


def sentences(text: str) -> list[str]:
    """Sentences of a verdict (split at '. ' and line breaks; numbers like 1.5 survive)."""
    return [s.strip() for s in re.split(r"(?<=[.;:])\s+(?=[A-Z(])|\n", text) if s.strip()]


def smaps_rollup(pid: int) -> dict[str, int]:
    """Bytes per field of /proc/PID/smaps_rollup (the test's own, independent reading)."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return out


def meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    with open("/proc/meminfo") as f:
        for line in f:
            name, rest = line.split(":", 1)
            parts = rest.split()
            out[name] = int(parts[0]) * (1024 if len(parts) > 1 else 1)
    return out


def descendants(pid: int) -> list[int]:
    """``pid`` and every live descendant, from /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


@cache
def which_or_fail(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise CorpusSetupError(f"{name} is not installed: {hint}")
    return path


class Recorder:
    """``loadmem record`` in the background (a plain recording: no phases)."""

    def __init__(self, out: Path, *args: str) -> None:
        self.out = out
        self.proc = subprocess.Popen([*loadmem_exe(), "record", "--out", str(out), *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CorpusSetupError(f"loadmem record exited early: {self.proc.stderr.read()}")
            try:
                self.start_monotonic = float(
                    json.loads((out / "meta.json").read_text())["start_monotonic"])
                return
            except (OSError, ValueError, KeyError):
                time.sleep(0.05)
        self.proc.kill()
        raise CorpusSetupError("loadmem record wrote no meta.json within 30 s")

    def t(self) -> float:
        """Seconds since the recording started (the recording's own clock)."""
        return time.monotonic() - self.start_monotonic

    def sleep_until(self, t: float) -> None:
        while self.t() < t:
            time.sleep(0.05)

    def wait(self, timeout: float = 60.0) -> None:
        """Wait for ``--duration`` to end it; it must stop cleanly."""
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise CorpusSetupError("loadmem record did not stop at the end of --duration") from None
        if self.proc.returncode != 0:
            raise CorpusSetupError(f"loadmem record failed ({self.proc.returncode}): {err}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
