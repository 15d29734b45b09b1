"""Memory cgroups: which one a process is in, and what it is charged.

- ``/proc/PID/cgroup``: ``hierarchy-ID:controllers:path`` per line. cgroup v1 has one line
  per hierarchy (the memory controller's line lists ``memory``); cgroup v2 has the single
  line ``0::/path``. A hybrid host (like one with a v1 memory controller and a v2
  ``unified`` mount) has both: the v1 memory line wins, since v2 then holds no memory
  controller.
- ``/proc/self/mountinfo`` says where each hierarchy is mounted.
- v2 (``Documentation/admin-guide/cgroup-v2.rst``): ``memory.current`` (bytes),
  ``memory.max`` and ``memory.high`` (bytes or ``max``), ``memory.peak`` (bytes, kernel >=
  5.19), ``memory.stat``, ``memory.events`` (``key count`` lines: ``low``, ``high``, ``max``,
  ``oom``, ``oom_kill``, ``oom_group_kill``) and ``memory.pressure`` (PSI: ``some avg10=0.00
  avg60=0.00 avg300=0.00 total=0`` and a ``full`` line; ``total`` in microseconds).
- v1 (``Documentation/admin-guide/cgroup-v1/memory.rst``): ``memory.usage_in_bytes``,
  ``memory.limit_in_bytes`` (``PAGE_COUNTER_MAX`` pages, 9223372036854771712 on x86-64,
  when unlimited), ``memory.max_usage_in_bytes`` (the peak), ``memory.failcnt`` (times the
  limit was hit), ``memory.oom_control`` (``oom_kill_disable``, ``under_oom``, ``oom_kill``
  lines) and ``memory.stat`` (``rss``, ``cache``, ``shmem``, ``mapped_file``, ...,
  ``hierarchical_memory_limit`` and the hierarchical ``total_*`` twins).
- ``cgroup.procs``: the processes of one cgroup (not of those below it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CgroupRef:
    """A memory cgroup: its version and its path relative to the controller's mount."""

    version: int  # 1 or 2
    path: str  # "/system.slice/app.service"


@dataclass(frozen=True, slots=True)
class CgroupMounts:
    v1_memory: str | None = None  # mount point of the v1 memory controller
    v2: str | None = None  # mount point of the v2 unified hierarchy
    v1_systemd: str | None = None  # the v1 ``name=systemd`` hierarchy (systemd on v1 hosts)

    def directory(self, version: int, path: str) -> str | None:
        """The directory of memory cgroup ``path`` (v1 memory controller or v2)."""
        mount = self.v1_memory if version == 1 else self.v2
        return None if mount is None else mount + path.rstrip("/")


@dataclass(frozen=True, slots=True)
class ProcCgroups:
    """Every cgroup line of ``/proc/PID/cgroup`` that matters here (None when absent)."""

    v1_memory: str | None = None
    v2: str | None = None
    v1_systemd: str | None = None

    def paths(self) -> list[str]:
        return [p for p in (self.v1_memory, self.v2, self.v1_systemd) if p is not None]


def parse_proc_cgroups(text: str) -> ProcCgroups:
    """The v1 memory, v2 and v1 ``name=systemd`` paths of ``/proc/PID/cgroup``."""
    v1 = v2 = sd = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        if hid == "0" and controllers == "":
            v2 = path
        else:
            names = controllers.split(",")
            if "memory" in names:
                v1 = path
            if "name=systemd" in names:
                sd = path
    return ProcCgroups(v1, v2, sd)


def parse_proc_cgroup(text: str, mounts: CgroupMounts | None = None) -> CgroupRef | None:
    """The memory cgroup a process belongs to, or ``None`` when there is none."""
    v1 = v2 = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        if hid == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    if v1 is not None and (mounts is None or mounts.v1_memory):
        return CgroupRef(1, v1)
    if v2 is not None and (mounts is None or mounts.v2):
        return CgroupRef(2, v2)
    return None


