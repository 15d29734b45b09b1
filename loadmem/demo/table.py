"""The preloaded table: many small *container* objects built by the master before it forks.

Why containers: CPython's cyclic garbage collector writes to the ``PyGC_Head`` of every
tracked object a full ``gc.collect()`` examines (it stores a temporary reference count in
``_gc_prev``), so a page holding such an object is copied as soon as a forked worker
collects. Bare strings, ints and floats are not tracked and would stay shared.

Each entry is an ``Item`` with ``__slots__``: a tracked object of 64 bytes including its
16-byte GC header, packed 255 to a 16 KiB pymalloc pool, so every page of those pools holds
GC headers. Its fields are small ints (-5..256), which the interpreter preallocates, so an
entry costs its 64 bytes plus 8 for its slot in the outer list: about 89% of the table is
written by a full collection, the outer list's pointer array (11%) is only read.

Sizing: the table grows in chunks until this process's anonymous RSS has grown by the
asked size, so "100 MiB" means 100 MiB of real memory on any CPython build, not an estimate
from ``sys.getsizeof``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

MIB = 1 << 20

#: Entries added between two RSS checks (~0.7 MiB): small enough to land close to the
#: asked size, large enough that reading /proc/self/status costs nothing.
CHUNK = 4096


class Item:
    """One catalogue entry of the demo app: price, stock level, category, rating.

    The entry's id is its position in the table, not a field: ids above 256 would be int
    objects of their own (32 bytes each, untracked), a third of the table that the
    collector never writes.
    """

    __slots__ = ("category", "price", "rating", "stock")

    def __init__(self, price: int, stock: int, category: int, rating: int):
        self.price = price
        self.stock = stock
        self.category = category
        self.rating = rating

    def as_dict(self, id: int) -> dict[str, object]:
        return {
            "id": id,
            "price": self.price,
            "stock": self.stock,
            "category": self.category,
            "rating": self.rating,
        }


@dataclass(frozen=True)
class TableInfo:
    """What was built: entry count, the RSS it really took, and how long it took."""

    entries: int
    rss_bytes: int
    build_seconds: float


def _rss_anon_bytes() -> int | None:
    """RssAnon of this process from /proc/self/status (a counter: no page walk, ~15 µs)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _make_item(i: int) -> Item:
    # Every field is a cached small int (-5..256): no extra objects per entry.
    return Item(1 + i % 250, i % 101, i % 13, 1 + i % 5)


#: Bytes per entry when /proc is not readable (measured on CPython 3.11, x86-64).
_FALLBACK_ENTRY_BYTES = 72


def build_table(size_bytes: int) -> tuple[list[Item], TableInfo]:
    """Build entries until anonymous RSS has grown by ``size_bytes``; return them and info."""
    started = time.perf_counter()
    table: list[Item] = []
    base = _rss_anon_bytes()
    if base is None:
        n = max(0, size_bytes // _FALLBACK_ENTRY_BYTES)
        table.extend(_make_item(i) for i in range(n))
        grown = n * _FALLBACK_ENTRY_BYTES
    else:
        grown = 0
        while grown < size_bytes:
            start = len(table)
            table.extend(_make_item(i) for i in range(start, start + CHUNK))
            now = _rss_anon_bytes()
            grown = (now if now is not None else base) - base
    elapsed = time.perf_counter() - started
    return table, TableInfo(entries=len(table), rss_bytes=grown, build_seconds=elapsed)
