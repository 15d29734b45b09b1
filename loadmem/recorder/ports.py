"""Which server answers on a TCP port of this machine, across network namespaces and through
userland proxies.

``find_port(procfs, port)`` answers with a ``PortFinding``:

1. **A listener in the recorder's own network namespace** (what ``127.0.0.1:PORT`` reaches).
   Its holders are found through the socket inode in every process's fd links; the roots
   are the holders whose parent does not hold it too (a pre-fork master, not its workers).
2. **Is that process a proxy?** Known userland proxies are recognised by name:
   ``docker-proxy``, ``rootlesskit`` (and ``rootlesskit-docker-proxy``, podman's
   ``rootlessport``), ``slirp4netns``,
   ``pasta``/``passt``, ``kubectl port-forward``, ``socat``. Any other process counts as a
   *forwarder* when, on accepting a bare connection (the *probe*: loadmem connects to the
   port and sends nothing), it opens a connection to a listener in another network
   namespace. An application server does not: it talks to its backends only once a
   request has arrived. The probe is made only when another namespace has a TCP listener
   at all, so a machine without containers never sees it.
3. **Where does the proxy forward to?** In this order, the first that names exactly one
   listener in another namespace wins:

   - *its command line*: ``docker-proxy -container-ip X -container-port Y``,
     ``kubectl port-forward POD LOCAL:REMOTE``, ``pasta -t HOST:GUEST``, the namespace
     (pid or path) given to ``slirp4netns``/``pasta``, the namespaces of ``rootlesskit``'s
     children. A port alone may match several containers; the IP (``fib_trie`` of each
     namespace) or the namespace then decides;
   - *its connections* (known proxies only): each established connection of the proxy is
     matched with its other end, the same 4-tuple reversed, accepted by a listener in
     another namespace (or the proxy holds a socket that lives in that namespace);
   - *the probe*: loadmem connects to the port and watches for the proxy's new connection
     (matched as above), or, for a known proxy whose other end is not a socket of this
     kernel's (``slirp4netns``, ``pasta`` and ``rootlesskit`` speak to the namespace
     through a tap device or a child process), for the one namespace whose listener
     accepted a new connection meanwhile.

   The server found may be a proxy itself (rootless docker: ``rootlesskit`` forwards to
   ``docker-proxy`` in its namespace, which forwards to the container): the search goes on
   from there, up to ``MAX_HOPS``.
4. **No listener in the own namespace**: a listener on the port in exactly one other
   namespace is the server (several: the finding says which, and the caller refuses).

The lookup is done at selection and again only when the listeners on the port change or
the server's processes exit: it never runs per tick.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import dataclass, field

from loadmem.errors import ProcessError
from loadmem.procfs.net_tcp import TcpSocket
from loadmem.procfs.reader import ProcFS
from loadmem.procfs.stat import parse_stat_identity
from loadmem.recorder.netns import WILDCARD, NetnsView, listener_accepts

#: A chain of proxies longer than this is not followed further.
MAX_HOPS = 4
#: How long the probe waits for the forwarded connection once the port's holder accepted
#: it (a forwarder connects on accept: docker-proxy within a millisecond), and at most in
#: all (a busy machine may be slow to schedule the accept).
PROBE_WAIT_S = 0.5
PROBE_MAX_S = 2.0
PROBE_POLL_S = 0.01

#: comm (15 characters at most) or argv[0] basename -> proxy kind
KNOWN_PROXIES = {
    "docker-proxy": "docker-proxy",
    "rootlesskit": "rootlesskit",
    "rootlesskit-doc": "rootlesskit",  # rootlesskit-docker-proxy, cut to 15 characters
    "rootlesskit-docker-proxy": "rootlesskit",
    "rootlessport": "rootlesskit",  # podman's, on rootlesskit's port driver
    "slirp4netns": "slirp4netns",
    "pasta": "pasta",
    "pasta.avx2": "pasta",
    "passt": "pasta",
    "passt.avx2": "pasta",
    "socat": "socat",
}
#: These speak to the namespace through a tap device or a helper in it: their other end is
#: not one of their own sockets, so only the namespace whose listener took the probe tells.
_OPAQUE = {"rootlesskit", "slirp4netns", "pasta", "kubectl port-forward"}


@dataclass(frozen=True)
class Process:
    pid: int
    start_time: int
    ppid: int
    name: str
    cmdline: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Hop:
    """One proxy process on the way to the server. Several processes may make one hop
    (docker starts one docker-proxy for 0.0.0.0 and one for ::): they share ``hop``."""

    process: Process
    kind: str  # "docker-proxy", "kubectl port-forward", ..., "forwarder" (found by the probe)
    how: str  # how its next hop was found: "command line", "connection", "probe"
    hop: int = 0  # 0 = the one listening on the port here, 1 = the next, ...


@dataclass
class PortFinding:
    port: int
    roots: list[Process] = field(default_factory=list)  # the server's root processes
    netns: int | None = None  # the server's network namespace
    own_netns: int | None = None  # the recorder's
    listen: tuple[str, int] | None = None  # what the server listens on, in its namespace
    proxies: list[Hop] = field(default_factory=list)  # from the port to the server
    holders_hidden: bool = False  # a socket listens, but this user cannot see who holds it
    ambiguous: list[tuple[int, list[Process]]] = field(default_factory=list)
    note: str | None = None  # a proxy was found but not where it forwards

    @property
    def other_netns(self) -> bool:
        return self.netns is not None and self.netns != self.own_netns

    @property
    def found(self) -> bool:
        return bool(self.roots)


def _process(procfs: ProcFS, pid: int) -> Process | None:
    try:
        ppid, start, comm, _ = parse_stat_identity(procfs.read_pid(pid, "stat"))
    except (ProcessError, ValueError, IndexError):
        return None
    argv: list[str] = []
    with contextlib.suppress(ProcessError, OSError):
        raw = procfs.read_pid_bytes(pid, "cmdline")
        argv = [a.decode("utf-8", "replace") for a in raw.rstrip(b"\0").split(b"\0")] if raw else []
    return Process(pid, start, ppid, comm, argv)


def proxy_kind(p: Process) -> str | None:
    """The kind of a known userland proxy, or None."""
    names = {p.name}
    if p.cmdline:
        names.add(os.path.basename(p.cmdline[0]))
    for n in names:
        if n in KNOWN_PROXIES:
            return KNOWN_PROXIES[n]
        if n == "kubectl" and "port-forward" in p.cmdline:
            return "kubectl port-forward"
        if n.startswith("pasta"):
            return "pasta"
    return None


# --- hints from command lines ------------------------------------------------------------
@dataclass
class _Hints:
    port: int | None = None  # the port the server listens on
    ip: str | None = None  # the address it listens on
    namespaces: set[int] | None = None  # where it is


def _flag(argv: list[str], *names: str) -> list[str]:
    """Values of ``-name V``, ``--name V``, ``-name=V``, ``--name=V`` in ``argv``."""
    out = []
    for i, a in enumerate(argv):
        key, eq, val = a.partition("=")
        if key.lstrip("-") in names and key.startswith("-"):
            if eq:
                out.append(val)
            elif i + 1 < len(argv):
                out.append(argv[i + 1])
    return out


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _forwarded_port(specs: list[str], port: int) -> int | None:
    """``LOCAL:REMOTE`` / ``[ADDR/]HOST[-END][:GUEST[-END]]`` specs (kubectl, pasta): the
    remote port that ``port`` maps to."""
    for spec in specs:
        for item in spec.split(","):
            item = item.rpartition("/")[2]  # pasta's ADDR/ prefix
            host, _, guest = item.partition(":")
            lo, _, hi = host.partition("-")
            lo_i, hi_i = _int(lo), _int(hi or lo)
            if lo_i is None or hi_i is None or not lo_i <= port <= hi_i:
                continue
            if not guest:
                return port
            glo = _int(guest.partition("-")[0])
            return None if glo is None else glo + (port - lo_i)
    return None


def _netns_of_path(path: str) -> int | None:
    with contextlib.suppress(OSError):
        return os.stat(path).st_ino
    return None


def _hints(view: NetnsView, proxy: Process, kind: str, port: int,
           children: list[int]) -> _Hints:
    argv = proxy.cmdline
    h = _Hints()
    if kind == "docker-proxy":
        h.ip = next(iter(_flag(argv, "container-ip")), None)
        h.port = _int(next(iter(_flag(argv, "container-port")), None))
    elif kind == "kubectl port-forward":
        i = argv.index("port-forward")
        specs = [a for a in argv[i + 1:]
                 if not a.startswith("-") and (":" in a or a.isdigit())]
        h.port = _forwarded_port(specs, port)
    elif kind == "pasta":
        h.port = _forwarded_port(_flag(argv, "t", "tcp-ports"), port)
        paths = _flag(argv, "netns")
        positional = [a for a in argv[1:] if not a.startswith("-")]
        target = paths[0] if paths else (positional[-1] if positional else None)
        ns = _target_netns(view, target)
        h.namespaces = {ns} if ns is not None else None
    elif kind == "slirp4netns":  # slirp4netns [OPTION]... PID|PATH [TAPNAME]
        positional = _positional(argv[1:], _SLIRP_VALUED)
        target = positional[0] if positional else None
        ns = _target_netns(view, target)
        h.namespaces = {ns} if ns is not None else None
    elif kind == "rootlesskit":
        spaces = {view.by_pid[c] for c in children if c in view.by_pid} - {view.by_pid.get(
            proxy.pid)}
        h.namespaces = spaces or None
    return h


#: slirp4netns options that take a separate value
_SLIRP_VALUED = {"-e", "--exit-fd", "-r", "--ready-fd", "-a", "--api-socket", "-m", "--mtu",
                 "--cidr", "--netns-type", "--userns-path", "--outbound-addr",
                 "--outbound-addr6", "--macaddress", "--target-type"}


def _positional(args: list[str], valued: set[str]) -> list[str]:
    """Arguments that are not options, nor the values of ``valued`` options."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a.startswith("-"):
            skip = a in valued
        else:
            out.append(a)
    return out


