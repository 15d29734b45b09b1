"""The loadable segments of an ELF file, from its first bytes: where a library's ``.bss`` ends.

A program or library's zero-initialised globals (``.bss``) take no room in the file. The
dynamic loader maps the writable segment's file part (``.data``: a writable private
mapping of the file) and then an *anonymous* mapping for the rest of the segment's memory
size. In ``/proc/PID/smaps`` that anonymous mapping carries no name, and the kernel merges
it with an adjacent anonymous mapping of the same flags (an allocator arena mapped right
after it), so "the anonymous mapping after a writable file mapping" is not always the
``.bss``, nor only it. The program headers say exactly where it ends: the writable
``PT_LOAD`` segment's ``p_vaddr + p_memsz``, moved by the load address.

``parse_load_segments`` reads the ELF header and program header table (the first few
hundred bytes of the file, ELF32 or ELF64, either byte order); ``bss_end`` works out the
end address of the ``.bss`` that follows one mapping.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

PT_LOAD = 1
PF_W = 2
#: Bytes to read from the start of a file: the ELF header and, for any ordinary file, the
#: whole program header table.
HEAD_BYTES = 4096


class LoadSegment(NamedTuple):
    offset: int  # p_offset: where the segment's bytes start in the file
    vaddr: int  # p_vaddr: where they go, before the load address is added
    filesz: int  # bytes taken from the file
    memsz: int  # bytes in memory: memsz - filesz are the zero-filled .bss
    flags: int  # PF_X 1, PF_W 2, PF_R 4

    @property
    def writable(self) -> bool:
        return bool(self.flags & PF_W)


def phdr_extent(head: bytes) -> int | None:
    """How many bytes from the start of the file the program header table needs (None: not
    an ELF file), so a caller can read more when ``HEAD_BYTES`` was not enough."""
    layout = _layout(head)
    if layout is None:
        return None
    _, _, phoff, phentsize, phnum = layout
    return phoff + phentsize * phnum


def _layout(head: bytes) -> tuple[str, bool, int, int, int] | None:
    if len(head) < 52 or head[:4] != b"\x7fELF" or head[4] not in (1, 2) or head[5] not in (1, 2):
        return None
    order = "<" if head[5] == 1 else ">"
    is64 = head[4] == 2
    if is64:
        if len(head) < 64:
            return None
        phoff = struct.unpack_from(order + "Q", head, 32)[0]
        phentsize, phnum = struct.unpack_from(order + "HH", head, 54)
    else:
        phoff = struct.unpack_from(order + "I", head, 28)[0]
        phentsize, phnum = struct.unpack_from(order + "HH", head, 42)
    return order, is64, phoff, phentsize, phnum


def parse_load_segments(head: bytes) -> list[LoadSegment] | None:
    """The ``PT_LOAD`` segments of the ELF file whose first bytes are ``head``; None when it
    is not an ELF file or ``head`` stops before the program header table ends."""
    layout = _layout(head)
    if layout is None:
        return None
    order, is64, phoff, phentsize, phnum = layout
    need = 56 if is64 else 32
    if phentsize < need or phoff + phentsize * phnum > len(head):
        return None
    out = []
    for i in range(phnum):
        at = phoff + i * phentsize
        if is64:
            p_type, p_flags, p_offset, p_vaddr, _, p_filesz, p_memsz = struct.unpack_from(
                order + "IIQQQQQ", head, at)
        else:
            p_type, p_offset, p_vaddr, _, p_filesz, p_memsz, p_flags = struct.unpack_from(
                order + "IIIIIII", head, at)
        if p_type == PT_LOAD:
            out.append(LoadSegment(p_offset, p_vaddr, p_filesz, p_memsz, p_flags))
    return out


def bss_end(segments: list[LoadSegment], map_start: int, map_offset: int,
            page: int = 4096) -> int | None:
    """The end address of the ``.bss`` that follows a writable private mapping of this file
    (mapped at ``map_start`` from file offset ``map_offset``); None when the mapping is not
    part of a writable segment or the segment has no ``.bss`` beyond its last file page.

    The load address is ``map_start`` minus the virtual address the segment gives that file
    offset; the ``.bss`` runs from the first page after the file part to the page holding
    ``p_vaddr + p_memsz``.
    """
    for s in segments:
        if not s.writable:
            continue
        first = s.offset - s.offset % page
        if not first <= map_offset < s.offset + s.filesz:
            continue
        base = map_start - (s.vaddr - s.offset + map_offset)
        file_end = _page_up(base + s.vaddr + s.filesz, page)
        mem_end = _page_up(base + s.vaddr + s.memsz, page)
        return mem_end if mem_end > file_end else None
    return None


def _page_up(x: int, page: int) -> int:
    return -(-x // page) * page
