"""Which processes the recorder watches, re-evaluated every tick.

Selectors pick *roots*: ``--pid`` (that process), ``--match REGEX`` (comm or command line),
``--port PORT`` (the server behind that TCP port, in any network namespace and through a
userland proxy: ``loadmem.recorder.ports``; a listener whose parent also listens is a
worker, not a root) and ``watch`` requests from the control channel. Every descendant of a
root is watched too, so workers forked, killed or respawned during the recording are
picked up on the next tick. A proxy in front of the server is watched with role ``proxy``.

``--cgroup``, ``--container`` and ``--unit`` select a cgroup (``loadmem.recorder.cgroups``):
exactly the processes in it and in the cgroups below it, read from ``cgroup.procs`` on
every tick; a process that leaves the cgroup leaves the selection.

Identity is ``(pid, start_time)``: a reused pid is a new process. Discovery lists ``/proc``
on every tick on which a process or thread was created or reaped (``/proc/loadavg`` counts
both: a quiet machine is not listed every second) and reads ``stat`` only for pids it has not
seen before (plus, for ``--match``, for young processes that may still ``exec``); watched
processes have their ``stat`` read by the sampler anyway.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from loadmem.errors import LoadmemError, ProcessError
from loadmem.procfs.cgroup import CgroupRef
from loadmem.procfs.net_tcp import parse_listening_inodes
from loadmem.procfs.reader import ProcFS
from loadmem.procfs.sock_diag import tcp_listeners
from loadmem.procfs.stat import parse_stat_identity
from loadmem.recorder import cgroups as cg
from loadmem.recorder.ports import PortFinding, find_port
from loadmem.recorder.selected import describe_cgroup, describe_port

#: A process younger than this may still exec(): re-check its command line for --match.
EXEC_GRACE_S = 2.0
#: How often the port's listening sockets are re-checked (a restarted server is re-found).
PORT_RECHECK_S = 5.0

#: The parent of every kernel thread.
KTHREADD = 2

Key = tuple[int, int]  # (pid, start_time)


@dataclass
class Selection:
    """What the user asked for (recorded in meta.json as is)."""

    pids: list[int] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)  # --cgroup PATH
    containers: list[str] = field(default_factory=list)  # --container NAME|ID
    units: list[str] = field(default_factory=list)  # --unit NAME[.service]

    def __post_init__(self) -> None:
        self.regexes = []
        for p in self.patterns:
            try:
                self.regexes.append(re.compile(p))
            except re.error as e:
                raise LoadmemError(
                    f"invalid --match regular expression {p!r}: {e}",
                    "write a Python regular expression, e.g. --match 'gunicorn|uvicorn'",
                ) from None

    @property
    def empty(self) -> bool:
        return not (self.pids or self.patterns or self.ports or self.cgroups
                    or self.containers or self.units)

    def to_dict(self) -> dict[str, list]:
        return {"pids": self.pids, "match": self.patterns, "ports": self.ports,
                "cgroups": self.cgroups, "containers": self.containers, "units": self.units}


@dataclass
class Watched:
    """A watched process: who it is and why it is watched."""

    pid: int
    start_time: int
    ppid: int
    name: str
    role: str  # "target" | "loadgen" | "proxy"
    depth: int  # 0 = a selected root, 1 = its child, ...
    group: Key  # the root this process descends from (its sharing group)


@dataclass
class _Seen:
    start_time: int
    ppid: int
    comm: str
    state: str


class ProcessSelector:
    """Keeps the watched set up to date; ``update()`` once per tick returns (new, gone)."""

    def __init__(
        self,
        selection: Selection,
        procfs: ProcFS | None = None,
        exclude_pids: Iterable[int] = (),
        no_match_pids: Iterable[int] = (),
        clk_tck: int | None = None,
    ):
        """``exclude_pids`` are never watched (the recorder itself); ``no_match_pids`` are
        never selected by ``--match``/``--port`` (the recorder's ancestors: a shell or
        ``sudo`` whose command line holds the pattern), though ``--pid`` may name them."""
        self.selection = selection
        self.procfs = procfs or ProcFS()
        self.clk_tck = clk_tck or os.sysconf("SC_CLK_TCK")
        self.exclude = set(exclude_pids)
        self.no_match = set(no_match_pids)
        self.watched: dict[int, Watched] = {}  # pid -> the live watched process
        self._seen: dict[int, _Seen] = {}
        self._young_unmatched: set[int] = set()
        # pid -> (role, start_time): a named root is that process, not a later one that
        # reuses its pid (start_time None until first seen)
        self._explicit: dict[int, tuple[str, int | None]] = {
            p: ("target", None) for p in selection.pids
        }
        self._port_roots: dict[int, int] = {}  # pid -> start_time of each server root
        self._proxy_roots: dict[int, int] = {}  # pid -> start_time of each proxy in front
        self._port_inodes: frozenset[int] | None = None
        self._port_checked = -1e9
        self._ports_stale = False  # a server root exited: look the port up again
        self.findings: dict[int, PortFinding] = {}
        self._tasks_mark: tuple[int, int] | None = None  # at the last listing
        self.cgroup_targets: list[cg.CgroupTarget] = []
        self._members: set[int] = set()  # pids in the selected cgroups, this tick
        self._via_cgroup: set[int] = set()  # watched because they are in them
        #: what each selector resolved to (meta.json ``selected``); port entries are replaced
        #: when a port is looked up again
        self.selected: list[dict] = []
        self._notes: list[tuple[str, dict]] = []  # (message, data) for the recording's events
        self._warned_cgroups: set[tuple[str, str]] = set()

    # --- control -----------------------------------------------------------------
    def check_initial(self) -> None:
        """Fail early (exit 2) for a --pid that does not exist, a port nobody listens on, a
        cgroup, container or unit that cannot be found or read; then fill ``selected``."""
        for pid in self.selection.pids:
            try:
                start = parse_stat_identity(self.procfs.read_pid(pid, "stat"))[1]
                self._explicit[pid] = ("target", start)
            except (ProcessError, ValueError, IndexError):
                raise LoadmemError(
                    f"no process with pid {pid}", "check the pid with `ps -p PID`"
                ) from None
        self._resolve_cgroups()
        if self.selection.ports:
            self._refresh_ports(force=True)
            for port in self.selection.ports:
                f = self.findings[port]
                if f.ambiguous:
                    listed = "; ".join(
                        ", ".join(f"{r.name} pid {r.pid}" for r in roots)
                        for _, roots in f.ambiguous[:4])
                    raise LoadmemError(
                        f"TCP port {port} is listened on in {len(f.ambiguous)} network "
                        f"namespaces and not on this one: {listed}",
                        "choose one with --container, --cgroup or --pid",
                    )
                if not f.found and f.holders_hidden:
                    raise LoadmemError(
                        f"a socket listens on TCP port {port}, but not in a process this user "
                        "can see",
                        "run loadmem as the server's user or as root, or select it with --pid",
                    )
                if not f.found and not f.proxies:
                    raise LoadmemError(
                        f"no process listens on TCP port {port} on this machine, in any "
                        "network namespace",
                        "start the server first, or select it with --pid/--match/--container",
                    )

    def _resolve_cgroups(self) -> None:
        sel = self.selection
        if not (sel.cgroups or sel.containers or sel.units):
            return
        mounts = cg.mounts_of(self.procfs)
        index = cg.index_cgroups(self.procfs) if (sel.containers or sel.units) else {}
        targets = [cg.resolve_cgroup(self.procfs, p, mounts) for p in sel.cgroups]
        targets += [cg.resolve_container(self.procfs, c, mounts, index) for c in sel.containers]
        targets += [cg.resolve_unit(self.procfs, u, mounts, index) for u in sel.units]
        self.cgroup_targets = targets
        for t in targets:
            try:
                pids = cg.members(self.procfs, t.directory)
            except OSError:
                pids = set()
            self.selected.append(describe_cgroup(t, pids))

    @property
    def selected_cgroups(self) -> list[CgroupRef]:
        """The memory cgroups that ``--cgroup``/``--container``/``--unit`` selected."""
        return [r for r in (t.memory for t in self.cgroup_targets) if r is not None]

    def take_notes(self) -> list[tuple[str, dict]]:
        """What the selector found out since the last call (a port looked up again, a
        cgroup that became unreadable), for the recording's events."""
        notes, self._notes = self._notes, []
        return notes

    def add_root(self, pid: int, role: str) -> None:
        """A control-channel ``watch`` request: watch ``pid`` and its tree under ``role``."""
        start: int | None = None  # gone already, or unreadable: bound when first seen
        with contextlib.suppress(ProcessError, ValueError, IndexError):
            start = parse_stat_identity(self.procfs.read_pid(pid, "stat"))[1]
        self._explicit[pid] = (role, start)
        w = self.watched.get(pid)
        if w is not None and (start is None or w.start_time == start):
            w.depth, w.role, w.group = 0, role, (w.pid, w.start_time)  # a root now

    # --- per tick ------------------------------------------------------------------
    def update(self) -> tuple[list[Watched], list[Watched]]:
        """Re-scan /proc; return (processes that started being watched, those that left).

        The listing is skipped while the kernel's task count and last allocated pid have
        not moved since the previous listing: no process was created or reaped since, so
        there is nothing new to find and nothing gone."""
        gone: list[Watched] = []
        new_pids: set[int] = set()
        mark = self.procfs.tasks_mark()  # before the listing: a fork after it moves it
        if mark is None or mark != self._tasks_mark:
            self._tasks_mark = mark
            pids = set(self.procfs.pids())
            for pid in self._seen.keys() - pids:
                del self._seen[pid]
                self.procfs.release(pid)
                self._young_unmatched.discard(pid)
                self._via_cgroup.discard(pid)
                w = self.watched.pop(pid, None)
                if w is not None:
                    gone.append(w)
                    self._root_gone(pid)
            new_pids = pids - self._seen.keys()
        for pid in new_pids:
            try:
                ppid, start, comm, state = parse_stat_identity(self.procfs.read_pid(pid, "stat"))
            except (ProcessError, ValueError, IndexError):
                continue
            self._seen[pid] = _Seen(start, ppid, comm, state)
        if self.selection.ports:
            self._refresh_ports()
        # parents before children: a new child of a new root is found in the same tick
        candidates = [p for p in new_pids if p in self._seen]
        recheck = [p for p in self._young_unmatched if p in self._seen and p not in new_pids]
        candidates += recheck
        if self.cgroup_targets:
            gone += self._refresh_members()
            candidates += [p for p in self._members
                           if p not in self.watched and p not in new_pids and self._see(p)]
        candidates.sort(key=lambda p: (self._seen[p].start_time, p))
        added: list[Watched] = []
        uptime = time.clock_gettime(time.CLOCK_BOOTTIME)
        for pid in candidates:
            if pid in self.watched or pid in self.exclude:
                self._young_unmatched.discard(pid)
                continue
            w = self._classify(pid)
            if w is not None:
                self.watched[pid] = w
                added.append(w)
                self._young_unmatched.discard(pid)
                if w.depth == 0 and pid not in new_pids:  # matched late (after exec)
                    added.extend(self._adopt_descendants(w))
            elif self.selection.regexes:
                age = uptime - self._seen[pid].start_time / self.clk_tck
                if age < EXEC_GRACE_S:
                    self._young_unmatched.add(pid)
                else:
                    self._young_unmatched.discard(pid)
        # control-channel, port and proxy roots that are already known but not yet watched
        for pid in list(self._explicit) + list(self._port_roots) + list(self._proxy_roots):
            if pid in self._seen and pid not in self.watched and pid not in self.exclude:
                w = self._classify(pid)
                if w is not None:
                    self.watched[pid] = w
                    added.append(w)
                    added.extend(self._adopt_descendants(w))
        for pid in new_pids:  # their stat was read once, to classify them: keep none open
            if pid not in self.watched:
                self.procfs.release(pid)
        return added, gone

    def forget(self, pid: int) -> Watched | None:
        """The sampler found the process gone (or its pid reused) mid-tick."""
        self._seen.pop(pid, None)
        self.procfs.release(pid)
        self._via_cgroup.discard(pid)
        self._root_gone(pid)
        return self.watched.pop(pid, None)

    def _root_gone(self, pid: int) -> None:
        """A server (or proxy) root exited: the port is looked up again (a restarted
        container has new processes, perhaps in a new namespace, behind the same proxy)."""
        if pid in self._port_roots or pid in self._proxy_roots:
            self._port_roots.pop(pid, None)
            self._proxy_roots.pop(pid, None)
            self._ports_stale = True

    def _see(self, pid: int) -> bool:
        """Make sure ``pid`` is known (a cgroup member the listing has not met yet)."""
        if pid in self._seen:
            return True
        try:
            ppid, start, comm, state = parse_stat_identity(self.procfs.read_pid(pid, "stat"))
        except (ProcessError, ValueError, IndexError):
            return False
        self._seen[pid] = _Seen(start, ppid, comm, state)
        return True

    def _refresh_members(self) -> list[Watched]:
        """Read the selected cgroups' processes (every tick); return the watched processes
        that left them."""
        members: set[int] = set()
        for t in self.cgroup_targets:
            try:
                members |= cg.members(self.procfs, t.directory)
            except OSError as e:
                key = ("cgroup-unreadable", t.path)
                if key not in self._warned_cgroups:
                    self._warned_cgroups.add(key)
                    self._notes.append((
                        f"cgroup {t.path} cannot be read: {e.strerror or e}; its processes are "
                        "no longer re-found", {"reason": "cgroup:unreadable", "cgroup": t.path}))
        self._members = members
        left = []
        for pid in [p for p in self._via_cgroup if p not in members]:
            self._via_cgroup.discard(pid)
            if pid in self._explicit or pid in self._port_roots:
                continue
            w = self.watched.pop(pid, None)
            if w is not None:
                left.append(w)
        return left

    # --- helpers -------------------------------------------------------------------
    def _classify(self, pid: int) -> Watched | None:
        """A root (depth 0) when named by --pid or a watch request, or when it matches
        --match/--port and its parent is not watched; a descendant when its parent is
        watched (a worker that inherited the master's command line or listening socket is
        a worker, not a root); otherwise not watched."""
        seen = self._seen[pid]
        if pid == KTHREADD or seen.ppid == KTHREADD:  # kernel threads have no user memory
            return None
        root = (pid, seen.start_time)
        named = self._explicit.get(pid)
        if named is not None:
            role, start = named
            if start is None or start == seen.start_time:
                self._explicit[pid] = (role, seen.start_time)
                return Watched(pid, seen.start_time, seen.ppid, seen.comm, role, 0, root)
            del self._explicit[pid]  # that process exited; this one only reuses its pid
        member = pid in self._members
        parent = self.watched.get(seen.ppid)
        # a child of a process watched for its cgroup is watched only while in the cgroup too
        if parent is not None and (member or parent.pid not in self._via_cgroup):
            if member:
                self._via_cgroup.add(pid)
            return Watched(pid, seen.start_time, seen.ppid, seen.comm, parent.role,
                           parent.depth + 1, parent.group)
        if member:
            self._via_cgroup.add(pid)
            return Watched(pid, seen.start_time, seen.ppid, seen.comm, "target", 0, root)
        if self._proxy_roots.get(pid) == seen.start_time and pid not in self.no_match:
            return Watched(pid, seen.start_time, seen.ppid, seen.comm, "proxy", 0, root)
        port_root = self._port_roots.get(pid) == seen.start_time
        if pid not in self.no_match and (port_root or self._matches(pid, seen)):
            return Watched(pid, seen.start_time, seen.ppid, seen.comm, "target", 0, root)
        return None

    def _adopt_descendants(self, root: Watched) -> list[Watched]:
        """Children of a root that became watched late (control channel, port re-found)."""
        added: list[Watched] = []
        frontier = [root]
        while frontier:
            parent = frontier.pop()
            for pid, s in sorted(self._seen.items(), key=lambda kv: kv[1].start_time):
                if s.ppid == parent.pid and pid not in self.watched and pid not in self.exclude:
                    w = Watched(pid, s.start_time, s.ppid, s.comm, parent.role, parent.depth + 1,
                                parent.group)
                    self.watched[pid] = w
                    added.append(w)
                    frontier.append(w)
        return added

    def _matches(self, pid: int, seen: _Seen) -> bool:
        if not self.selection.regexes:
            return False
        try:
            raw = self.procfs.read_pid_bytes(pid, "cmdline")
        except ProcessError:
            raw = b""
        cmdline = raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")
        return any(r.search(seen.comm) or (cmdline and r.search(cmdline))
                   for r in self.selection.regexes)

    def _refresh_ports(self, force: bool = False) -> None:
        """Look the selected ports up again when something changed, never per tick.

        Every ``PORT_RECHECK_S`` the listening sockets on the ports in the recorder's own
        network namespace are re-read (``_own_listening``: about 0.1 ms). The full
        lookup (``find_port``: every namespace, every process's fd links, maybe a probe
        connection) runs only when those sockets changed, when a server or proxy root
        exited, or, while a port has no server, every ``PORT_RECHECK_S``. Not
        ``psutil.net_connections()``: it walks every process's fd table on each call, and
        sees one namespace.
        """
        now = time.monotonic()
        unresolved = any(not f.found for f in self.findings.values())
        due = now - self._port_checked >= PORT_RECHECK_S
        if not (force or self._ports_stale or due):
            return
        self._port_checked = now
        frozen = frozenset(self._own_listening())
        if frozen == self._port_inodes and not (force or self._ports_stale or unresolved):
            return
        self._port_inodes = frozen
        self._ports_stale = False
        exclude = self.exclude | self.no_match
        findings = {port: find_port(self.procfs, port, exclude) for port in self.selection.ports}
        roots: dict[int, int] = {}
        proxies: dict[int, int] = {}
        for f in findings.values():
            roots.update((r.pid, r.start_time) for r in f.roots)
            proxies.update((h.process.pid, h.process.start_time) for h in f.proxies)
        for pid in proxies.keys() & roots.keys():  # a proxy that is also a server: a server
            del proxies[pid]
        changed = {p for p, f in findings.items()
                   if p not in self.findings or _roots_of(f) != _roots_of(self.findings[p])}
        first = not self.findings
        self.findings = findings
        self._port_roots, self._proxy_roots = roots, proxies
        if changed:
            self._describe_ports(changed, first)

    def _own_listening(self) -> set[int]:
        """Inodes of the sockets listening on the selected ports in this network namespace:
        through sock_diag (0.1 ms), else ``/proc/net/tcp{,6}`` (about 12 ms per file on a
        24 GiB machine: the kernel walks its whole connection table for each)."""
        ports = set(self.selection.ports)
        listeners = tcp_listeners() if self.procfs.root == "/proc" else None
        if listeners is not None:
            return {s.inode for s in listeners if s.local_port in ports}
        inodes: set[int] = set()
        for name in ("net/tcp", "net/tcp6"):
            try:
                text = self.procfs.read(name)
            except OSError:
                continue
            for port in ports:
                inodes |= parse_listening_inodes(text, port)
        return inodes

    def _describe_ports(self, ports: set[int], first: bool) -> None:
        entries = {p: describe_port(self.procfs, self.findings[p]) for p in ports}
        self.selected = [e for e in self.selected
                         if not (e.get("selector") == "port" and e.get("value") in entries)]
        self.selected += [entries[p] for p in sorted(entries)]
        if not first:
            for e in entries.values():
                self._notes.append((f"looked up again: {e['text']}", {"selected": e}))


def _roots_of(f: PortFinding) -> tuple:
    return (tuple((r.pid, r.start_time) for r in f.roots),
            tuple((h.process.pid, h.process.start_time) for h in f.proxies))
