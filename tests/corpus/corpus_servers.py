"""Real servers for the corpus, each a context manager that cleans up even on failure.

Every server listens on 127.0.0.1 on a port picked at run time, keeps its files in a
temporary directory, and is killed (its whole process group) when the block ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from corpus_support import SERVERS, CorpusSetupError, free_port, wait_http


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    workdir: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _stop(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the process, then SIGKILL its whole process group (it leads one)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _log_tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# --- gunicorn --preload ------------------------------------------------------------------

def gunicorn_exe() -> str:
    exe = Path(sys.executable).with_name("gunicorn")
    if not exe.exists():
        raise CorpusSetupError(
            f"gunicorn is not installed in {exe.parent}: pip install -e '.[test]' installs it")
    return str(exe)


@contextlib.contextmanager
def gunicorn(workdir: Path, *, variant: str = "default", workers: int = 3, table_mb: int = 40,
             idle_gc_after: float = 2.0, stagger: float = 1.0,
             extra: tuple[str, ...] = ()) -> Iterator[Server]:
    """gunicorn --preload serving ``pyapp:app`` (a ``table_mb`` MiB table of Python lists).

    Each worker appends a JSON line to ``workdir/gc.jsonl`` after its idle collection
    (``gunicorn_conf.py``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = workdir / "gunicorn.log"
    env = {**os.environ, "CORPUS_VARIANT": variant, "CORPUS_TABLE_MB": str(table_mb),
           "CORPUS_IDLE_GC_AFTER": str(idle_gc_after), "CORPUS_IDLE_GC_STAGGER": str(stagger),
           "CORPUS_REPORT": str(workdir / "gc.jsonl"), "PYTHONPATH": str(SERVERS)}
    with open(log, "w") as logf:
        proc = subprocess.Popen(
            [gunicorn_exe(), "-c", str(SERVERS / "gunicorn_conf.py"), "--workers", str(workers),
             "--bind", f"127.0.0.1:{port}", "--chdir", str(SERVERS), *extra, "pyapp:app"],
            stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = Server(proc, port, workdir)
    try:
        try:
            wait_http(port, 60, "gunicorn", path="/_corpus/ready")
        except CorpusSetupError as e:
            raise CorpusSetupError(f"{e}\n{_log_tail(log)}") from None
        _wait_workers(proc.pid, workers, 30)
        yield server
    finally:
        _stop(proc)


def _wait_workers(pid: int, n: int, timeout: float) -> None:
    from corpus_support import descendants

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(descendants(pid)) >= n + 1:
            return
        time.sleep(0.1)
    raise CorpusSetupError(f"gunicorn did not start {n} workers within {timeout}s")


def gc_reports(workdir: Path) -> list[dict]:
    """The workers' idle-collection reports (``gunicorn_conf.py``), in order."""
    path = workdir / "gc.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
