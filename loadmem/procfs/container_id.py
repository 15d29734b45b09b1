"""Container ids in cgroup paths: which container a process runs in, from ``/proc/PID/cgroup``
alone (no daemon API).

Every runtime names a container's cgroup after its 64-hex-digit id, in one of a few shapes:

- docker: ``/docker/<id>`` (cgroupfs driver), ``/system.slice/docker-<id>.scope`` (systemd);
- podman: ``/libpod_parent/libpod-<id>``, ``/machine.slice/libpod-<id>.scope`` (rootless:
  under ``user@UID.service``; some versions put the processes in a ``/container`` child);
- containerd (nerdctl): ``/<namespace>/<id>`` (``/default/<id>``),
  ``/system.slice/nerdctl-<id>.scope``;
- Kubernetes: ``/kubepods/<qos>/pod<uid>/<id>``, or with the systemd driver
  ``/kubepods.slice/.../kubepods-<qos>-pod<uid>.slice/cri-containerd-<id>.scope`` (or
  ``crio-<id>.scope``, ``docker-<id>.scope``).

Monitor processes live in cgroups named like containers (podman's ``libpod-conmon-<id>``,
CRI-O's ``crio-conmon-<id>``): they are not the container.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_COMPONENT = re.compile(r"^(?:(?P<prefix>[a-z][a-z0-9_-]*?)-)?(?P<id>[0-9a-f]{64})(?:\.scope)?$")

#: systemd scope prefix -> runtime
_PREFIXES = {
    "docker": "docker",
    "libpod": "podman",
    "cri-containerd": "containerd",
    "crio": "cri-o",
    "nerdctl": "containerd",
}


@dataclass(frozen=True, slots=True)
class ContainerRef:
    """A container found in a cgroup path: its id, runtime and cgroup (the path up to and
    including the id's component)."""

    id: str  # 64 hex digits
    runtime: str  # "docker", "podman", "containerd", "cri-o", "kubernetes (containerd)"...
    cgroup: str

    @property
    def short_id(self) -> str:
        return self.id[:12]


def container_in_path(path: str) -> ContainerRef | None:
    """The innermost container whose id names a component of ``path``, or None."""
    parts = path.split("/")
    for i in range(len(parts) - 1, -1, -1):
        m = _COMPONENT.match(parts[i])
        if m is None:
            continue
        prefix = m.group("prefix") or ""
        if "conmon" in prefix:  # the monitor next to a container, not the container
            return None
        parents = parts[:i]
        runtime = _PREFIXES.get(prefix)
        if runtime is None and prefix:
            continue  # some other unit that happens to end in 64 hex digits
        kube = any(p.startswith("kubepods") for p in parents)
        if runtime is None:
            parent = parents[-1] if parents else ""
            runtime = {"docker": "docker", "libpod_parent": "podman"}.get(
                parent, "kubernetes" if kube else "containerd")
        elif kube:
            runtime = f"kubernetes ({runtime})"
        return ContainerRef(m.group("id"), runtime, "/".join(parts[: i + 1]) or "/")
    return None
