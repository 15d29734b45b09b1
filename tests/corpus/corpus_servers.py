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


# --- PostgreSQL --------------------------------------------------------------------------

def pg_bindir() -> Path:
    """The directory of initdb/postgres (Debian keeps them out of PATH)."""
    import glob
    import shutil

    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                  key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if not dirs:
        raise CorpusSetupError("PostgreSQL is not installed (no initdb): apt-get install "
                               "postgresql (.ci/run does it)")
    return Path(dirs[-1]).parent


@dataclass
class Postgres:
    bindir: Path
    workdir: Path
    port: int
    proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _as_postgres(self) -> dict:
        """Run as the ``postgres`` user when we are root (PostgreSQL refuses root)."""
        return {"user": "postgres", "group": "postgres", "extra_groups": []} \
            if os.geteuid() == 0 else {}

    def run(self, *args: str, timeout: float = 60.0) -> str:
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                              cwd=self.workdir, **self._as_postgres())
        if done.returncode != 0:
            raise CorpusSetupError(f"{' '.join(args[:2])} failed: {done.stderr.strip()}")
        return done.stdout

    def psql(self, *sql: str) -> str:
        args = ["psql", "-X", "-A", "-t", "-q", "-h", "127.0.0.1", "-p", str(self.port),
                "-U", "postgres", "-d", "postgres"]
        for s in sql:
            args += ["-c", s]
        return self.run(*args)

    def start(self, shared_buffers: str) -> None:
        log = open(self.workdir / "postgres.log", "a")  # noqa: SIM115 (kept by the child)
        self.proc = subprocess.Popen(
            [str(self.bindir / "postgres"), "-D", str(self.workdir / "data"),
             "-c", f"port={self.port}", "-c", "listen_addresses=127.0.0.1",
             "-c", f"unix_socket_directories={self.workdir}",
             "-c", f"shared_buffers={shared_buffers}", "-c", "huge_pages=off",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "autovacuum=off", "-c", "max_parallel_workers_per_gather=0",
             "-c", "max_connections=20", "-c", "checkpoint_timeout=1h"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.workdir,
            **self._as_postgres())
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CorpusSetupError("postgres exited at start:\n"
                                       + _log_tail(self.workdir / "postgres.log"))
            with contextlib.suppress(CorpusSetupError):
                if self.psql("SELECT 1").strip() == "1":
                    return
            time.sleep(0.2)
        raise CorpusSetupError("postgres did not accept connections within 30 s:\n"
                               + _log_tail(self.workdir / "postgres.log"))

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then SIGKILL whatever is left of its process group."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self.proc = None

    def buffers_in_use(self) -> int:
        """Shared buffers holding a page (pg_buffercache), an independent count."""
        return int(self.psql(
            "SELECT count(*) FROM pg_buffercache WHERE relfilenode IS NOT NULL").strip())


@contextlib.contextmanager
def postgres(*, shared_buffers: str = "128MB", rows: int = 800_000) -> Iterator[Postgres]:
    """A throw-away PostgreSQL cluster on 127.0.0.1 with a table ``t`` of ``rows`` rows
    (about 120 bytes each, plus its primary key index), written so that its shared
    buffers stay mostly empty. The data directory is under /tmp (the ``postgres`` user
    cannot enter pytest's root-only temporary directories) and removed afterwards."""
    import shutil
    import tempfile

    bindir = pg_bindir()
    workdir = Path(tempfile.mkdtemp(prefix="loadmem-corpus-pg-"))
    os.chmod(workdir, 0o755)
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres", "postgres")
    pg = Postgres(bindir, workdir, free_port())
    try:
        pg.run(str(bindir / "initdb"), "-D", str(workdir / "data"), "-U", "postgres",
               "--auth=trust", "-E", "UTF8", "--no-sync")
        pg.start(shared_buffers)
        # CREATE TABLE AS writes through a small ring of buffers and the index build
        # bypasses them: the shared buffers stay mostly empty for the load to fill
        pg.psql(f"CREATE TABLE t AS SELECT g AS id, g % 1000 AS v, repeat('x', 80) AS pad "
                f"FROM generate_series(1, {rows}) g",
                "ALTER TABLE t ADD PRIMARY KEY (id)", "VACUUM ANALYZE t",
                "CREATE EXTENSION pg_buffercache")
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def pg_front(pg: Postgres, *, pool: int = 4, rows: int = 800_000, span: int = 2000
             ) -> Iterator[Server]:
    """``servers/pgfront.py``: HTTP on 127.0.0.1 with ``pool`` persistent psql sessions."""
    server = _start_printing_port(
        [sys.executable, str(SERVERS / "pgfront.py"), "127.0.0.1", str(pg.port), "postgres",
         str(pool), str(rows), str(span)], "pgfront", pg.workdir)
    try:
        wait_http(server.port, 10, "pgfront", path="/_corpus/ready")
        yield server
    finally:
        _stop(server.proc)


# --- Node.js -----------------------------------------------------------------------------

def _start_printing_port(cmd: list[str], what: str, workdir: Path) -> Server:
    """Start a server that prints its port on its first stdout line."""
    import selectors

    log = workdir / f"{Path(cmd[1]).stem}.log"
    with open(log, "w") as logf:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=logf, text=True,
                                start_new_session=True, cwd=workdir)
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    ready = sel.select(30)
    sel.close()
    line = proc.stdout.readline() if ready else ""
    if not line.strip().isdigit():
        _stop(proc)
        raise CorpusSetupError(f"{what} did not start: {line}{_log_tail(log)}")
    return Server(proc, int(line), workdir)


