"""``--cgroup``, ``--container`` and ``--unit``: a cgroup whose processes are watched.

All three resolve to one cgroup directory (``CgroupTarget``); its processes, and those of
every cgroup below it, are read from ``cgroup.procs`` on every tick (``members``), so a
process that is forked into it, or moved into or out of it, is seen at the next tick.

- ``--cgroup PATH``: a path relative to the hierarchy's root, as ``/proc/PID/cgroup`` shows
  it (``/system.slice/nginx.service``), or the directory itself
  (``/sys/fs/cgroup/system.slice/nginx.service``). It is looked up in the memory hierarchy
  first (the v1 memory controller, else the v2 unified hierarchy), then in systemd's v1
  ``name=systemd`` hierarchy.
- ``--container NAME|ID``: the container whose id names a cgroup of some process
  (``loadmem.procfs.container_id``): a full id or a unique prefix of one, as ``docker ps``
  shows it. A name is turned into an id by the runtime's CLI if one is installed
  (``docker``/``podman``/``nerdctl inspect``, ``crictl ps --name``); no daemon API is used
  otherwise.
- ``--unit NAME[.service]``: the systemd unit whose name is a component of some process's
  cgroup path, else what ``systemctl show -p ControlGroup`` says.

Any problem (no such cgroup, no container matches, no such unit, a cgroup this user cannot
read) is a ``LoadmemError`` before anything is recorded.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shutil
import subprocess
from dataclasses import dataclass

from loadmem.errors import LoadmemError, ProcessError
from loadmem.procfs.cgroup import (
    CgroupMounts,
    CgroupRef,
    ProcCgroups,
    parse_cgroup_procs,
    parse_mountinfo_cgroups,
    parse_proc_cgroups,
    usage_file,
)
from loadmem.procfs.container_id import ContainerRef, container_in_path
from loadmem.procfs.reader import ProcFS

#: The runtime CLIs asked to turn a container name into an id, in this order.
CLI_TIMEOUT_S = 5.0
_HEX = re.compile(r"[0-9a-f]{3,64}")
_UNIT = re.compile(r"[A-Za-z0-9:_.\\@-]+")
_UNIT_TYPES = (".service", ".scope", ".slice", ".socket", ".mount", ".swap", ".target")


@dataclass(frozen=True)
class CgroupTarget:
    """A cgroup selected by ``--cgroup``/``--container``/``--unit``."""

    selector: str  # "cgroup" | "container" | "unit"
    value: str  # as the user gave it
    path: str  # relative to the hierarchy's root
    hierarchy: str  # "memory" (v1), "unified" (v2), "name=systemd" (v1)
    directory: str  # the cgroup's directory
    how: str  # how it was found
    container: ContainerRef | None = None

    @property
    def memory(self) -> CgroupRef | None:
        """The memory cgroup to record, when this is one."""
        if self.hierarchy == "memory":
            return CgroupRef(1, self.path)
        if self.hierarchy == "unified":
            return CgroupRef(2, self.path)
        return None

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {"selector": self.selector, "value": self.value,
                                  "cgroup": self.path, "hierarchy": self.hierarchy,
                                  "how": self.how}
        if self.container is not None:
            out["container"] = {"id": self.container.id, "runtime": self.container.runtime}
        return out


def mounts_of(procfs: ProcFS) -> CgroupMounts:
    try:
        return parse_mountinfo_cgroups(procfs.read("self/mountinfo"))
    except OSError:
        return CgroupMounts()


def _hierarchies(mounts: CgroupMounts) -> list[tuple[str, str]]:
    """(name, mount point) in the order a path is looked up."""
    out = []
    if mounts.v1_memory:
        out.append(("memory", mounts.v1_memory))
    if mounts.v2:
        out.append(("unified", mounts.v2))
    if mounts.v1_systemd:
        out.append(("name=systemd", mounts.v1_systemd))
    return out


def _line(cg: ProcCgroups, hierarchy: str) -> str | None:
    return {"memory": cg.v1_memory, "unified": cg.v2, "name=systemd": cg.v1_systemd}[hierarchy]


def index_cgroups(procfs: ProcFS) -> dict[int, ProcCgroups]:
    """pid -> its cgroups, for every process (one small read each)."""
    out: dict[int, ProcCgroups] = {}
    for pid in procfs.pids():
        with contextlib.suppress(ProcessError, OSError):
            out[pid] = parse_proc_cgroups(procfs.read_pid(pid, "cgroup"))
    return out


def _check_readable(procfs: ProcFS, target: CgroupTarget) -> CgroupTarget:
    """Fail now, not after the recording started, when the cgroup cannot be read."""
    files = ["cgroup.procs"]
    ref = target.memory
    if ref is not None:
        files += [usage_file(ref.version), "memory.stat"]
    for name in files:
        try:
            procfs.read_abs(f"{target.directory}/{name}")
        except PermissionError:
            raise LoadmemError(
                f"cannot read cgroup {target.path}: {name}: permission denied",
                "run loadmem as root (or as the user that owns the cgroup)",
            ) from None
        except FileNotFoundError:
            if name == "cgroup.procs":
                raise LoadmemError(f"cgroup {target.path} is gone",
                                   "is the service or container still running?") from None
        except OSError as e:
            raise LoadmemError(f"cannot read cgroup {target.path}: {name}: {e.strerror or e}",
                               "check the cgroup's permissions") from None
    return target


def members(procfs: ProcFS, directory: str) -> set[int]:
    """The pids in the cgroup at ``directory`` and in every cgroup below it.
    Raises ``OSError`` when the cgroup itself cannot be read (gone, or no permission)."""
    pids = set(parse_cgroup_procs(procfs.read_abs(f"{directory}/cgroup.procs")))
    stack = [directory]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                subdirs = [e.path for e in it if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        for sub in subdirs:
            with contextlib.suppress(OSError):  # removed meanwhile
                pids.update(parse_cgroup_procs(procfs.read_abs(f"{sub}/cgroup.procs")))
            stack.append(sub)
    return pids


# --- --cgroup ------------------------------------------------------------------------------
def resolve_cgroup(procfs: ProcFS, path: str, mounts: CgroupMounts | None = None) -> CgroupTarget:
    mounts = mounts or mounts_of(procfs)
    given = path
    hierarchies = _hierarchies(mounts)
    if not hierarchies:
        raise LoadmemError("no cgroup hierarchy is mounted on this machine",
                           "--cgroup needs /sys/fs/cgroup; select processes with --pid/--match")
    order = hierarchies
    for name, mount in hierarchies:  # the directory itself: its hierarchy, and no other
        if path == mount or path.startswith(mount.rstrip("/") + "/"):
            path = path[len(mount.rstrip("/")):] or "/"
            order = [(name, mount)]
            break
    path = "/" + path.strip("/")
    if ".." in path.split("/"):
        raise LoadmemError(f"invalid --cgroup {given!r}: '..' is not allowed",
                           "give the path as /proc/PID/cgroup shows it")
    path = posixpath.normpath(path)
    for name, mount in order:
        directory = mount.rstrip("/") + (path if path != "/" else "")
        if os.path.isdir(directory):
            return _check_readable(procfs, CgroupTarget("cgroup", given, path, name, directory,
                                                        "--cgroup"))
    where = " or ".join(m for _, m in order)
    raise LoadmemError(
        f"no cgroup {path} (looked under {where})",
        "give the path as /proc/PID/cgroup shows it, e.g. /system.slice/nginx.service "
        "(`cat /proc/PID/cgroup` shows a process's)",
    )


# --- --container ---------------------------------------------------------------------------
def _containers(index: dict[int, ProcCgroups], mounts: CgroupMounts
                ) -> dict[str, tuple[ContainerRef, str]]:
    """container id -> (its reference, the hierarchy it was found in), the memory hierarchy
    preferred (its cgroup is the one to record)."""
    found: dict[str, tuple[ContainerRef, str]] = {}
    rank = {name: i for i, (name, _) in enumerate(_hierarchies(mounts))}
    for cg in index.values():
        for name in rank:
            path = _line(cg, name)
            ref = container_in_path(path) if path else None
            if ref is None:
                continue
            old = found.get(ref.id)
            if old is None or rank[name] < rank[old[1]]:
                found[ref.id] = (ref, name)
    return found


def _cli_ids(name: str) -> tuple[list[str], list[str]]:
    """Ids that the installed runtime CLIs give for container ``name``, and which CLIs
    were asked. A CLI that fails (no daemon, no such container) gives nothing."""
    asked: list[str] = []
    ids: list[str] = []
    commands = {
        "docker": ["docker", "inspect", "--type", "container", "--format", "{{.Id}}", name],
        "podman": ["podman", "inspect", "--type", "container", "--format", "{{.Id}}", name],
        "nerdctl": ["nerdctl", "inspect", "--format", "{{.ID}}", name],
        "crictl": ["crictl", "ps", "-q", "--no-trunc", "--name", f"^{re.escape(name)}$"],
    }
    for cli, cmd in commands.items():
        if shutil.which(cli) is None:
            continue
        asked.append(cli)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
                                  stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if proc.returncode != 0:
            continue
        for word in proc.stdout.split():
            word = word.strip().lower()
            if re.fullmatch(r"[0-9a-f]{64}", word):
                ids.append(word)
                asked[-1] = cli + " (knew it)"
    return ids, asked


def resolve_container(procfs: ProcFS, value: str, mounts: CgroupMounts | None = None,
                      index: dict[int, ProcCgroups] | None = None) -> CgroupTarget:
    mounts = mounts or mounts_of(procfs)
    index = index if index is not None else index_cgroups(procfs)
    running = _containers(index, mounts)
    key = value.strip().lower()
    if _HEX.fullmatch(key):
        hits = sorted(i for i in running if i.startswith(key))
        if len(hits) > 1:
            listed = ", ".join(h[:12] for h in hits[:5])
            raise LoadmemError(f"container id {value!r} is ambiguous: it begins {len(hits)} "
                               f"running containers' ids ({listed})",
                               "give more of the id (docker ps --no-trunc)")
        if hits:
            return _container_target(procfs, mounts, value, *running[hits[0]],
                                     "container id in /proc/PID/cgroup")
    ids, asked = _cli_ids(value.strip())
    for cid in ids:
        if cid in running:
            cli = next((a.split()[0] for a in asked if a.endswith("(knew it)")), "the runtime")
            return _container_target(procfs, mounts, value, *running[cid],
                                     f"{cli} (name -> id)")
    if ids:
        raise LoadmemError(
            f"container {value!r} (id {ids[0][:12]}) has no process on this machine",
            "is it running, and on this machine? (docker ps)")
    tried = f"; asked {', '.join(asked)}" if asked else "; no docker/podman/crictl CLI here"
    raise LoadmemError(
        f"no running container matches {value!r}: no process's cgroup holds that id{tried}",
        "give the container's id (docker ps --no-trunc, crictl ps), or select it with "
        "--cgroup or --pid",
    )


def _container_target(procfs: ProcFS, mounts: CgroupMounts, value: str, ref: ContainerRef,
                      hierarchy: str, how: str) -> CgroupTarget:
    mount = dict(_hierarchies(mounts))[hierarchy]
    return _check_readable(procfs, CgroupTarget(
        "container", value, ref.cgroup, hierarchy, mount.rstrip("/") + ref.cgroup, how, ref))


# --- --unit --------------------------------------------------------------------------------
def resolve_unit(procfs: ProcFS, value: str, mounts: CgroupMounts | None = None,
                 index: dict[int, ProcCgroups] | None = None) -> CgroupTarget:
    unit = value.strip()
    if not _UNIT.fullmatch(unit):
        raise LoadmemError(f"invalid --unit {value!r}", "give a unit name, e.g. nginx.service")
    if not unit.endswith(_UNIT_TYPES):
        unit += ".service"
    mounts = mounts or mounts_of(procfs)
    index = index if index is not None else index_cgroups(procfs)
    for name, mount in _hierarchies(mounts):
        for cg in index.values():
            path = _line(cg, name)
            if not path:
                continue
            parts = path.split("/")
            if unit in parts:
                cgroup = "/".join(parts[: parts.index(unit) + 1])
                target = CgroupTarget("unit", value, cgroup, name, mount.rstrip("/") + cgroup,
                                      "process cgroups")
                return _check_readable(procfs, target)
    found = _systemctl_cgroup(unit)
    if found:
        for name, mount in _hierarchies(mounts):
            directory = mount.rstrip("/") + found
            if os.path.isdir(directory):
                return _check_readable(procfs, CgroupTarget("unit", value, found, name,
                                                            directory, "systemctl"))
    raise LoadmemError(
        f"no systemd unit {unit} runs on this machine: no process's cgroup is named after it",
        f"check `systemctl status {unit}` (is it running?), or give its cgroup with --cgroup",
    )


def _systemctl_cgroup(unit: str) -> str | None:
    if shutil.which("systemctl") is None:
        return None
    try:
        proc = subprocess.run(["systemctl", "show", "-p", "ControlGroup", "--value", unit],
                              capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    out = proc.stdout.strip()
    return out if proc.returncode == 0 and out.startswith("/") else None
