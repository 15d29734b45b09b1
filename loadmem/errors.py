"""The one exception type users see, and the process-level errors the recorder maps errno to.

Only ``loadmem.cli.main.main`` prints a ``LoadmemError`` and turns it into an exit code;
library code raises it with a message that names the problem and a hint that says what
to do next.
"""

from __future__ import annotations

#: Exit codes shared by every command.
EXIT_OK = 0
EXIT_FINDING = 1  # a gate failed / a finding reached the --fail-on severity
EXIT_USAGE = 2  # bad input: options, files, recordings
EXIT_INTERRUPTED = 130  # Ctrl-C twice, SIGTERM


class LoadmemError(Exception):
    """A problem the user can fix. ``str()`` is one line; ``hint`` says what to do."""

    def __init__(self, message: str, hint: str | None = None, exit_code: int = EXIT_USAGE):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class ProcessError(Exception):
    """Reading a /proc/PID file failed for a reason tied to that process."""

    reason = "error"

    def __init__(self, pid: int, detail: str = ""):
        super().__init__(f"pid {pid}: {self.reason}{': ' + detail if detail else ''}")
        self.pid = pid


class ProcessGone(ProcessError):
    """ENOENT/ESRCH: the process exited (or its pid was never there)."""

    reason = "gone"


class ZombieProcess(ProcessGone):
    """The process has exited but was not reaped: no address space left to read."""

    reason = "zombie"


class AccessDenied(ProcessError):
    """EACCES/EPERM: smaps_rollup needs the same uid (dumpable) or CAP_SYS_PTRACE."""

    reason = "access-denied"
