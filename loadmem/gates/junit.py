"""Gate reports as JUnit XML: one ``testcase`` per gate, ``failure`` carrying the numbers.

The shape follows the JUnit schema CI test reporters read (GitHub test-report actions,
GitLab ``artifacts:reports:junit``, Jenkins ``junit``): ``testsuites`` > ``testsuite``
(name, tests, failures, errors, skipped, time, timestamp, hostname) > ``properties`` and
``testcase`` (name, classname, time) > ``failure`` (message, type) or ``skipped``
(message). Only those element and attribute names are used, so strict parsers accept it.

Text from the recording (label, recording path, the verdict naming processes) and the
messages go through ``escape.terminal``: a control character (an escape sequence in a
process name) is not a valid XML 1.0 character, and one would make the file unreadable.
"""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

from loadmem.errors import LoadmemError
from loadmem.gates.evaluate import GateReport
from loadmem.presentation.escape import terminal


def to_element(report: GateReport) -> ET.Element:
    n = len(report.results)
    failures = len(report.failed)
    skipped = len(report.skipped)
    counts = {"tests": str(n), "failures": str(failures), "errors": "0", "time": "0"}
    root = ET.Element("testsuites", {"name": "loadmem gates", **counts})
    suite_name = "loadmem gates" + (f" ({terminal(report.label)})" if report.label else "")
    suite = ET.SubElement(
        root,
        "testsuite",
        {
            "name": suite_name,
            **counts,
            "skipped": str(skipped),
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
            "hostname": socket.gethostname() or "localhost",
        },
    )
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("recording", report.recording),
        ("label", report.label or ""),
        ("config", report.config_source),
        ("verdict", report.headline),
    ):
        ET.SubElement(props, "property", {"name": name, "value": terminal(value)})
    for r in report.results:
        case = ET.SubElement(
            suite, "testcase", {"name": terminal(r.name),
                                "classname": f"loadmem.gates.{r.metric}",
                                "time": "0"}
        )
        if r.status == "fail":
            message = terminal(r.message)
            failure = ET.SubElement(case, "failure", {"message": message, "type": "GateFailed"})
            failure.text = (
                f"metric: {r.metric}\nmeasured: {r.measured_text} ({r.measured})\n"
                f"budget: {r.comparison} {r.budget_text} ({r.budget})\n{message}\n"
            )
        elif r.status == "skip":
            ET.SubElement(case, "skipped", {"message": terminal(r.message)})
        else:
            out = ET.SubElement(case, "system-out")
            out.text = terminal(r.message)
    return root


def to_string(report: GateReport) -> str:
    root = to_element(report)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(report: GateReport, path: str | Path) -> Path:
    """Write the JUnit file (parent directories created); ``LoadmemError`` if not writable."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name("." + path.name + ".tmp")
        tmp.write_text(to_string(report))
        tmp.replace(path)
    except OSError as e:
        raise LoadmemError(f"cannot write JUnit file {path}: {e.strerror or e}",
                           "choose a writable --junit path") from None
    return path
