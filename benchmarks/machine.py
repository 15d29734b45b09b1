"""What the benchmarks say about the machine they ran on, and how they publish a result."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine_lines() -> list[str]:
    """Markdown list items: CPUs, CPU model, kernel, Python, memory, transparent huge pages."""
    cpu = next((line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().strip()
    return [f"- nproc: {os.cpu_count()}", f"- cpu: {cpu}", f"- kernel: {platform.release()}",
            f"- python: {platform.python_version()}", f"- memory: {mem // 1024} MiB",
            f"- thp: {thp}"]


def publish(text: str, results: Path, write: bool) -> None:
    """Print a benchmark's report and, unless told not to, write it to its results file."""
    print(text)
    if write:
        results.write_text(text)
        print(f"written to {results}")
