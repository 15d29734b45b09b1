"""``/proc/PID/smaps`` (and ``/proc/PID/maps``): every mapping of a process, with its memory.

Each mapping is a header line, as in ``maps``::

    7fe489e00000-7fe489ef5000 r--p 00000000 fe:00 26933   /usr/lib/libpython3.11.so.1.0

(start and end address, permissions, file offset, device, inode, then the path, a pseudo
name such as ``[heap]``, ``[stack]``, ``[vdso]``, ``[anon:NAME]``, or nothing for an
anonymous mapping), followed by ``Name:   N kB`` lines (``Rss``, ``Pss``,
``Shared_Dirty``...) and a few lines in other units (``THPeligible``, ``ProtectionKey``,
``VmFlags``) that are not kept. The kernel escapes a newline in a path (``\\012``), and a
path may end in `` (deleted)``.

Reading the file costs a walk of the page tables like ``smaps_rollup`` (holding the
process's mmap lock meanwhile); parsing it costs some microseconds per mapping on top
(``benchmarks/bench_mappings.py``). Every block of one kernel has the same ``kB`` lines in
the same order (``SmapsLayout``), so a block is taken apart with one ``split`` and the
numbers are picked by position; a block that does not have the layout's shape is parsed
line by line.

``Pss_Anon``, ``Pss_File`` and ``Pss_Shmem`` exist only in ``smaps_rollup``: here they are
``None``. ``parse_maps`` reads the header lines only (``/proc/PID/maps`` walks no page
tables).
"""

from __future__ import annotations

import operator
import re
from typing import NamedTuple

#: smaps field -> ``Mapping`` attribute (bytes). Kernel versions noted where a field is recent.
FIELDS: dict[str, str] = {
    "Size": "size",
    "Rss": "rss",
    "Pss": "pss",
    "Pss_Dirty": "pss_dirty",  # kernel >= 6.0
    "Pss_Anon": "pss_anon",  # smaps_rollup only (kernel >= 5.8)
    "Pss_File": "pss_file",  # smaps_rollup only
    "Pss_Shmem": "pss_shmem",  # smaps_rollup only
    "Shared_Clean": "shared_clean",
    "Shared_Dirty": "shared_dirty",
    "Private_Clean": "private_clean",
    "Private_Dirty": "private_dirty",
    "Referenced": "referenced",
    "Anonymous": "anonymous",
    "KSM": "ksm",  # kernel >= 6.6
    "LazyFree": "lazyfree",  # kernel >= 4.12
    "AnonHugePages": "anon_huge_pages",
    "Swap": "swap",
    "SwapPss": "swap_pss",  # kernel >= 4.3
    "Locked": "locked",
}

#: A header line, found by the newline before it (``^`` in multiline mode is tried at every
#: character and is several times slower). Parse ``"\n" + text``.
_HEADER = re.compile(
    r"\n([0-9a-f]+)-([0-9a-f]+) (\S+) ([0-9a-f]+) ([0-9a-f]+:[0-9a-f]+) (\d+) *([^\n]*)"
)
_KB_LINE = re.compile(r"^(\w+): +(\d+) kB$", re.MULTILINE)


class Mapping(NamedTuple):
    """One mapping (a VMA) and its memory, in bytes; ``None`` for a field the kernel lacks."""

    start: int
    end: int
    perms: str  # "rw-p": read, write, execute, then p(rivate) or s(hared)
    offset: int  # offset into the file (0 for anonymous)
    dev: str  # "fe:00" ("00:00" for anonymous)
    inode: int  # 0 for anonymous
    path: str  # the file, "[heap]", "[stack]", "[vdso]", "[anon:NAME]"..., "" for anonymous
    size: int = 0
    rss: int = 0
    pss: int = 0
    pss_dirty: int | None = None
    pss_anon: int | None = None
    pss_file: int | None = None
    pss_shmem: int | None = None
    shared_clean: int = 0
    shared_dirty: int = 0
    private_clean: int = 0
    private_dirty: int = 0
    referenced: int = 0
    anonymous: int = 0
    ksm: int | None = None
    lazyfree: int | None = None
    anon_huge_pages: int = 0
    swap: int = 0
    swap_pss: int = 0
    locked: int = 0

    @property
    def key(self) -> tuple[int, int, str, int, str]:
        """The mapping's identity between two reads of one process."""
        return (self.start, self.end, self.perms, self.offset, self.path)

    @property
    def private(self) -> bool:
        return self.perms[3:4] == "p"

    @property
    def file_backed(self) -> bool:
        """A mapping of a file (a path and an inode); shared-memory files included."""
        return self.inode != 0 and self.path.startswith("/")

    @property
    def uss(self) -> int:
        return self.private_clean + self.private_dirty