def _target_netns(view: NetnsView, target: str | None) -> int | None:
    if target is None:
        return None
    if target.isdigit():
        return view.by_pid.get(int(target))
    if target.startswith("/"):
        return _netns_of_path(target)
    return None


# --- the search --------------------------------------------------------------------------
@dataclass(frozen=True)
class _Next:
    ns: int
    listener: TcpSocket
    how: str


def _listener_for(view: NetnsView, ns: int, local: tuple[str, int]) -> TcpSocket | None:
    """The listener of ``ns`` that accepts connections to ``local``."""
    probe = TcpSocket(local[0], local[1], "", 0, "01", 0)
    for ls in view.listeners(ns, local[1]):
        if listener_accepts(ls, probe):
            return ls
    return None


def _by_hints(view: NetnsView, here: int, h: _Hints) -> _Next | None:
    if h.port is None and h.namespaces is None:
        return None
    found: list[_Next] = []
    for ns in view.others:
        if ns == here or (h.namespaces is not None and ns not in h.namespaces):
            continue
        for ls in view.listeners(ns, h.port):
            if h.ip is not None and ls.local_ip != h.ip and not (
                    ls.local_ip in WILDCARD and h.ip in view.local_addresses(ns)):
                continue
            found.append(_Next(ns, ls, "command line"))
    return found[0] if len(found) == 1 else None


