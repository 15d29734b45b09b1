"""What kind of memory each mapping of a process is, from the facts smaps gives (and, for a
``.bss``, the ELF program headers of the file before it).

One pure function, ``classify``: mappings in address order in, a ``(kind, file)`` pair per
mapping out. ``file`` names the file a mapping's memory belongs to (its own file, or for a
``.bss`` the program or library whose zero-initialised globals it holds); None for memory
that belongs to no file. The kinds, in the order reports list them:

====================  ========================================================================
kind                  what it is
====================  ========================================================================
``anon``              anonymous private memory: allocator arenas and runtime heaps (CPython's
                      object arenas, Ruby's heap pages, large ``malloc`` blocks), ``[anon:NAME]``
``heap``              ``[heap]``: the ``brk`` heap, where ``malloc`` puts small blocks
``data``              a file's private writable data: ``.data`` (the writable private mapping of
                      the file) and its ``.bss`` (the anonymous mapping right after it, as far
                      as the file's program headers say the segment reaches)
``stack``             ``[stack]`` (the main thread) and thread stacks (an anonymous read-write
                      mapping right above a guard of at most 64 KiB, as glibc lays them out)
``shmem``             shared memory: ``/dev/shm`` files, System V segments (``/SYSV...``),
                      ``memfd:`` files, shared anonymous mappings (``/dev/zero (deleted)``),
                      ``[anon_shmem:NAME]``
``file-shared``       other shared mappings of files (``MAP_SHARED``)
``code``              executable private mappings of files: program and library code
``file-readonly``     read-only private mappings of files: constants, relocated read-only data,
                      locale archives, mapped data files
``other``             kernel pages (``[vdso]``, ``[vvar]``, ``[vsyscall]``...), guard regions
                      with no access, anything else
====================  ========================================================================

Copy-on-write can only unshare what is private and writable: ``anon``, ``heap``, ``data``
and ``stack``. A mapping that is not is still classified, because growth (new pages) can
land anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping as MappingOf
from collections.abc import Sequence

from loadmem.procfs.smaps import Mapping

ANON = "anon"
HEAP = "heap"
DATA = "data"
STACK = "stack"
SHMEM = "shmem"
FILE_SHARED = "file-shared"
CODE = "code"
FILE_READONLY = "file-readonly"
OTHER = "other"

#: Every kind, in report order, with a short description (docs/recording-format.md).
KINDS: dict[str, str] = {
    ANON: "anonymous private memory (allocator arenas, runtime heaps)",
    HEAP: "[heap] (brk)",
    DATA: "a file's private data (.data and .bss)",
    STACK: "stacks",
    SHMEM: "shared memory",
    FILE_SHARED: "shared file mappings",
    CODE: "code",
    FILE_READONLY: "read-only file mappings",
    OTHER: "other",
}

#: A thread stack's guard (below it) is at most this large; glibc's default is one page.
STACK_GUARD_MAX = 64 << 10

_SHM_PREFIXES = ("/dev/shm/", "/run/shm/", "/SYSV", "/memfd:", "/dev/zero", "[anon_shmem:")
_KERNEL_PAGES = ("[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]", "[uprobes]", "[sigpage]")


def _anonymous(m: Mapping) -> bool:
    """No file behind it: ``""``, ``[anon:NAME]`` (``prctl(PR_SET_VMA_ANON_NAME)``)."""
    return m.inode == 0 and (m.path == "" or m.path.startswith("[anon:"))


def classify(mappings: Sequence[Mapping],
             bss_ends: MappingOf[int, int] | None = None) -> list[tuple[str, str | None]]:
    """``(kind, file)`` for each mapping of one process (in address order, as smaps lists
    them). ``bss_ends``: for a writable private file mapping (by its start address), the
    end address of the ``.bss`` that follows it, from the file's program headers
    (``loadmem.procfs.elf.bss_end``). Without it, an anonymous mapping after a ``.data`` is
    counted as ``anon``: it may be an allocator arena the kernel merged with the ``.bss``,
    and a guess would put an arena's memory on a library."""
    bss_ends = bss_ends or {}
    out: list[tuple[str, str | None]] = []
    prev: Mapping | None = None
    for m in mappings:
        out.append(_one(m, prev, bss_ends))
        prev = m
    return out


def _one(m: Mapping, prev: Mapping | None,
         bss_ends: MappingOf[int, int]) -> tuple[str, str | None]:
    path, perms = m.path, m.perms
    shared = perms[3:4] == "s"
    if path == "[heap]":
        return HEAP, None
    if path == "[stack]" or path.startswith("[stack:"):
        return STACK, None
    if path.startswith(_SHM_PREFIXES) or (path.startswith("/anon_hugepage") and shared):
        return (SHMEM, path) if shared or not path.startswith("/dev/zero") else (ANON, None)
    if path.startswith(_KERNEL_PAGES):
        return OTHER, None
    if _anonymous(m) or path.startswith("/anon_hugepage"):
        if perms.startswith("---"):
            return OTHER, None
        if prev is not None and prev.end == m.start:
            end = bss_ends.get(prev.start)
            if (end is not None and m.end <= end and prev.perms[1:2] == "w"
                    and prev.file_backed):
                return DATA, prev.path
            if (_anonymous(prev) and prev.perms.startswith("---")
                    and prev.end - prev.start <= STACK_GUARD_MAX and perms.startswith("rw")):
                return STACK, None
        return ANON, None
    if m.file_backed or path.startswith("/"):
        if shared:
            return FILE_SHARED, path
        if "x" in perms:
            return CODE, path
        if perms[1:2] == "w":
            return DATA, path
        if perms.startswith("r"):
            return FILE_READONLY, path
        return OTHER, path
    return OTHER, None
