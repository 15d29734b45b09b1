"""Reporters: text, JSON, Markdown, the matplotlib figure and the HTML report.

They take an ``Analysis`` (and, for pictures, the recording) and never recompute findings.
"""
