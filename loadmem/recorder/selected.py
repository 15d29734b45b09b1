"""What a selection resolved to, and how: the ``selected`` list of ``meta.json`` and the one
line per selector that ``loadmem record`` and ``loadmem run`` print when they start.

An entry is a plain JSON object (``docs/recording-format.md``). For a port::

    {"selector": "port", "value": 8000, "how": "proxy",
     "proxies": [{"pid": 812, "start_time": ..., "name": "docker-proxy",
                  "kind": "docker-proxy", "found_by": "command line"}],
     "server": [{"pid": 1201, "start_time": ..., "name": "gunicorn", "workers": 4}],
     "netns": "net:[4026532177]", "other_netns": true, "listen": "172.17.0.2:80",
     "cgroup": "/system.slice/docker-4f3a....scope",
     "container": {"id": "4f3a...", "runtime": "docker"},
     "text": "port 8000: published by docker-proxy (pid 812) for a server in another ..."}

``how`` is ``listener`` (the server listens on the port here), ``other-netns`` (it listens
in another network namespace, and nothing here does), ``proxy`` (a proxy here forwards to
it) or ``unresolved`` (a proxy was found, its server was not: the proxy is watched alone).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from loadmem.errors import ProcessError
from loadmem.presentation.escape import terminal as printable
from loadmem.procfs.cgroup import parse_proc_cgroups
from loadmem.procfs.container_id import container_in_path
from loadmem.procfs.reader import ProcFS
from loadmem.procfs.stat import parse_stat_identity
from loadmem.recorder.cgroups import CgroupTarget
from loadmem.recorder.ports import PortFinding, Process

_ID64 = re.compile(r"[0-9a-f]{64}")


def short_cgroup(path: str) -> str:
    """A cgroup path with every 64-digit id cut to 12 digits: ``docker-4f3a5b6c7d8e....scope``."""
    return _ID64.sub(lambda m: m.group(0)[:12] + "...", path)


def _children(procfs: ProcFS) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for pid in procfs.pids():
        try:
            ppid = parse_stat_identity(procfs.read_pid(pid, "stat"))[0]
        except (ProcessError, ValueError, IndexError):
            continue
        out.setdefault(ppid, []).append(pid)
    return out


def _descendants(children: dict[int, list[int]], pid: int) -> int:
    n, stack = 0, list(children.get(pid, []))
    while stack:
        p = stack.pop()
        n += 1
        stack += children.get(p, [])
    return n


def _cgroup_of(procfs: ProcFS, pid: int) -> str | None:
    try:
        cg = parse_proc_cgroups(procfs.read_pid(pid, "cgroup"))
    except (ProcessError, OSError):
        return None
    return cg.v1_memory or cg.v2


def _who(p: dict[str, Any]) -> str:
    workers = p.get("workers") or 0
    text = f"{printable(p['name'])} pid {p['pid']}"
    if workers:
        text += f" and {workers} worker{'s' if workers != 1 else ''}"
    return text


def describe_port(procfs: ProcFS, f: PortFinding,
                  children: dict[int, list[int]] | None = None) -> dict[str, Any]:
    """The ``selected`` entry of one resolved port (see the module docstring)."""
    children = children if children is not None else _children(procfs)

    def proc(p: Process) -> dict[str, Any]:
        return {"pid": p.pid, "start_time": p.start_time, "name": p.name,
                "workers": _descendants(children, p.pid)}

    entry: dict[str, Any] = {"selector": "port", "value": f.port}
    entry["proxies"] = [{"pid": h.process.pid, "start_time": h.process.start_time,
                         "name": h.process.name, "kind": h.kind, "found_by": h.how,
                         "hop": h.hop}
                        for h in f.proxies]
    entry["server"] = [proc(p) for p in f.roots]
    if f.listen is not None:
        host, port = f.listen
        entry["listen"] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    entry["netns"] = f"net:[{f.netns}]" if f.netns is not None else None
    entry["other_netns"] = f.other_netns
    cgroup = _cgroup_of(procfs, f.roots[0].pid) if f.roots else None
    entry["cgroup"] = cgroup
    ref = container_in_path(cgroup) if cgroup else None
    if ref is not None:
        entry["container"] = {"id": ref.id, "runtime": ref.runtime}
    if not f.roots:
        entry["how"] = "unresolved"
    elif f.proxies:
        entry["how"] = "proxy"
    elif f.other_netns:
        entry["how"] = "other-netns"
    else:
        entry["how"] = "listener"
    entry["text"] = port_line(entry, f.note)
    return entry


def port_line(e: dict[str, Any], note: str | None = None) -> str:
    head = f"port {e['value']}: "
    hops: dict[int, list[dict[str, Any]]] = {}
    for p in e["proxies"]:
        hops.setdefault(int(p.get("hop") or 0), []).append(p)
    chain = " via ".join(
        " and ".join(f"{printable(p['name'])} (pid {p['pid']})" for p in procs)
        for _, procs in sorted(hops.items()))
    server = ", ".join(_who(p) for p in e["server"])
    where = ""
    if e.get("cgroup") and e["cgroup"] != "/":
        where = f", cgroup {printable(short_cgroup(e['cgroup']))}"
    if e["how"] == "unresolved":
        return head + printable(note or f"published by {chain}; its server was not found") + \
            ": watching the proxy only"
    if e["how"] == "proxy":
        there = " in another network namespace" if e.get("other_netns") else ""
        return f"{head}published by {chain} for a server{there}: {server}{where}"
    if e["how"] == "other-netns":
        return f"{head}a server in another network namespace (nothing listens here): " \
               f"{server}{where}"
    return f"{head}{server}{where}"


def describe_cgroup(target: CgroupTarget, pids: Iterable[int]) -> dict[str, Any]:
    entry: dict[str, Any] = {**target.describe(), "processes": len(set(pids))}
    entry["text"] = cgroup_line(entry)
    return entry


def cgroup_line(e: dict[str, Any]) -> str:
    n = e.get("processes", 0)
    procs = f"{n} process{'es' if n != 1 else ''} now"
    path = printable(short_cgroup(e["cgroup"]))
    if e["selector"] == "container":
        c = e.get("container") or {}
        return (f"container {printable(str(e['value']))}: {c.get('runtime', '?')} "
                f"{str(c.get('id', ''))[:12]}, cgroup {path}, {procs}")
    if e["selector"] == "unit":
        return f"unit {printable(str(e['value']))}: cgroup {path}, {procs}"
    return f"cgroup {path} ({e['hierarchy']} hierarchy): {procs}"


def selected_lines(meta: dict[str, Any]) -> list[str]:
    """The lines to print for a recording's ``selected`` entries (``meta.json``)."""
    out = []
    for e in meta.get("selected") or []:
        if isinstance(e, dict) and isinstance(e.get("text"), str):
            out.append(printable(e["text"]))
    return out
