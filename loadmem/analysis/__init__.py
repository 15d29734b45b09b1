"""Analysis: recordings in, typed findings and key figures out. Never reads /proc.

``analyze(recording_or_path, window=None) -> Analysis`` is the entry point (see
``docs/analysis.md``); ``Analysis``/``Finding`` are declared in ``loadmem.analysis.model``.
"""

from loadmem.analysis.analyze import analyze
from loadmem.analysis.model import Analysis, Finding, Window

__all__ = ["Analysis", "Finding", "Window", "analyze"]
