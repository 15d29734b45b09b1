"""What ``--target`` names: the bundled demo server, or a URL on this machine or another.

The answer decides what the recorder watches. A server on this machine (127.0.0.0/8, ::1,
``localhost``) is found by the port of its URL: the recorder selects the process listening
there and its whole tree, so a pre-fork master and its workers are watched without naming
them. A server on another machine cannot be observed from here (its ``/proc`` is there):
``loadmem run`` refuses to record unless told which local processes to watch
(``--watch-pid``/``--watch-match``) or told not to record (``--no-record``), and points to
``docs/multi-machine.md`` for the recipe that records on the server and joins the run's
events afterwards.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from loadmem.errors import LoadmemError

DEMO = "demo"
MULTI_MACHINE_HINT = "see docs/multi-machine.md: run `loadmem record` on the server's machine"


@dataclass(frozen=True)
class Target:
    """A parsed ``--target``: ``url`` is what Locust gets as ``--host``."""

    url: str
    host: str
    port: int
    is_demo: bool = False

    @property
    def is_local(self) -> bool:
        return is_loopback(self.host)

    @property
    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1: addresses that never leave this machine."""
    h = host.strip("[]").lower()
    if h == "localhost" or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def parse_target(text: str) -> Target:
    """``demo`` or ``http(s)://host[:port][/path]``; the port defaults from the scheme."""
    if text.strip().lower() == DEMO:
        return Target(url="", host="127.0.0.1", port=0, is_demo=True)
    raw = text.strip()
    if "://" not in raw:
        raw = "http://" + raw
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https"):
        raise LoadmemError(
            f"invalid --target {text!r}: scheme {parts.scheme!r} is not http or https",
            "give a URL such as http://127.0.0.1:8080, or `demo`",
        )
    try:
        port = parts.port
    except ValueError:
        raise LoadmemError(f"invalid --target {text!r}: bad port", "e.g. http://127.0.0.1:8080") \
            from None
    if not parts.hostname:
        raise LoadmemError(f"invalid --target {text!r}: no host", "e.g. http://127.0.0.1:8080")
    port = port or (443 if parts.scheme == "https" else 80)
    netloc = parts.netloc.rsplit("@", 1)[-1]  # never pass credentials on to Locust's logs
    url = f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"
    return Target(url=url, host=parts.hostname, port=port)


def check_reachable(target: Target, timeout: float = 3.0) -> None:
    """Fail with one clear line when nothing accepts a TCP connection at the target.

    A TCP connect is enough to tell "not running" from "running": the scenario decides which
    HTTP paths matter, and any HTTP status is an answer.
    """
    try:
        with socket.create_connection((target.host, target.port), timeout=timeout):
            pass
    except ConnectionRefusedError:
        raise LoadmemError(
            f"connection refused at {target.hostport}: is the server running?",
            "start it, or use --target demo to try loadmem on its bundled server",
        ) from None
    except TimeoutError:
        raise LoadmemError(
            f"no answer from {target.hostport} within {timeout:.0f}s",
            "check the address and any firewall",
        ) from None
    except OSError as e:
        raise LoadmemError(
            f"cannot connect to {target.hostport}: {e.strerror or e}", "check the --target URL"
        ) from None


def check_recordable(
    target: Target, watch_pids: list[int], watch_matches: list[str], no_record: bool
) -> None:
    """Refuse a remote target when this machine has nothing to record about it."""
    if target.is_demo or target.is_local or no_record or watch_pids or watch_matches:
        return
    raise LoadmemError(
        f"{target.host} is not on this machine: its memory cannot be recorded from here",
        f"add --no-record (and record there), or --watch-pid/--watch-match; {MULTI_MACHINE_HINT}",
    )
