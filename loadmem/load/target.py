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
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from loadmem.errors import LoadmemError

DEMO = "demo"
MULTI_MACHINE_HINT = "see docs/multi-machine.md: run `loadmem record` on the server's machine"


@dataclass(frozen=True)
class Target:
    """A parsed target URL. ``url`` has no credentials: it is what outputs and the recording
    show. ``locust_url`` is what Locust gets as its host: with the URL's ``user:password@``,
    which Locust's HTTP clients turn into basic auth (and strip from the requests' names)."""

    url: str
    host: str
    port: int
    is_demo: bool = False
    locust_url: str = ""

    @property
    def host_for_locust(self) -> str:
        return self.locust_url or self.url

    @property
    def has_credentials(self) -> bool:
        return bool(self.locust_url) and self.locust_url != self.url

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


def _redacted(text: str) -> str:
    """``text`` with any ``user:password@`` replaced, for error messages."""
    scheme, sep, rest = text.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return text


def parse_target(text: str, option: str = "--target") -> Target:
    """``demo`` or ``http(s)://[user:password@]host[:port][/path]``, parsed strictly.

    A bare ``host:port`` gets ``http://``. The port defaults from the scheme; port 0, a
    port above 65535, a scheme other than http/https or a URL without ``//`` after the
    scheme (``http//host``, ``http:/host``) are refused. ``option`` names the option in
    messages (``--target``, ``-H/--host``, or a User class's ``host``).
    """
    if text.strip().lower() == DEMO:
        return Target(url="", host="127.0.0.1", port=0, is_demo=True)
    raw = text.strip()
    shown = _redacted(raw)
    example = "e.g. http://127.0.0.1:8080"
    if not raw:
        raise LoadmemError(f"empty {option}", f"{example}, or `demo`")
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*(:/(?!/)|//)", raw) and "://" not in raw:
        raise LoadmemError(f"invalid {option} {shown!r}: the scheme must be followed by ://",
                           example)
    if "://" not in raw:
        raw = "http://" + raw
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https"):
        raise LoadmemError(
            f"invalid {option} {shown!r}: scheme {parts.scheme!r} is not http or https",
            "give a URL such as http://127.0.0.1:8080, or `demo`",
        )
    try:
        port = parts.port
    except ValueError:
        raise LoadmemError(f"invalid {option} {shown!r}: bad port (1-65535)", example) from None
    if not parts.hostname:
        raise LoadmemError(f"invalid {option} {shown!r}: no host", example)
    hostpart = parts.netloc.rsplit("@", 1)[-1]
    if port == 0 or hostpart.endswith(":"):
        raise LoadmemError(f"invalid {option} {shown!r}: port must be 1-65535", example)
    if parts.query or parts.fragment:
        raise LoadmemError(f"invalid {option} {shown!r}: a base URL has no ?query or #fragment",
                           example)
    port = port or (443 if parts.scheme == "https" else 80)
    path = parts.path.rstrip("/")
    url = f"{parts.scheme}://{hostpart}{path}"  # never in outputs: credentials
    locust_url = f"{parts.scheme}://{parts.netloc}{path}" if "@" in parts.netloc else ""
    return Target(url=url, host=parts.hostname, port=port, locust_url=locust_url)


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
