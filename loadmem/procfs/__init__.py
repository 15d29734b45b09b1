"""One pure parser per /proc file, and the one I/O edge (``reader.ProcFS``) that maps errno.

Parsers take the text of a file and return a frozen record (or a dict for files whose keys
vary by kernel: meminfo, smaps_rollup, memory.stat). Sizes are bytes, times are seconds,
absent fields are ``None``. Parsers never open files, so tests feed them captured text.
"""

from loadmem.procfs.reader import ProcFS

__all__ = ["ProcFS"]
