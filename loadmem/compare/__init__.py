"""Release comparison: the key figures of several recordings side by side, with noise.

``comparison.py`` compares recordings figure by figure (the figure catalogue,
``loadmem.analysis.figures``, says which direction is better); ``noise.py`` estimates each
recording's own run-to-run noise. Rendering lives in ``loadmem.presentation``.
"""
