"""The demo server's settings, validated once, shared by the command line and the launcher."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from loadmem.errors import LoadmemError

VARIANTS = ("default", "frozen")


@dataclass(frozen=True)
class DemoConfig:
    """Settings of one demo server run (times in seconds, table size in MiB)."""

    host: str = "127.0.0.1"
    port: int = 0
    workers: int = 4
    table_mb: float = 100.0
    variant: str = "default"
    idle_gc_after: float = 3.0
    idle_gc_stagger: float = 5.0
    #: 0: one full collection per idle period; > 0: repeat every that many seconds while idle.
    idle_gc_repeat: float = 0.0

    def __post_init__(self) -> None:
        try:
            loopback = ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise LoadmemError(
                f"the demo server listens on loopback only, not {self.host!r}",
                "use --host 127.0.0.1 (or ::1)",
            )
        if not 0 <= self.port <= 65535:
            raise LoadmemError(f"invalid port {self.port}", "use 0 for a free port, or 1-65535")
        if not 1 <= self.workers <= 64:
            raise LoadmemError(f"invalid worker count {self.workers}", "use 1 to 64 workers")
        if not 0 <= self.table_mb <= 64 * 1024:
            raise LoadmemError(f"invalid table size {self.table_mb} MiB", "use 0 to 65536")
        if self.variant not in VARIANTS:
            raise LoadmemError(
                f"unknown demo variant {self.variant!r}", f"use one of {', '.join(VARIANTS)}"
            )
        for name in ("idle_gc_after", "idle_gc_stagger", "idle_gc_repeat"):
            if getattr(self, name) < 0:
                raise LoadmemError(f"{name.replace('_', '-')} must be zero or more")
