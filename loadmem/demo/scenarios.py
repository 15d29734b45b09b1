"""Find the scenarios shipped inside the package, for an installed loadmem outside a clone.

The files live in ``loadmem/scenarios/`` so that ``pip install loadmem`` ships them
(package data, not a package: importing a locustfile would import Locust and its gevent
monkey-patching into loadmem's own process); the repository's ``scenarios/`` directory,
the one users read and copy from, holds symbolic links to them: one source, no drift.
"""

from __future__ import annotations

from pathlib import Path

from loadmem.errors import LoadmemError

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "scenarios"


def bundled_scenarios() -> dict[str, Path]:
    """Name (``demo``, ``browse``, ``step_load``) -> path of each shipped scenario."""
    return {p.stem: p for p in sorted(BUNDLED_DIR.glob("*.py")) if not p.name.startswith("_")}


def bundled_scenario(name: str) -> Path:
    """Path of a shipped scenario by name, with or without ``.py`` (``demo``, ``demo.py``)."""
    stem = name.removesuffix(".py")
    found = bundled_scenarios()
    if stem not in found:
        raise LoadmemError(
            f"no bundled scenario named {name!r}",
            f"bundled scenarios: {', '.join(found) or 'none (broken install?)'}",
        )
    return found[stem]