_N_HEADER = 7
_TAIL = Mapping._fields[_N_HEADER:]
_KIB = (1024).__mul__
_make = Mapping._make


class SmapsLayout:
    """The ``kB`` lines that open every block on one kernel, in order, and which of their
    numbers fill which ``Mapping`` field."""

    __slots__ = ("names", "numbers", "pick", "rss_token", "swap_token", "tokens", "zeros")

    def __init__(self, names: tuple[str, ...]):
        self.names = names
        self.tokens = 3 * len(names)  # "Name:", "N", "kB" per line
        kept = [n for n in FIELDS if n in names]
        # the numbers of the kept fields, by token position, in Mapping order...
        self.numbers = operator.itemgetter(*[1 + 3 * names.index(n) for n in kept])
        # ...then the Mapping fields after the header from them (None: the kernel lacks it)
        where = {FIELDS[n]: i for i, n in enumerate(kept)}
        self.pick = operator.itemgetter(*[where.get(f, len(kept)) for f in _TAIL])
        # a mapping with Rss and Swap 0: its fields after Size (0, or None if absent)
        self.zeros = tuple(None if f not in where else 0 for f in _TAIL[1:])
        self.rss_token = 1 + 3 * names.index("Rss") if "Rss" in names else None
        self.swap_token = 1 + 3 * names.index("Swap") if "Swap" in names else None

    @classmethod
    def of(cls, body: str) -> SmapsLayout:
        """The layout of one block: its leading run of ``Name: N kB`` lines."""
        names = []
        for line in body.strip("\n").split("\n"):
            m = _KB_LINE.match(line)
            if m is None:
                break
            names.append(m.group(1))
        return cls(tuple(names))

    def fits(self, tok: list[str]) -> bool:
        """True when a block split into tokens has this layout's shape."""
        n = self.tokens
        return (n > 0 and len(tok) >= n and tok[n - 1] == "kB"
                and (len(tok) < n + 3 or tok[n + 2] != "kB"))


def _header(h: list[str]) -> tuple[int, int, str, int, str, int, str]:
    return int(h[0], 16), int(h[1], 16), h[2], int(h[3], 16), h[4], int(h[5]), h[6]


def _block_by_lines(header: list[str], body: str) -> Mapping:
    values: dict[str, int] = {}
    for name, number in _KB_LINE.findall(body):
        attr = FIELDS.get(name)
        if attr is not None:
            values[attr] = int(number) * 1024
    return Mapping(*_header(header), **values)  # type: ignore[arg-type]


def parse_smaps(text: str, layout: SmapsLayout | None = None,
                resident_only: bool = False) -> list[Mapping]:
    """Every mapping of ``/proc/PID/smaps``, in address order, sizes in bytes.

    ``layout``: the layout of an earlier read on this kernel (worked out from the first
    block otherwise). ``resident_only``: leave out mappings with nothing resident and
    nothing swapped (``Rss`` and ``Swap`` 0) before their numbers are converted. An empty
    text (a zombie, a kernel thread) gives [].
    """
    parts = _HEADER.split("\n" + text)
    out: list[Mapping] = []
    append = out.append
    for i in range(1, len(parts) - _N_HEADER, _N_HEADER + 1):
        header = parts[i : i + _N_HEADER]
        body = parts[i + _N_HEADER]
        if layout is None:
            layout = SmapsLayout.of(body)
        n = layout.tokens
        tok = body.split(None, n)
        if not layout.fits(tok):
            m = _block_by_lines(header, body)
            if not resident_only or m.rss or m.swap:
                append(m)
            continue
        if (layout.rss_token is not None and tok[layout.rss_token] == "0"
                and (layout.swap_token is None or tok[layout.swap_token] == "0")):
            # nothing resident, nothing swapped: every figure but the size is 0
            if not resident_only:
                h = _header(header)
                append(_make((*h, (h[1] - h[0]), *layout.zeros)))
            continue
        # kB -> bytes in C: itemgetter, map(int), map(1024 * ...): a third of the CPU of a
        # comprehension over every number
        numbers = (*map(_KIB, map(int, layout.numbers(tok))), None)
        append(_make((*_header(header), *layout.pick(numbers))))
    return out


def smaps_layout(text: str) -> SmapsLayout | None:
    """The layout of the first block of ``text``, to pass to later ``parse_smaps`` calls."""
    parts = _HEADER.split("\n" + text, maxsplit=2)
    if len(parts) < _N_HEADER + 2:
        return None
    return SmapsLayout.of(parts[_N_HEADER + 1])


def parse_maps(text: str) -> list[Mapping]:
    """The mappings of ``/proc/PID/maps`` (or the headers of ``smaps``), without figures."""
    return [Mapping(*_header(list(g))) for g in _HEADER.findall("\n" + text)]
