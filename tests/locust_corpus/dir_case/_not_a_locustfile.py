"""Locust skips files starting with "_" in a -f directory; importing this one fails loudly."""

raise RuntimeError("a -f directory must not load files that start with an underscore")
