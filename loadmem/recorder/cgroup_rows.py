"""The ``cgroup`` table's rows for one tick: what each memory cgroup is charged, its limits,
events and pressure, as the OOM killer and kubelet see them.

Per cgroup and tick, in long format (``key``, ``value``):

- ``usage``: v2 ``memory.current``, v1 ``memory.usage_in_bytes``;
- ``limit``: v2 ``memory.max``, v1 ``memory.limit_in_bytes``; ``high``: v2 ``memory.high``;
- ``effective_limit``: v2 the smallest ``memory.max`` of the cgroup and its ancestors, v1
  ``hierarchical_memory_limit`` of ``memory.stat``;
- ``peak``: v2 ``memory.peak`` (kernel >= 5.19), v1 ``memory.max_usage_in_bytes``;
- ``events.max``: v2 ``max`` of ``memory.events``, v1 ``memory.failcnt``; ``events.<name>``:
  v2 every line of ``memory.events`` (``low``, ``high``, ``oom``, ``oom_kill``,
  ``oom_group_kill``), v1 ``oom_kill`` of ``memory.oom_control``; ``under_oom`` (v1): 1
  while the cgroup is stuck at its limit with the OOM killer disabled;
- ``pressure.some_avg10``, ``pressure.full_avg10`` (hundredths of a percent) and
  ``pressure.some_total_us``, ``pressure.full_total_us`` (microseconds): v2
  ``memory.pressure``; v1 has no per-cgroup PSI;
- every ``memory.stat`` key, as the kernel names it.

A limit that is not set (``max``, or v1's ``PAGE_COUNTER_MAX``) has no row. A file this
kernel does not have (``memory.peak`` before 5.19) is looked for once per cgroup and then
left alone. A file that could be read and then cannot (the cgroup was removed, or its
permissions changed) gives a row with a null ``value`` and an ``error`` naming the file and
why (``memory.current:gone``), every tick, and one warning event; nothing else is lost.

All files are small and rendered by the kernel from counters (no page walk); the reader
keeps them open (``KeptOpenProcFS``) and re-reads them with ``pread``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loadmem.procfs.cgroup import (
    CgroupMounts,
    CgroupRef,
    parse_limit,
    parse_memory_stat,
    parse_pressure,
    usage_files,
)
from loadmem.procfs.reader import ProcFS

Warn = Callable[[Any, str, str, dict[str, Any]], None]
#: Files every memory cgroup has: their absence is a failure, not this kernel's lack.
_REQUIRED = ("memory.current", "memory.usage_in_bytes", "memory.stat")


def _reason(e: BaseException) -> str:
    if isinstance(e, FileNotFoundError) or getattr(e, "errno", None) in (errno.ENOENT,
                                                                         errno.ENODEV):
        return "gone"
    if isinstance(e, PermissionError):
        return "access-denied"
    if isinstance(e, ValueError):
        return "unparsable"
    return "unreadable"


@dataclass
class _Cgroup:
    ref: CgroupRef
    directory: str
    ancestors: list[str]  # v2: directories of the ancestors below the mount, nearest first
    missing: set[str] = field(default_factory=set)  # files this kernel does not have
    seen: set[str] = field(default_factory=set)  # files read at least once


class CgroupRows:
    """Builds the ``cgroup`` rows of one tick for a list of memory cgroups."""

    def __init__(self, procfs: ProcFS, mounts: CgroupMounts, warn: Warn):
        self.procfs = procfs
        self.mounts = mounts
        self.warn = warn
        self._known: dict[CgroupRef, _Cgroup | None] = {}

    def _cgroup(self, ref: CgroupRef) -> _Cgroup | None:
        if ref not in self._known:
            mount = self.mounts.v1_memory if ref.version == 1 else self.mounts.v2
            if mount is None:
                self._known[ref] = None
            else:
                mount = mount.rstrip("/")
                directory = mount + ref.path.rstrip("/")
                ancestors = []
                if ref.version == 2:
                    parts = [p for p in ref.path.split("/") if p]
                    for i in range(len(parts) - 1, 0, -1):
                        ancestors.append(mount + "/" + "/".join(parts[:i]))
                self._known[ref] = _Cgroup(ref, directory, ancestors)
        return self._known[ref]

    def rows(self, refs: list[CgroupRef], common: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for ref in refs:
            cg = self._cgroup(ref)
            if cg is not None:
                out += self._rows(cg, common)
        return out

    # --- one cgroup ----------------------------------------------------------------------
    def _read(self, cg: _Cgroup, name: str, errors: list[tuple[str, str]],
              key: str) -> str | None:
        """A file's text; None when this kernel lacks it or it failed (recorded in
        ``errors`` as (row key, error))."""
        if name in cg.missing:
            return None
        try:
            text = self.procfs.read_abs(f"{cg.directory}/{name}")
        except OSError as e:
            reason = _reason(e)
            if name not in cg.seen and reason == "gone" and name not in _REQUIRED \
                    and os.path.isdir(cg.directory):
                cg.missing.add(name)  # never there: this kernel's lack, not a failure
                return None
            errors.append((key, f"{name}:{reason}"))
            return None
        cg.seen.add(name)
        return text

    def _rows(self, cg: _Cgroup, common: dict[str, Any]) -> list[dict[str, Any]]:
        ref = cg.ref
        values: list[tuple[str, int]] = []
        errors: list[tuple[str, str]] = []
        limit: int | None = None
        for key, name in usage_files(ref.version).items():
            text = self._read(cg, name, errors, key)
            if text is None:
                continue
            try:
                value = parse_limit(text) if key in ("limit", "high") else int(text.strip())
            except ValueError:
                errors.append((key, f"{name}:unparsable"))
                continue
            if key == "limit":
                limit = value
            if value is not None:
                values.append((key, value))
        stat: dict[str, int] = {}
        text = self._read(cg, "memory.stat", errors, "stat")
        if text is not None:
            stat = parse_memory_stat(text)
        effective = self._effective_limit(cg, limit, stat, errors)
        if effective is not None:
            values.append(("effective_limit", effective))
        if ref.version == 2:
            text = self._read(cg, "memory.events", errors, "events")
            if text is not None:
                values += [(f"events.{k}", v) for k, v in parse_memory_stat(text).items()]
            text = self._read(cg, "memory.pressure", errors, "pressure")
            if text is not None:
                values += [(f"pressure.{k}", v) for k, v in parse_pressure(text).items()]
        else:
            text = self._read(cg, "memory.oom_control", errors, "events.oom_kill")
            if text is not None:
                oom = parse_memory_stat(text)
                if "oom_kill" in oom:
                    values.append(("events.oom_kill", oom["oom_kill"]))
                if "under_oom" in oom:
                    values.append(("under_oom", oom["under_oom"]))
        base = {**common, "cgroup": ref.path, "version": ref.version}
        rows = [{**base, "key": k, "value": v, "error": None} for k, v in values]
        rows += [{**base, "key": k, "value": v, "error": None} for k, v in stat.items()]
        for key, error in errors:
            rows.append({**base, "key": key, "value": None, "error": error})
            self.warn(("cgroup", ref.path, key), "cgroup:unreadable",
                      f"memory cgroup {ref.path}: {error}",
                      {"cgroup": ref.path, "version": ref.version, "error": error})
        return rows

    def _effective_limit(self, cg: _Cgroup, own: int | None, stat: dict[str, int],
                         errors: list[tuple[str, str]]) -> int | None:
        """The limit that applies first: the smallest of the cgroup's and its ancestors'."""
        if cg.ref.version == 1:
            h = stat.get("hierarchical_memory_limit")
            return None if h is None or h >= (1 << 62) else h
        best = own
        for d in cg.ancestors:
            try:
                value = parse_limit(self.procfs.read_abs(f"{d}/memory.max"))
            except (OSError, ValueError):
                continue  # the root has none; an ancestor we may not read limits nothing
            if value is not None and (best is None or value < best):
                best = value
        return best
