"""Two Linux ``prctl`` calls the demo needs, through ctypes (stdlib only, no-ops elsewhere).

- ``PR_SET_NAME`` names the thread/process (``/proc/PID/comm``, what ``top`` and the
  recorder's ``name`` column show), so a recording tells ``loadmem-demo`` from
  ``demo-worker-2`` instead of five ``python3``.
- ``PR_SET_PDEATHSIG`` makes the kernel signal a worker when its master dies, even by
  SIGKILL, so no worker outlives it.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
_COMM_MAX = 15  # bytes, without the terminating NUL


def _prctl(option: int, arg: int | bytes) -> bool:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, arg, 0, 0, 0) == 0
    return False


def set_process_name(name: str) -> bool:
    """Set ``/proc/self/comm`` (truncated to 15 bytes). The command line is unchanged."""
    return _prctl(_PR_SET_NAME, name.encode()[:_COMM_MAX])


def signal_me_when_parent_dies(sig: int = signal.SIGTERM) -> bool:
    return _prctl(_PR_SET_PDEATHSIG, sig)