def _by_connections(view: NetnsView, here: int, inodes: set[int], fresh: bool) -> _Next | None:
    """The listener in another namespace that accepted one of these sockets' connections."""
    found: dict[tuple[int, int], _Next] = {}
    tables = {ns: view.sockets(ns, fresh) for ns in {here, *view.others}}
    for ns, socks in tables.items():
        for s in socks:
            if s.inode not in inodes or not s.established:
                continue
            if ns != here:  # a socket made in that namespace (setns): its peer is local there
                ls = _listener_for(view, ns, s.remote)
                if ls is not None:
                    found[(ns, ls.inode)] = _Next(ns, ls, "connection")
                continue
            for other, osocks in tables.items():
                if other == here:
                    continue
                for o in osocks:
                    if o.established and o.local == s.remote and o.remote == s.local:
                        ls = _listener_for(view, other, o.local)
                        if ls is not None:
                            found[(other, ls.inode)] = _Next(other, ls, "connection")
    return next(iter(found.values())) if len(found) == 1 else None


def _probe(view: NetnsView, here: int, entry: tuple[str, int], tree: list[int],
           opaque: bool) -> _Next | None:
    """Connect to the port (no byte sent) and see where the connection is forwarded."""
    before = set().union(*(view.socket_inodes(p) for p in tree)) if tree else set()
    inbound = {ns: view.inbound(ns, fresh=True) for ns in view.others if ns != here}
    host = entry[0]
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(PROBE_MAX_S)
        try:
            sock.connect((host, entry[1]))
        except OSError:
            return None
        deadline = time.monotonic() + PROBE_MAX_S
        accepted = False
        tries: dict[int, int] = {}  # a new socket's other end is looked for a few times only
        while time.monotonic() < deadline:
            time.sleep(PROBE_POLL_S)
            new = set().union(*(view.socket_inodes(p) for p in tree)) - before if tree else set()
            if new and not accepted:  # the holder took the connection: it has PROBE_WAIT_S
                accepted = True
                deadline = min(deadline, time.monotonic() + PROBE_WAIT_S)
            new = {i for i in new if tries.get(i, 0) < 3}
            if new:
                for i in new:
                    tries[i] = tries.get(i, 0) + 1
                nxt = _by_connections(view, here, new, fresh=True)
                if nxt is not None:
                    return _Next(nxt.ns, nxt.listener, "probe")
            if opaque:
                got = [(ns, q) for ns in inbound
                       for q in view.inbound(ns, fresh=True) - inbound[ns]]
                spaces = {ns for ns, _ in got}
                if len(spaces) == 1:
                    ns, q = got[0]
                    ls = _listener_for(view, ns, (q[0], q[1]))
                    if ls is not None:
                        return _Next(ns, ls, "probe")
        return None
    finally:
        sock.close()


