"""Gate budgets from TOML: ``[tool.loadmem.gates]`` (pyproject.toml) or ``[gates]`` (loadmem.toml).

A gate is a table naming a metric (a figure of ``docs/analysis.md`` or an alias, see
``loadmem.analysis.figures``), a comparison (``max`` or ``min``) and a budget written in the
metric's unit::

    [gates]
    memory_growth  = { max = "200M" }                      # key = metric alias
    worker_pss     = { metric = "workers.pss_per_worker_end_bytes", max = "150M" }
    sharing        = { metric = "shared_fraction.end", min = "40%" }
    p95            = { metric = "latency.p95_ms", max = "250ms", missing = "skip" }

    [compare]                                               # used by `loadmem compare`
    fail_on_regression = "10%"
    budgets = { "cow.unshared_bytes" = "16M", "latency.p95_ms" = "20%" }

Sizes go through ``parse_size``, durations through ``parse_duration``, percentages through
``parse_percent``. Anything the loader does not understand (an unknown metric, a malformed
budget, an unknown key, ``max`` and ``min`` together) is a ``LoadmemError`` naming the file
and line: a typo in a CI budget must break the build, never quietly disable the gate.

When no config file is found, ``DEFAULT_GATES`` apply (documented in ``docs/gates.md``).
"""

from __future__ import annotations

import codecs
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from loadmem.analysis.figures import Metric, event_counts, lookup
from loadmem.errors import LoadmemError
from loadmem.units import parse_duration, parse_percent, parse_size

Comparison = Literal["max", "min"]
GATE_KEYS = {"metric", "max", "min", "missing", "description"}
CONFIG_NAMES = ("loadmem.toml", "pyproject.toml")


@dataclass(frozen=True)
class Gate:
    """One budget: ``metric`` must stay at or below (``max``) / at or above (``min``) it."""

    name: str
    metric: Metric
    comparison: Comparison
    budget: float
    budget_text: str  # as written, for messages
    missing: Literal["fail", "skip"] = "fail"
    description: str = ""
    line: int | None = None  # where it is declared (1-based), for messages


@dataclass(frozen=True)
class RegressionBudget:
    """How much worse a figure may get in ``loadmem compare``: relative or absolute."""

    metric: Metric
    relative: float | None = None  # fraction of the base value
    absolute: float | None = None  # in the metric's unit
    text: str = ""


@dataclass
class GateConfig:
    gates: list[Gate]
    source: str  # the file read, or "built-in defaults"
    fail_on_regression: float | None = None
    regression_budgets: dict[str, RegressionBudget] = field(default_factory=dict)
    is_default: bool = False


# ---------------------------------------------------------------------------- finding lines


def find_line(text: str, key: str, after: int = 0) -> int | None:
    """1-based line where ``key`` is assigned or opens a table, at or after line ``after``.

    tomllib does not report positions, so we scan the text: good enough to point a human at
    the right line, which is all an error message needs.
    """
    k = re.escape(key)
    pattern = re.compile(
        rf"""^\s*(?:\[+[^\]]*\.)?(?:{k}|"{k}"|'{k}')\s*(?:=|\]|\.)"""
        rf"""|[{{,]\s*(?:{k}|"{k}"|'{k}')\s*="""
    )
    lines = text.splitlines()
    for i in range(max(after - 1, 0), len(lines)):
        if pattern.search(lines[i]):
            return i + 1
    return None


def _table_line(text: str, table: str) -> int:
    m = re.search(rf"^\s*\[\s*{re.escape(table)}\s*\]", text, re.MULTILINE)
    return text.count("\n", 0, m.start()) + 1 if m else 1


class _Where:
    """Builds error messages that name the file and the line of a key."""

    def __init__(self, path: Path, text: str, table: str):
        self.path = path
        self.text = text
        self.table_line = _table_line(text, table)

    def line(self, gate: str, key: str | None = None) -> int | None:
        gline = find_line(self.text, gate, self.table_line) or find_line(self.text, gate)
        if key is None or gline is None:
            return gline
        return find_line(self.text, key, gline) or gline

    def error(self, gate: str, key: str | None, message: str, hint: str | None = None):
        line = self.line(gate, key)
        where = f"{self.path}:{line}" if line else str(self.path)
        return LoadmemError(f"{where}: {message}", hint)


