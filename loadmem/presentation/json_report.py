"""``loadmem analyze --json``: the whole ``Analysis`` as one JSON document.

The schema is documented in ``docs/analysis.md`` ("JSON output") and versioned by the
``schema`` key; fields are only ever added. Non-finite numbers become ``null`` so that any
JSON parser reads the output.
"""

from __future__ import annotations

import json
import math
from typing import Any, TextIO

from loadmem.analysis.figures import format_figure
from loadmem.analysis.model import Analysis

#: Bump the number when a field changes meaning or disappears. 2: ``observe.*`` figures are
#: ``window.*``, the default window of a run is load and observe, process sums compare the
#: same processes at both ends; ``figures_text`` (each figure as every output prints it).
SCHEMA = "loadmem.analysis/2"


def _clean(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def to_json_dict(analysis: Analysis) -> dict[str, Any]:
    d = analysis.to_dict()
    d["window"]["duration_s"] = analysis.window.duration
    d["figures_text"] = {k: format_figure(k, v) for k, v in analysis.figures.items()}
    return _clean({"schema": SCHEMA, **d})


def render(analysis: Analysis, stream: TextIO) -> None:
    json.dump(to_json_dict(analysis), stream, indent=2, default=str, allow_nan=False)
    stream.write("\n")