def parse_mountinfo_cgroups(text: str) -> CgroupMounts:
    """Find the v1 memory controller and the v2 hierarchy in ``/proc/self/mountinfo``.

    A line: ``36 25 0:31 / /sys/fs/cgroup/memory rw,... shared:14 - cgroup cgroup rw,memory``:
    the fields after `` - `` are fstype, source and super options (which name the
    controllers for v1).
    """
    v1_memory = v2 = v1_systemd = None
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lf, rf = left.split(), right.split()
        if len(lf) < 5 or len(rf) < 3:
            continue
        fstype, super_opts, mount_point, root = rf[0], rf[2], lf[4], lf[3]
        if root != "/":  # a bind mount of a sub-tree (inside a container): paths would lie
            continue
        if fstype == "cgroup2" and v2 is None:
            v2 = mount_point
        elif fstype == "cgroup":
            opts = super_opts.split(",")
            if "memory" in opts and v1_memory is None:
                v1_memory = mount_point
            if "name=systemd" in opts and v1_systemd is None:
                v1_systemd = mount_point
    return CgroupMounts(v1_memory=v1_memory, v2=v2, v1_systemd=v1_systemd)


_STAT_LINE = re.compile(r"^[ \t]*(\S+)[ \t]+([-+]?\d+)[ \t]*$", re.MULTILINE)


def parse_memory_stat(text: str) -> dict[str, int]:
    """``memory.stat`` (v1 or v2): ``key value`` per line, in file order; lines that are
    not a key and an integer are skipped. One regular-expression pass: it runs every tick."""
    return {key: int(value) for key, value in _STAT_LINE.findall(text)}


def parse_usage(text: str) -> int:
    """``memory.current`` (v2) or ``memory.usage_in_bytes`` (v1): one integer, bytes."""
    return int(text.strip())


def usage_file(version: int) -> str:
    return "memory.current" if version == 2 else "memory.usage_in_bytes"


def parse_cgroup_procs(text: str) -> list[int]:
    """``cgroup.procs``: one pid (thread group id) a line."""
    return [int(x) for x in text.split() if x.isdigit()]


#: A v1 limit at or above this is "no limit" (PAGE_COUNTER_MAX pages: 2^63 - 4096 on x86-64).
V1_UNLIMITED = 1 << 62


def parse_limit(text: str) -> int | None:
    """``memory.max``/``memory.high`` (v2: bytes or ``max``) or ``memory.limit_in_bytes``
    (v1): bytes, or None when there is no limit."""
    t = text.strip()
    if t == "max":
        return None
    value = int(t)
    return None if value >= V1_UNLIMITED else value


def parse_pressure(text: str) -> dict[str, int]:
    """``memory.pressure`` (or ``/proc/pressure/memory``): for the ``some`` and ``full``
    lines, ``avg10`` in hundredths of a percent (``4.17`` -> 417: the share of the last
    10 s in which some/all tasks stalled on memory) and ``total`` in microseconds (the
    cumulative stall time): ``{"some_avg10": 417, "some_total_us": ..., ...}``."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        if kind not in ("some", "full"):
            continue
        for item in rest.split():
            name, _, value = item.partition("=")
            try:
                if name == "avg10":
                    out[f"{kind}_avg10"] = round(float(value) * 100)
                elif name == "total":
                    out[f"{kind}_total_us"] = int(value)
            except ValueError:
                continue
    return out


def usage_files(version: int) -> dict[str, str]:
    """Row key -> file, for the one-number files of a memory cgroup."""
    if version == 2:
        return {"usage": "memory.current", "limit": "memory.max", "high": "memory.high",
                "peak": "memory.peak"}
    return {"usage": "memory.usage_in_bytes", "limit": "memory.limit_in_bytes",
            "peak": "memory.max_usage_in_bytes", "events.max": "memory.failcnt"}