# ---------------------------------------------------------------------------- budgets


#: A size written where a duration is expected: "250M", "1G", "64KiB", "512 MB".
_SIZE_LIKE = re.compile(r"^\s*[\d.]+\s*([KMGTP]i?B?|[kmgtp]i?B|[kmgtp]?iB|B)\s*$")
#: What a latency budget may be written in: milliseconds or seconds, nothing longer.
_LATENCY = re.compile(r"^\s*[\d.]+\s*(ms|s)\s*$", re.IGNORECASE)


def parse_budget(metric: Metric, value: Any) -> float:
    """A budget in the metric's unit; raises ``LoadmemError`` (without location) if malformed.

    Strict where the one parser would be generous: a budget must be finite; a latency is
    written in ms or s (``"250M"`` would otherwise be 250 minutes); a size is refused for a
    duration; a fraction (a failure ratio, a sharing ratio: a part of a whole) lies
    between 0 and 100 %.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise LoadmemError(f"budget must be a number or a string, not {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise LoadmemError(f"budget {value!r} is not a finite number", "write a number")
    text = value.strip() if isinstance(value, str) else value
    negative = False
    if isinstance(text, str) and text.startswith("-"):
        negative, text = True, text[1:].strip()
    unit = metric.unit
    if unit == "bytes":
        v = float(parse_size(int(text) if isinstance(text, float) else text))
    elif unit == "bytes_per_s":
        if isinstance(text, str):
            text = re.sub(r"\s*/\s*s(ec)?$", "", text, flags=re.IGNORECASE)
        v = float(parse_size(int(text) if isinstance(text, float) else text))
    elif unit == "s":
        if isinstance(text, str) and _SIZE_LIKE.match(text) and not re.search(r"[mM]\s*$", text):
            raise LoadmemError(f"{value!r} is a size, not a duration",
                               'write a duration: "90s", "5m", "2h"')
        v = parse_duration(text)
    elif unit == "ms":
        if not isinstance(text, str) or re.fullmatch(r"[\d.]+", text):
            raise LoadmemError(
                f"latency budget {value!r} has no unit", 'write it as "250ms" or "0.25s"'
            )
        if not _LATENCY.match(text):
            what = "a size or minutes" if _SIZE_LIKE.match(text) or text.endswith("M") else (
                "not in ms or s")
            raise LoadmemError(f"latency budget {value!r} is {what}",
                               'write it in milliseconds or seconds: "250ms" or "0.25s"')
        v = parse_duration(text) * 1000.0
    elif unit == "ratio":
        v = parse_percent(text)
    else:  # count, rps
        if isinstance(text, str):
            text = re.sub(r"\s*/\s*s(ec)?$", "", text, flags=re.IGNORECASE)
            try:
                text = float(text)
            except ValueError:
                raise LoadmemError(f"invalid number {value!r}") from None
        v = float(text)
    if not math.isfinite(v):
        raise LoadmemError(f"budget {value!r} is not a finite number", "write a number")
    v = -v if negative else v
    if unit == "ratio" and not metric.signed and not 0.0 <= v <= 1.0:
        raise LoadmemError(f"{value!r} is not a fraction: {metric.name} lies between 0 and 100%",
                           'write it as "40%" or 0.4')
    return v


# ---------------------------------------------------------------------------- loading


def _gates_table(data: dict[str, Any], path: Path) -> tuple[dict[str, Any] | None, str, str]:
    """(gates table, its dotted name, the compare table's name) for this kind of file."""
    tool = data.get("tool", {}).get("loadmem") if isinstance(data.get("tool"), dict) else None
    if path.name == "pyproject.toml" or (isinstance(tool, dict) and "gates" not in data):
        tool = tool if isinstance(tool, dict) else {}
        return tool.get("gates"), "tool.loadmem.gates", "tool.loadmem.compare"
    return data.get("gates"), "gates", "compare"


def _decode(path: Path, data: bytes) -> str:
    """The file's text. TOML is UTF-8; a UTF-8 byte-order mark (some Windows editors write
    one) is dropped, anything else that is not UTF-8 is an error naming the line."""
    for bom, name in ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
                      (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16")):
        if data.startswith(bom):
            raise LoadmemError(f"{path}:1: the file is {name} (it starts with a {name} "
                               "byte-order mark); TOML files are UTF-8",
                               "save it as UTF-8")
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise LoadmemError(f"{path}:{line}: not UTF-8 (byte 0x{data[e.start]:02x}); TOML files "
                           "are UTF-8", "save it as UTF-8") from None


def _read(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LoadmemError(f"no gates config at {path}", "give an existing --config file") from None
    except IsADirectoryError:
        raise LoadmemError(f"{path} is a directory, not a gates config",
                           "give a loadmem.toml or pyproject.toml file") from None
    except OSError as e:
        raise LoadmemError(f"cannot read {path}: {e.strerror or e}") from None
    text = _decode(path, data)
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column \d+\)", str(e))
        where = f"{path}:{m.group(1)}" if m else str(path)
        raise LoadmemError(f"{where}: invalid TOML: {e}") from None


def _parse_gate(name: str, spec: Any, where: _Where) -> Gate:
    if not isinstance(spec, dict):
        raise where.error(
            name, None, f"gate {name!r} must be a table",
            f'write it as {name} = {{ max = "200M" }} or {name} = {{ metric = "...", min = ... }}',
        )
    unknown = sorted(set(spec) - GATE_KEYS)
    if unknown:
        raise where.error(
            name, unknown[0], f"gate {name!r}: unknown key {unknown[0]!r}",
            "allowed: " + ", ".join(sorted(GATE_KEYS)),
        )
    metric_name = spec.get("metric", name)
    if not isinstance(metric_name, str):
        raise where.error(name, "metric", f"gate {name!r}: metric must be a string")
    metric = lookup(metric_name)
    if metric is None:
        raise where.error(
            name, "metric" if "metric" in spec else None,
            f"gate {name!r}: unknown metric {metric_name!r}",
            "see docs/gates.md for the metric names, e.g. window.used_delta_bytes",
        )
    comparisons = [c for c in ("max", "min") if c in spec]
    if len(comparisons) != 1:
        raise where.error(
            name, None,
            f"gate {name!r}: give exactly one of max or min (found {len(comparisons)})",
            "use two gates for a range",
        )
    comparison: Comparison = comparisons[0]  # type: ignore[assignment]
    raw = spec[comparison]
    try:
        budget = parse_budget(metric, raw)
    except LoadmemError as e:
        raise where.error(
            name, comparison, f"gate {name!r}: malformed budget {raw!r} for {metric.name} "
            f"({metric.unit}): {e.message}", e.hint,
        ) from None
    missing = spec.get("missing", "fail")
    if missing not in ("fail", "skip"):
        raise where.error(name, "missing", f"gate {name!r}: missing must be 'fail' or 'skip'")
    description = spec.get("description", "")
    return Gate(
        name=name, metric=metric, comparison=comparison, budget=budget,
        budget_text=str(raw), missing=missing, description=str(description),
        line=where.line(name),
    )


def _finite_percent(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise LoadmemError(f"a percentage must be a number or a string, not {value!r}")
    v = parse_percent(value)
    if not math.isfinite(v) or v < 0:
        raise LoadmemError(f"invalid percentage {value!r}: must be a finite number, 0 or more",
                           "write it as 10% or 2.5%")
    return v


def _parse_compare(table: Any, where: _Where) -> tuple[float | None, dict[str, RegressionBudget]]:
    if table is None:
        return None, {}
    if not isinstance(table, dict):
        raise where.error("compare", None, "compare must be a table")
    unknown = sorted(set(table) - {"fail_on_regression", "budgets"})
    if unknown:
        raise where.error("compare", unknown[0], f"compare: unknown key {unknown[0]!r}",
                          "allowed: fail_on_regression, budgets")
    fail = None
    if "fail_on_regression" in table:
        try:
            fail = _finite_percent(table["fail_on_regression"])
        except LoadmemError as e:
            raise where.error("compare", "fail_on_regression", e.message, e.hint) from None
    budgets: dict[str, RegressionBudget] = {}
    raw_budgets = table.get("budgets", {})
    if not isinstance(raw_budgets, dict):
        raise where.error("compare", "budgets", "compare.budgets must be a table")
    for key, raw in raw_budgets.items():
        metric = lookup(key)
        if metric is None:
            raise where.error(key, None, f"compare budget: unknown metric {key!r}",
                              "see docs/gates.md for the metric names")
        try:
            if isinstance(raw, str) and raw.strip().endswith("%"):
                budgets[metric.name] = RegressionBudget(metric, relative=_finite_percent(raw),
                                                        text=raw)
            else:
                budgets[metric.name] = RegressionBudget(
                    metric, absolute=abs(parse_budget(metric, raw)), text=str(raw)
                )
        except LoadmemError as e:
            raise where.error(key, None, f"compare budget {key!r}: malformed {raw!r}: "
                              f"{e.message}", e.hint) from None
    return fail, budgets


def load_config(path: str | Path) -> GateConfig:
    """Read gates (and compare budgets) from a loadmem.toml or a pyproject.toml."""
    path = Path(path)
    text, data = _read(path)
    gates_table, table_name, compare_name = _gates_table(data, path)
    where = _Where(path, text, table_name)
    if gates_table is None:
        compare_only = _lookup_dotted(data, compare_name)
        if compare_only is None:
            raise LoadmemError(
                f"{path} has no [{table_name}] table",
                "add one (see docs/gates.md) or point --config at another file",
            )
        gates_table = {}
    if not isinstance(gates_table, dict):
        raise where.error(table_name.rsplit(".", 1)[-1], None, f"[{table_name}] must be a table")
    gates = [_parse_gate(name, spec, where) for name, spec in gates_table.items()]
    fail, budgets = _parse_compare(
        _lookup_dotted(data, compare_name), _Where(path, text, compare_name)
    )
    return GateConfig(gates=gates, source=str(path), fail_on_regression=fail,
                      regression_budgets=budgets)


def _lookup_dotted(data: dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def find_config(start_dir: str | Path | None = None) -> Path | None:
    """The nearest config from ``start_dir`` (default: cwd) upwards.

    In each directory ``loadmem.toml`` wins over ``pyproject.toml``. A ``pyproject.toml``
    without ``[tool.loadmem]`` marks the project root: the search stops there (a config
    outside the project must not apply by accident).
    """
    d = Path(start_dir or Path.cwd()).resolve()
    for directory in (d, *d.parents):
        candidate = directory / "loadmem.toml"
        if candidate.is_file():
            return candidate
        py = directory / "pyproject.toml"
        if py.is_file():
            try:
                data = tomllib.loads(py.read_text())
            except (OSError, tomllib.TOMLDecodeError):
                return py  # let load_config report it with the line
            if isinstance(data.get("tool"), dict) and "loadmem" in data["tool"]:
                return py
            return None
    return None


def default_config() -> GateConfig:
    """The gates applied when no config exists: catch the gross failures only.

    They skip (not fail) when the recording lacks the figure, so that `loadmem record`
    recordings without load can be gated too.
    """
    def gate(name: str, metric: str, comparison: Comparison, raw: str) -> Gate:
        m = lookup(metric)
        assert m is not None
        return Gate(name, m, comparison, parse_budget(m, raw), raw, missing="skip",
                    description="built-in default")

    return GateConfig(
        gates=[
            gate("failure_ratio", "requests.failure_ratio", "max", "1%"),
            gate("pss_growth", "watched.pss_growth_ratio", "max", "10%"),
            gate("rss_growth", "watched.rss_growth_ratio", "max", "10%"),
            # the catalogue's counts of events that must not happen (OOM kills): none
            # allowed; failed requests are bounded by the failure ratio above instead (a
            # busy CI runner may lose a request without the service being at fault)
            *(gate(m.aliases[0] if m.aliases else m.name, m.name, "max", "0")
              for m in event_counts() if m.scope != "load"),
        ],
        source="built-in defaults",
        is_default=True,
    )


def resolve_config(config_path: str | Path | None = None,
                   start_dir: str | Path | None = None) -> GateConfig:
    """The config to use: the given file, else the nearest one, else the defaults."""
    if config_path is not None:
        return load_config(config_path)
    found = find_config(start_dir)
    if found is None:
        return default_config()
    cfg = load_config(found) if found.name == "loadmem.toml" else _load_pyproject(found)
    return cfg


def _load_pyproject(path: Path) -> GateConfig:
    _text, data = _read(path)
    tool = data.get("tool", {}).get("loadmem", {})
    if isinstance(tool, dict) and "gates" not in tool and "compare" not in tool:
        return default_config()
    return load_config(path)
