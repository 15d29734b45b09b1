"""The locustfiles named in a Locust command line, read without Locust (for names and
messages only: Locust resolves ``-f`` itself, with its config files and variables)."""

from __future__ import annotations

import os


def locustfile_values(argv: list[str]) -> list[str]:
    """The values of ``-f``/``--locustfile`` in ``argv`` (``-f a.py``, ``-fa.py``,
    ``--locustfile=a.py``), in order, each possibly a comma list."""
    values: list[str] = []
    for i, arg in enumerate(argv):
        if arg in ("-f", "--locustfile") and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif arg.startswith("--locustfile="):
            values.append(arg.split("=", 1)[1])
        elif arg.startswith("-f") and len(arg) > 2 and not arg.startswith("--"):
            values.append(arg[2:])
    return [v for v in values if v]


def locustfiles_in(argv: list[str]) -> list[str]:
    """The .py files named by ``-f``: comma lists split, directories walked (as Locust
    does, files starting with ``_`` left out)."""
    found: list[str] = []
    for value in locustfile_values(argv):
        for part in value.split(","):
            part = part.strip()
            if os.path.isdir(part):
                for root, _dirs, files in os.walk(part):
                    found += [os.path.join(root, f) for f in sorted(files)
                              if f.endswith(".py") and not f.startswith("_")]
            elif part:
                found.append(part)
    return found
