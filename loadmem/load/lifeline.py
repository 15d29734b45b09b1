"""Children of ``loadmem run`` die with it, even when it is killed with SIGKILL.

The parent puts its pid in ``LOADMEM_PARENT_PID`` in each child's environment (``child_env``);
the child calls ``arm()`` first thing. ``arm`` asks the kernel for a signal when the parent
dies (``PR_SET_PDEATHSIG``) and then checks that the parent is still the one named (it may
have died between the fork and the ``prctl``: the check closes that race).

``PR_SET_PDEATHSIG`` is cleared in the child of a ``fork()``, so a process that forks
workers (Locust's ``--processes``, the demo server) arms its own children again after the
fork (``arm_after_fork``): each link of the chain dies with the one above it.

The recorder does not need this: its control channel is a pipe whose only writer is the
``loadmem run`` parent, so the parent's death is an end of file it reacts to by finishing
the recording (marked ``incomplete``), which a signal would cut short.
"""

from __future__ import annotations

import os
import signal

from loadmem.demo.proctl import signal_me_when_parent_dies

ENV = "LOADMEM_PARENT_PID"


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's environment) plus this process as the parent."""
    out = dict(os.environ if env is None else env)
    out[ENV] = str(os.getpid())
    return out


def arm(sig: int = signal.SIGKILL) -> bool:
    """Die by ``sig`` when the ``loadmem run`` parent dies; False when not a loadmem child."""
    text = os.environ.get(ENV)
    if not text or not text.isdigit():
        return False
    signal_me_when_parent_dies(sig)
    if os.getppid() != int(text):  # the parent died before the prctl took effect
        os.kill(os.getpid(), sig)
    return True


def arm_after_fork(sig: int = signal.SIGKILL) -> None:
    """Re-arm ``PR_SET_PDEATHSIG`` in every child this process forks (parent: this one)."""
    parent = os.getpid()

    def _child() -> None:
        signal_me_when_parent_dies(sig)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    os.register_at_fork(after_in_child=_child)