@contextlib.contextmanager
def node_leak(workdir: Path, leak_bytes: int) -> Iterator[Server]:
    """``servers/leak.js``: keeps ``leak_bytes`` per request in a global array."""
    from corpus_support import which_or_fail

    node = which_or_fail("node", "install Node.js (apt-get install nodejs; .ci/run does it)")
    workdir.mkdir(parents=True, exist_ok=True)
    server = _start_printing_port([node, str(SERVERS / "leak.js"), str(leak_bytes)],
                                  "node leak.js", workdir)
    try:
        wait_http(server.port, 10, "node leak.js", path="/_corpus/ready")
        yield server
    finally:
        _stop(server.proc)


# --- nginx -------------------------------------------------------------------------------

NGINX_CONF = """\
worker_processes 2;
daemon off;
master_process on;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
{user}
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    default_type application/octet-stream;
    client_body_temp_path {work}/tmp/body;
    proxy_temp_path {work}/tmp/proxy;
    fastcgi_temp_path {work}/tmp/fastcgi;
    uwsgi_temp_path {work}/tmp/uwsgi;
    scgi_temp_path {work}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {work}/www;
        location /_corpus/ {{ return 200 "ready"; }}
    }}
}}
"""


def drop_from_cache(path: Path) -> None:
    """Write back and drop a file's pages from the page cache (posix_fadvise DONTNEED)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def resident_bytes(path: Path) -> int:
    """Bytes of ``path`` in the page cache, by mincore(2) over a read-only mapping of it."""
    import ctypes
    import mmap

    size = path.stat().st_size
    if size == 0:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    vec = (ctypes.c_ubyte * pages)()
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), f"mmap {path}")
        try:
            if libc.mincore(addr, size, vec) != 0:
                raise OSError(ctypes.get_errno(), f"mincore {path}")
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)
    return sum(v & 1 for v in vec) * mmap.PAGESIZE


@contextlib.contextmanager
def nginx(workdir: Path, files: int, file_mib: int) -> Iterator[Server]:
    """nginx (master + 2 workers) serving ``files`` files of ``file_mib`` MiB from
    ``workdir/www``, written by the test and dropped from the page cache before start."""
    import shutil

    exe = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK)
                                    else None)
    if exe is None:
        raise CorpusSetupError("nginx is not installed: apt-get install nginx (.ci/run does it)")
    www = workdir / "www"
    for d in (www, workdir / "tmp"):
        d.mkdir(parents=True, exist_ok=True)
    chunk = os.urandom(1 << 20)
    for i in range(files):
        path = www / f"f{i:02d}.bin"
        with open(path, "wb") as f:
            for j in range(file_mib):
                f.write(chunk[j:] + chunk[:j])  # distinct pages, cheap to make
        drop_from_cache(path)
    port = free_port()
    user = "user root root;" if os.geteuid() == 0 else ""
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(work=workdir, port=port, user=user))
    log = workdir / "nginx.out"
    with open(log, "w") as logf:
        proc = subprocess.Popen([exe, "-p", str(workdir), "-e", str(workdir / "error.log"),
                                 "-c", str(conf)], stdout=logf, stderr=subprocess.STDOUT,
                                start_new_session=True)
    server = Server(proc, port, workdir)
    try:
        try:
            wait_http(port, 20, "nginx", path="/_corpus/ready")
        except CorpusSetupError as e:
            raise CorpusSetupError(f"{e}\n{_log_tail(log)}\n"
                                   f"{_log_tail(workdir / 'error.log')}") from None
        yield server
    finally:
        _stop(proc)


# --- forked children sharing a buffer ----------------------------------------------------

@dataclass
class Forker:
    proc: subprocess.Popen
    pid: int
    children: list[int]
    fork_t: list[float]

    def go(self, timeout: float = 60.0) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        self._read_children(timeout)

    def _read_children(self, timeout: float) -> None:
        info = json.loads(_readline(self.proc, timeout, "forker.py"))
        self.children, self.fork_t = info["children"], info["fork_t"]

    @property
    def pids(self) -> list[int]:
        return [self.pid, *self.children]


def _readline(proc: subprocess.Popen, timeout: float, what: str) -> str:
    import selectors

    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        ready = sel.select(timeout)
    finally:
        sel.close()
    line = proc.stdout.readline() if ready else ""
    if not line:
        raise CorpusSetupError(f"{what} gave no output within {timeout}s (rc={proc.poll()})")
    return line


@contextlib.contextmanager
def forker(shared_mib: int, n: int, spread_s: float, wait: bool) -> Iterator[Forker]:
    """``servers/forker.py``: a parent with ``shared_mib`` MiB written, forking ``n`` idle
    children (at once, or on ``go`` when ``wait``), spread over ``spread_s`` seconds."""
    proc = subprocess.Popen(
        [sys.executable, str(SERVERS / "forker.py"), str(shared_mib), str(n), str(spread_s),
         "wait" if wait else "now"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        info = json.loads(_readline(proc, 60, "forker.py"))
        f = Forker(proc, info["pid"], [], [])
        if not wait:
            f._read_children(60)
        yield f
    finally:
        with contextlib.suppress(OSError):
            if proc.stdin:
                proc.stdin.close()  # the parent closes the pipe: every child exits
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        _stop(proc)