def _tree(procs: dict[int, Process], roots: list[Process]) -> list[int]:
    """The roots and all their descendants."""
    children: dict[int, list[int]] = {}
    for p in procs.values():
        children.setdefault(p.ppid, []).append(p.pid)
    out, stack = [], [r.pid for r in roots]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack += children.get(pid, [])
    return out


def _roots(procfs: ProcFS, holders: set[int], exclude: set[int]) -> list[Process]:
    procs = [p for p in (_process(procfs, pid) for pid in sorted(holders - exclude)) if p]
    held = {p.pid for p in procs}
    return [p for p in procs if p.ppid not in held]


def find_port(procfs: ProcFS, port: int, exclude: set[int] | frozenset[int] = frozenset(),
              probe: bool = True) -> PortFinding:
    """Resolve ``port`` to the processes of the server behind it; see the module docstring.
    ``exclude`` (the recorder, its ancestors) are never a server or a proxy."""
    exclude = set(exclude)
    view = NetnsView.scan(procfs)
    finding = PortFinding(port, own_netns=view.own)
    here = view.own
    if here is None:
        return finding
    owners = view.socket_owners()
    listeners = view.listeners(here, port)
    if not listeners:
        return _elsewhere(procfs, view, finding, owners, exclude)
    holders = set().union(*(owners.get(s.inode, set()) for s in listeners))
    roots = _roots(procfs, holders, exclude)
    if not roots:
        finding.holders_hidden = not holders
        return finding
    entry = listeners[0].local
    finding.roots, finding.netns, finding.listen = roots, here, entry
    procs: dict[int, Process] | None = None
    someone_listens_elsewhere = any(view.listeners(ns) for ns in view.others)
    for hop in range(MAX_HOPS):
        kinds = [k for k in (proxy_kind(r) for r in roots) if k]
        kind = kinds[0] if kinds else None
        # any process may be a forwarder at the port; past the first hop, only known proxies
        # are followed (a probe that shows a server is not one costs PROBE_WAIT_S)
        if kind is None and not (probe and someone_listens_elsewhere and hop == 0):
            break
        if procs is None:
            procs = {p.pid: p for p in (_process(procfs, pid) for pid in procfs.pids()) if p}
        tree = _tree(procs, roots)
        nxt: _Next | None = None
        if kind is not None:
            children = [pid for pid in tree if pid not in {r.pid for r in roots}]
            nxt = _by_hints(view, here, _hints(view, roots[0], kind, port, children))
            if nxt is None:
                inodes = set().union(*(view.socket_inodes(p) for p in tree))
                nxt = _by_connections(view, here, inodes, fresh=False)
        if nxt is None and probe:
            nxt = _probe(view, here, entry, tree, opaque=kind in _OPAQUE)
        if nxt is None:
            if kind is not None:
                finding.note = (f"{kind} (pid {roots[0].pid}) publishes port {port}, but "
                                "the server it forwards to was not found")
                finding.proxies += [Hop(r, kind, "unresolved", hop) for r in roots]
                finding.roots = []
            break
        server = _roots(procfs, owners.get(nxt.listener.inode, set()), exclude)
        if not server:  # the listener's holders are out of sight (another user)
            finding.holders_hidden = True
            finding.proxies += [Hop(r, kind or "forwarder", nxt.how, hop) for r in roots]
            finding.roots = []
            break
        finding.proxies += [Hop(r, kind or "forwarder", nxt.how, hop) for r in roots]
        roots, here = server, nxt.ns
        finding.roots, finding.netns, finding.listen = roots, here, nxt.listener.local
    return finding


def _elsewhere(procfs: ProcFS, view: NetnsView, finding: PortFinding,
               owners: dict[int, set[int]], exclude: set[int]) -> PortFinding:
    """No listener in the own namespace: one in exactly one other namespace is the server."""
    hits: list[tuple[int, TcpSocket, list[Process]]] = []
    hidden = False
    for ns in view.others:
        ls = view.listeners(ns, finding.port)
        if not ls:
            continue
        holders = set().union(*(owners.get(s.inode, set()) for s in ls))
        roots = _roots(procfs, holders, exclude)
        if roots:
            hits.append((ns, ls[0], roots))
        elif not holders:
            hidden = True
    if len(hits) == 1:
        ns, ls0, roots = hits[0]
        finding.roots, finding.netns, finding.listen = roots, ns, ls0.local
    elif len(hits) > 1:
        finding.ambiguous = [(ns, roots) for ns, _, roots in hits]
    else:
        finding.holders_hidden = hidden
    return finding


def describe_namespace(ns: int | None) -> str:
    return f"net:[{ns}]" if ns is not None else "?"

