"""The bundled demo target: a pre-forking HTTP server whose workers drain memory when idle.

``start_demo()`` (in ``loadmem.demo.launch``) runs it as a child process for
``loadmem run --target demo``; ``python -m loadmem.demo`` runs it in the foreground.
See ``docs/demo.md``.
"""

from loadmem.demo.launch import DemoServer, start_demo

__all__ = ["DemoServer", "start_demo"]
