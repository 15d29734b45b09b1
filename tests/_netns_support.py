"""Containers made by hand for the tests: a network namespace (with a veth pair to this one),
memory cgroups under the test process's own memory cgroup, servers started inside them and
userland proxies on this side. Everything is removed on exit, also when a test fails.

Docker has no engine here, so a "container" is a namespace and a cgroup named like
docker's (``<own cgroup>/docker/<64 hex>``); the recorder resolves it the same way.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

V1_MEMORY = "/sys/fs/cgroup/memory"


def own_memory_cgroup() -> str:
    """This process's v1 memory cgroup path, as ``/proc/self/cgroup`` shows it."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return path
    raise AssertionError("no v1 memory controller: these tests need one")


@dataclass
class Cgroup:
    path: str  # as in /proc/PID/cgroup
    directory: Path

    def procs(self) -> set[int]:
        return {int(x) for x in (self.directory / "cgroup.procs").read_text().split()}

    def set(self, name: str, value: str) -> None:
        (self.directory / name).write_text(value)


def _kill_cgroup(directory: Path) -> None:
    for sub in sorted((p for p in directory.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        _kill_cgroup_dir(sub)
    _kill_cgroup_dir(directory)


def _kill_cgroup_dir(d: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            pids = [int(x) for x in (d / "cgroup.procs").read_text().split()]
        except OSError:
            return
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    for _ in range(100):
        try:
            d.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)


@contextlib.contextmanager
def memory_cgroup(rel: str, limit: str | None = None) -> Iterator[Cgroup]:
    """A memory cgroup at ``<own cgroup>/<rel>`` (parents made as needed), with an optional
    ``memory.limit_in_bytes``; its processes are killed and the cgroups removed on exit."""
    own = own_memory_cgroup().rstrip("/")
    path = f"{own}/{rel.strip('/')}"
    directory = Path(V1_MEMORY + path)
    made: list[Path] = []
    d = Path(V1_MEMORY + own)
    for part in rel.strip("/").split("/"):
        d = d / part
        if not d.exists():
            d.mkdir()
            made.append(d)
    try:
        if limit is not None:
            (directory / "memory.limit_in_bytes").write_text(limit)
        yield Cgroup(path, directory)
    finally:
        # this cgroup and everything below it; a parent made on the way only when it is
        # empty (another test's cgroup may be in it by now)
        if directory in made:
            _kill_cgroup(directory)
        for m in reversed(made):
            if m != directory:
                with contextlib.suppress(OSError):
                    m.rmdir()


def docker_id() -> str:
    return secrets.token_hex(32)


@dataclass
class Netns:
    name: str
    host_ip: str
    ns_ip: str

    @property
    def path(self) -> str:
        return f"/var/run/netns/{self.name}"

    def inode(self) -> int:
        return os.stat(self.path).st_ino


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _taken() -> str:
    return subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout


@contextlib.contextmanager
def netns() -> Iterator[Netns]:
    """A network namespace with loopback up and a veth pair: HOST_IP here, NS_IP there
    (a random /30 in 10.213.0.0/16 that no interface uses)."""
    tag = f"{os.getpid() % 100000}{secrets.token_hex(2)}"
    name = f"lmtest-{tag}"
    host_if, ns_if = f"lmh{tag}"[:15], f"lmn{tag}"[:15]
    taken = _taken()
    while True:
        a, b = random.randrange(256), random.randrange(0, 256, 4)
        host_ip, ns_ip = f"10.213.{a}.{b + 1}", f"10.213.{a}.{b + 2}"
        if f" {host_ip}/" not in taken and f" {ns_ip}/" not in taken:
            break
    _ip("netns", "add", name)
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", name)
        _ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", name, "addr", "add", f"{ns_ip}/30", "dev", ns_if)
        _ip("-n", name, "link", "set", ns_if, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        yield Netns(name, host_ip, ns_ip)
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", host_if)
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("netns", "del", name)


def spawn(argv: list[str], ns: Netns | None = None, cgroup: Cgroup | None = None,
          **kw) -> subprocess.Popen:
    """Start ``argv`` in its own session, inside ``ns`` and ``cgroup`` when given (the
    process joins the cgroup before it execs, so everything it forks is in it)."""
    if ns is not None:
        argv = ["nsenter", f"--net={ns.path}", "--", *argv]
    procs = str(cgroup.directory / "cgroup.procs") if cgroup is not None else None

    def join() -> None:
        if procs is not None:
            with open(procs, "w") as f:
                f.write(str(os.getpid()))

    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("text", True)
    return subprocess.Popen(argv, start_new_session=True, preexec_fn=join, **kw)


def stop(p: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        p.wait(timeout=10)


#: A pre-forking HTTP server: listens on HOST:PORT, forks WORKERS that accept; prints
#: "PORT" when every worker runs. argv: HOST PORT WORKERS
PREFORK = r'''
import os, socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port)); s.listen(64)
kids = []
for _ in range(n):
    pid = os.fork()
    if pid == 0:
        while True:
            c, _ = s.accept()
            try:
                c.settimeout(2)
                data = c.recv(65536)
                if data:
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                              b"Connection: close\r\n\r\nok")
            except OSError:
                pass
            c.close()
    kids.append(pid)
print(s.getsockname()[1], flush=True)
while True:
    time.sleep(60)
'''

#: A userland forwarder: listens on 127.0.0.1:0 here, prints its port, and for every
#: connection opens one to the upstream at once (before any byte arrives), then copies
#: bytes both ways. Upstream: ``-container-ip IP -container-port PORT`` (docker-proxy's
#: flags), or ``--netns PATH --to PORT`` (it enters that network namespace on the thread
#: that connects, as containerd does for ``kubectl port-forward``, and connects to
#: 127.0.0.1:PORT there).
FORWARDER = r'''
import ctypes, os, socket, sys, threading
args = sys.argv[1:]
def opt(name):
    return args[args.index(name) + 1] if name in args else None
ip, port = opt("-container-ip"), opt("-container-port")
netns, to = opt("--netns"), opt("--to")
libc = ctypes.CDLL(None, use_errno=True)
def upstream():
    if netns is None:
        return socket.create_connection((ip, int(port)))
    fd = os.open(netns, os.O_RDONLY)
    try:
        if libc.setns(fd, 0x40000000) != 0:
            raise OSError(ctypes.get_errno(), "setns")
    finally:
        os.close(fd)
    return socket.create_connection(("127.0.0.1", int(to)))
def pump(a, b):
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
def serve(c):
    try:
        u = upstream()
    except OSError:
        c.close()
        return
    threading.Thread(target=pump, args=(u, c), daemon=True).start()
    pump(c, u)
    c.close(); u.close()
host = opt("-host-ip") or "127.0.0.1"
ls = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((host, int(opt("-host-port") or 0))); ls.listen(64)
print(ls.getsockname()[1], flush=True)
while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
'''


def system_python() -> str:
    """The interpreter behind this venv (a copy named otherwise still runs the stdlib)."""
    return os.path.realpath(sys.executable)


def named_python(directory: Path, name: str) -> str:
    """A symlink called ``name`` to the system interpreter: a process started through it
    has ``name`` as its comm, as a real ``docker-proxy`` would."""
    link = directory / name
    if not link.exists():
        link.symlink_to(system_python())
    return str(link)


def wait_listening(p: subprocess.Popen, timeout: float = 20.0) -> int:
    """The port the process printed on its first line."""
    assert p.stdout is not None
    deadline = time.monotonic() + timeout
    line = p.stdout.readline().strip()
    if not line and time.monotonic() > deadline:
        raise AssertionError("no port printed")
    return int(line)


#: A relay in the manner of rootlesskit's port driver or slirp4netns: it listens here and
#: hands each accepted connection (the descriptor itself, over a socketpair) to a helper
#: process it started inside the namespace, which connects to 127.0.0.1:PORT there. Its
#: other end is not one of its own sockets. argv: --ns=NETNS_PATH --to=PORT
RELAY = r'''
import os, socket, subprocess, sys
opts = dict(a[2:].split("=", 1) for a in sys.argv[1:])
netns, to = opts["ns"], opts["to"]
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
helper = subprocess.Popen(["nsenter", "--net=" + netns, "--", sys.executable, "-c", HELPER,
                           str(b.fileno()), to], pass_fds=[b.fileno()])
b.close()
# the port is printed once the helper runs inside the namespace: before, nsenter may not have
# entered it yet, and a selector looking then finds the relay's child in this namespace
assert a.recv(1) == b"r"
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", 0)); ls.listen(64)
print(ls.getsockname()[1], flush=True)
while True:
    c, _ = ls.accept()
    socket.send_fds(a, [b"c"], [c.fileno()])
    c.close()
'''
RELAY_HELPER = r'''
import socket, sys, threading
s = socket.socket(fileno=int(sys.argv[1]))
s.send(b"r")  # in the namespace: the relay may say its port
def pump(x, y):
    try:
        while True:
            d = x.recv(65536)
            if not d:
                break
            y.sendall(d)
    except OSError:
        pass
    for z in (x, y):
        try:
            z.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
while True:
    _, fds, _, _ = socket.recv_fds(s, 1, 1)
    if not fds:
        break
    c = socket.socket(fileno=fds[0])
    u = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
    threading.Thread(target=pump, args=(u, c), daemon=True).start()
    threading.Thread(target=pump, args=(c, u), daemon=True).start()
'''
RELAY = RELAY.replace("HELPER,", repr(RELAY_HELPER) + ",", 1)
