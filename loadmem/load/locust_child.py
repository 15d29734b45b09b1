"""The Locust side of ``loadmem run``: Locust's own entry point, in a child process.

Run as ``python -m loadmem.load.locust_child`` with the Locust command line in the
environment (``LOADMEM_LOCUST_ARGV``, a JSON list: never on this process's command line,
which the recorder stores, because ``-H`` may carry credentials and custom arguments may
carry tokens). It installs loadmem's plugin (``locust_plugin``: listeners on
``locust.events``), then calls ``locust.main.main()`` with ``sys.argv = ["locust", *argv]``:
Locust parses its options (command line, ``LOCUST_*`` variables, ``locust.conf``,
``pyproject.toml``, ``--config``, with its own precedence), loads the locustfiles, fires
every event once, runs headless, prints its tables (to ``loadgen.log``) and picks its exit
code, exactly as ``locust`` would.

The plugin's ``init`` listener is loadmem's preflight: it reports what Locust resolved and
waits for the parent's go. When Locust gives up before that (bad options, a locustfile that
does not load), this module reports one ``{"type": "error", "message": ...}`` line naming
the problem (Locust's own message, or the file and line that failed) and exits 2.

It is a separate process on purpose: Locust monkey-patches the standard library with gevent,
so a sampler thread inside it would be a green thread that stalls while a user task burns
CPU, and importing ``requests``/``urllib3`` before ``locust`` breaks ``import locust``. The
loadmem parent therefore never imports Locust.
"""

# Locust first: it monkey-patches the standard library (gevent); anything that imports
# ssl/socket-heavy libraries (requests, urllib3) before it breaks the patching.
import locust  # noqa: F401, I001  (import order matters; see above)

import faulthandler
import json
import os
import signal
import sys
import traceback
from typing import Any

from loadmem.load.locust_argv import locustfiles_in

ARGV_ENV = "LOADMEM_LOCUST_ARGV"


class _Tee:
    """stderr that also keeps its last lines (Locust's message when it exits early)."""

    def __init__(self, stream: Any, keep: int = 40):
        self.stream = stream
        self.keep = keep
        self.lines: list[str] = []
        self._partial = ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        self._partial += text
        *done, self._partial = self._partial.split("\n")
        self.lines = (self.lines + done)[-self.keep:]
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)

    def text(self) -> str:
        return "\n".join([*self.lines, self._partial])


def _argv() -> list[str]:
    text = os.environ.get(ARGV_ENV, "[]")
    argv = json.loads(text)
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise SystemExit(f"{ARGV_ENV} must be a JSON list of strings")
    return argv


def _error_from_exception(paths: list[str], e: BaseException) -> dict[str, Any]:
    """One line naming the locustfile and line that failed to load."""
    if isinstance(e, SyntaxError):
        where = e.filename or (paths[0] if paths else "?")
        return {"type": "error", "kind": "syntax",
                "message": f"syntax error in {where}, line {e.lineno}: {e.msg}",
                "file": where, "line": e.lineno}
    absolute = {os.path.abspath(p) for p in paths}
    tb = traceback.extract_tb(e.__traceback__)
    frame = next((f for f in reversed(tb) if os.path.abspath(f.filename) in absolute), None)
    if frame is None:  # not one of the -f files: the innermost frame outside Locust
        frame = next((f for f in reversed(tb) if "site-packages" not in f.filename
                      and "loadmem" not in f.filename and not f.filename.startswith("<")),
                     None)
    path = frame.filename if frame else (paths[0] if paths else "the locustfile")
    where = f", line {frame.lineno}" if frame else ""
    return {"type": "error", "kind": "import",
            "message": f"{path}{where}: {type(e).__name__}: {e}",
            "file": path, "line": frame.lineno if frame else None}


def _last_words(captured: str, code: Any) -> str:
    """Locust's own message from what it wrote before exiting (one line)."""
    lines = [ln.strip() for ln in captured.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower() or ln.startswith("Could not find")]
    text = errors[-1] if errors else (lines[-1] if lines else f"Locust exited with code {code}")
    for prefix in ("locust: error: ",):
        if text.startswith(prefix):
            text = text[len(prefix):]
    text = text.split("/ERROR/locust.main: ", 1)[-1]
    more = [ln for ln in lines if ln.startswith("Did you mean")]
    return f"{text} ({more[-1]})" if more else text


def _dump_greenlets() -> None:
    """Where every greenlet is, innermost frame first (the parent's SIGUSR2: a locustfile
    that hangs in a gevent-patched call, which ``faulthandler`` sees only as the hub)."""
    import gc

    import greenlet

    lines = ["Greenlets (most recent call first):"]
    for obj in gc.get_objects():
        if isinstance(obj, greenlet.greenlet) and obj.gr_frame is not None:
            frame = obj.gr_frame
            while frame is not None:
                lines.append(f'  File "{frame.f_code.co_filename}", line {frame.f_lineno} '
                             f"in {frame.f_code.co_name}")
                frame = frame.f_back
    err = sys.__stderr__
    if err is not None:
        err.write("\n".join(lines) + "\n")
        err.flush()


def main() -> int:
    import gevent

    from loadmem.load import lifeline, locust_plugin

    lifeline.arm()  # die with the loadmem parent, even if it is SIGKILLed
    lifeline.arm_after_fork()  # --processes: Locust's forked workers die with this process
    # the parent asks where a hung locustfile is: threads (C level) and greenlets
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    gevent.signal_handler(signal.SIGUSR2, _dump_greenlets)
    argv = _argv()
    plugin = locust_plugin.install()
    tee = _Tee(sys.stderr)
    sys.stderr = tee
    from locust.main import main as locust_main

    sys.argv = ["locust", *argv]
    try:
        locust_main()  # always ends with sys.exit(code)
    except SystemExit as e:
        if not plugin.reported and e.code in (0, None):  # it only printed, then exited
            plugin.channel.emit({"type": "error", "kind": "print-only", "message": (
                "Locust exited before any test: -l/--list, --show-task-ratio[-json] and "
                "-V/--version only print (run `locust` for them)")})
        elif not plugin.reported:  # Locust gave up before its init event: bad input
            plugin.channel.emit({"type": "error", "kind": "locust",
                                 "message": _last_words(tee.text(), e.code)})
        raise
    except BaseException as e:  # a locustfile may raise anything while it loads
        if plugin.reported:
            raise
        traceback.print_exc()
        plugin.channel.emit(_error_from_exception(locustfiles_in(argv), e))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
