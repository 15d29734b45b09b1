"""Which processes the recorder watches, re-evaluated every tick.

Selectors pick *roots*: ``--pid`` (that process), ``--match REGEX`` (comm or command line),
``--port PORT`` (the process listening on that TCP port: a listener whose parent also
listens is a worker, not a root) and ``watch`` requests from the control channel. Every
descendant of a root is watched too, so workers forked, killed or respawned during the
recording are picked up on the next tick.

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
from loadmem.procfs.net_tcp import parse_listening_inodes
from loadmem.procfs.reader import ProcFS
from loadmem.procfs.stat import parse_stat_identity

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
        return not (self.pids or self.patterns or self.ports)

    def to_dict(self) -> dict[str, list]:
        return {"pids": self.pids, "match": self.patterns, "ports": self.ports}


@dataclass
class Watched:
    """A watched process: who it is and why it is watched."""

    pid: int
    start_time: int
    ppid: int
    name: str
    role: str  # "target" | "loadgen"
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
        self._port_roots: dict[int, int] = {}  # pid -> start_time of each listening root
        self._port_inodes: frozenset[int] | None = None
        self._port_checked = -1e9
        self._holders: dict[int, set[int]] = {}
        self._port_by_inode: dict[int, int] = {}
        self._tasks_mark: tuple[int, int] | None = None  # at the last listing

    # --- control -----------------------------------------------------------------
    def check_initial(self) -> None:
        """Fail early (exit 2) for a --pid that does not exist or a port nobody listens on."""
        for pid in self.selection.pids:
            try:
                start = parse_stat_identity(self.procfs.read_pid(pid, "stat"))[1]
                self._explicit[pid] = ("target", start)
            except (ProcessError, ValueError, IndexError):
                raise LoadmemError(
                    f"no process with pid {pid}", "check the pid with `ps -p PID`"
                ) from None
        if self.selection.ports:
            self._refresh_ports(force=True)
            for port in self.selection.ports:
                if not self._port_holders(port) and port in self._port_by_inode.values():
                    raise LoadmemError(
                        f"a socket listens on TCP port {port}, but not in a process this user "
                        "can see",
                        "run loadmem as the server's user or as root, or select it with --pid",
                    )
                if not self._port_holders(port):
                    raise LoadmemError(
                        f"no process listens on TCP port {port} on this machine",
                        "start the server first, or select it with --pid/--match",
                    )

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
                w = self.watched.pop(pid, None)
                if w is not None:
                    gone.append(w)
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
        # control-channel roots and port roots that are already known but not yet watched
        for pid in list(self._explicit) + list(self._port_roots):
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
        return self.watched.pop(pid, None)

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
        parent = self.watched.get(seen.ppid)
        if parent is not None:
            return Watched(pid, seen.start_time, seen.ppid, seen.comm, parent.role,
                           parent.depth + 1, parent.group)
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
        """Re-find the processes listening on the selected ports (every ``PORT_RECHECK_S``).

        Not ``psutil.net_connections()``: it walks every process's fd table on each call.
        Reading ``/proc/net/tcp{,6}`` first (one small file) and scanning fd links only when
        the set of listening sockets changed keeps the periodic re-check nearly free, and
        goes through ``ProcFS`` so tests can feed it fixture files.
        """
        now = time.monotonic()
        if not force and now - self._port_checked < PORT_RECHECK_S:
            return
        self._port_checked = now
        inodes: set[int] = set()
        texts = []
        for name in ("net/tcp", "net/tcp6"):
            try:
                texts.append(self.procfs.read(name))
            except OSError:
                continue
        by_port = {port: set() for port in self.selection.ports}
        for text in texts:
            for port in self.selection.ports:
                found = parse_listening_inodes(text, port)
                by_port[port] |= found
                inodes |= found
        frozen = frozenset(inodes)
        if frozen == self._port_inodes and not force:
            return
        self._port_inodes = frozen
        self._port_by_inode = {i: p for p, s in by_port.items() for i in s}
        self._holders = self._scan_socket_holders(inodes)
        roots: dict[int, int] = {}
        for pid in self._holders:
            if pid in self.exclude or pid in self.no_match:
                continue
            ident = self._identity(pid)
            if ident is not None and ident[0] not in self._holders:
                roots[pid] = ident[1]
        self._port_roots = roots

    def _port_holders(self, port: int) -> set[int]:
        return {pid for pid, inodes in self._holders.items()
                if any(self._port_by_inode.get(i) == port for i in inodes)}

    def _identity(self, pid: int) -> tuple[int, int] | None:
        """``(ppid, start_time)`` of a live process, or None when it is gone."""
        try:
            ppid, start, _, _ = parse_stat_identity(self.procfs.read_pid(pid, "stat"))
        except (ProcessError, ValueError, IndexError):
            return None
        return ppid, start

    def _scan_socket_holders(self, inodes: set[int]) -> dict[int, set[int]]:
        """pid -> the listening inodes it holds. Reads every process's fd links: done only
        when the set of listening sockets on the selected ports changes."""
        holders: dict[int, set[int]] = {}
        if not inodes:
            return holders
        wanted = {f"socket:[{i}]": i for i in inodes}
        for pid in self.procfs.pids():
            hits = {wanted[link] for link in self.procfs.fd_links(pid) if link in wanted}
            if hits:
                holders[pid] = hits
        return holders
