"""``/proc/PID/smaps`` parsing, ELF program headers and the mapping-kind classifier, on
files captured from real processes on this machine (kernel 6.18) and on live processes.

Fixtures (``tests/fixtures/proc/``), each the smaps of a forked child after it wrote to
memory it inherited:

- ``smaps_python``: CPython 3.11.7 (pyenv, ``libpython3.11.so`` shared); the child ran
  ``gc.collect()`` over 200,000 lists built by the parent;
- ``smaps_python_static``: Debian's ``/usr/bin/python3.11`` (no libpython), the same script;
- ``smaps_ruby``: Debian's Ruby 3.1 (``libruby-3.1.so``), ``GC.start`` in the child;
- ``smaps_c``: ``tests/fixtures/cow.c``: an 8 MiB ``malloc`` block written by the child;
- ``smaps_kernel_5_4``: ``smaps_c`` without the lines kernel 5.4 lacks (``Pss_Dirty``, ``KSM``);
- ``smaps_odd``: a /dev/shm file, a memfd, a shared anonymous mapping, a System V segment, a
  deleted file with spaces in its name, a file named with a newline, a private file mapping
  written to, and one anonymous mapping renamed ``[anon:loadmem fixture]`` by hand (this
  kernel lacks CONFIG_ANON_VMA_NAME).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from loadmem.procfs.elf import HEAD_BYTES, LoadSegment, bss_end, parse_load_segments, phdr_extent
from loadmem.procfs.mapkind import KINDS, STACK_GUARD_MAX, classify
from loadmem.procfs.smaps import FIELDS, Mapping, parse_maps, parse_smaps, smaps_layout
from loadmem.procfs.smaps_rollup import parse_smaps_rollup

FIX = Path(__file__).parent / "fixtures" / "proc"
COW_C = Path(__file__).parent / "fixtures" / "cow.c"
SMAPS_FIXTURES = ("smaps_python", "smaps_python_static", "smaps_ruby", "smaps_c",
                  "smaps_kernel_5_4", "smaps_odd")
MiB = 1 << 20


def text(name: str) -> str:
    return (FIX / name).read_text()


def by_lines(smaps: str) -> list[dict[str, object]]:
    """The reference parse: each header and every ``Name: N kB`` line, plainly."""
    out: list[dict[str, object]] = []
    for line in smaps.splitlines():
        head, _, rest = line.partition(" ")
        if "-" in head and all(c in "0123456789abcdef-" for c in head):
            start, end = head.split("-")
            perms, offset, dev, inode, *path = rest.split(None, 4)
            out.append({"start": int(start, 16), "end": int(end, 16), "perms": perms,
                        "offset": int(offset, 16), "dev": dev, "inode": int(inode),
                        "path": path[0].strip() if path else ""})
        elif line.endswith(" kB") and ":" in line:
            name, _, value = line.partition(":")
            out[-1][name] = int(value.split()[0]) * 1024
    return out


# --- the parser -------------------------------------------------------------------------
@pytest.mark.parametrize("name", SMAPS_FIXTURES)
def test_every_mapping_and_field_as_a_plain_line_parse_reads_it(name):
    ref = by_lines(text(name))
    got = parse_smaps(text(name))
    assert len(got) == len(ref) > 20
    for m, r in zip(got, ref, strict=True):
        assert (m.start, m.end, m.perms, m.offset, m.dev, m.inode, m.path) == (
            r["start"], r["end"], r["perms"], r["offset"], r["dev"], r["inode"], r["path"])
        for kernel_name, attr in FIELDS.items():
            assert getattr(m, attr) == r.get(kernel_name, Mapping._field_defaults[attr]), (
                name, hex(m.start), kernel_name)
        assert m.rss == m.shared_clean + m.shared_dirty + m.private_clean + m.private_dirty
        assert m.size == m.end - m.start


def test_sums_over_mappings_are_the_rollup_of_a_live_process():
    """Read back to back from an idle process, smaps summed equals smaps_rollup."""
    pid = os.getpid()
    for _ in range(5):  # this process may touch a page between the two reads: retry
        smaps = parse_smaps(Path(f"/proc/{pid}/smaps").read_text())
        rollup = parse_smaps_rollup(Path(f"/proc/{pid}/smaps_rollup").read_text())
        if sum(m.rss for m in smaps) == rollup["Rss"]:
            break
    for kernel_name in ("Rss", "Pss", "Shared_Dirty", "Private_Dirty", "Anonymous", "Swap"):
        attr = FIELDS[kernel_name]
        assert sum(getattr(m, attr) for m in smaps) == pytest.approx(rollup[kernel_name],
                                                                     rel=0.02), kernel_name


def test_older_kernel_fields_are_none_not_zero():
    old = parse_smaps(text("smaps_kernel_5_4"))
    new = parse_smaps(text("smaps_c"))
    assert all(m.pss_dirty is None and m.ksm is None for m in old)
    assert all(m.pss_dirty is not None and m.ksm == 0 for m in new)
    assert [m.rss for m in old] == [m.rss for m in new]
    # smaps has no per-mapping Pss_Anon/File/Shmem (rollup only)
    assert all(m.pss_anon is None and m.pss_file is None for m in new)


def test_a_layout_of_another_kernel_falls_back_to_lines():
    """A layout worked out on one kernel, given a file of another: still parsed right."""
    layout = smaps_layout(text("smaps_c"))
    assert layout is not None and "Pss_Dirty" in layout.names
    assert parse_smaps(text("smaps_kernel_5_4"), layout) == parse_smaps(text("smaps_kernel_5_4"))


def test_resident_only_drops_what_holds_nothing():
    all_ = parse_smaps(text("smaps_ruby"))
    kept = parse_smaps(text("smaps_ruby"), resident_only=True)
    assert kept == [m for m in all_ if m.rss or m.swap]
    assert len(kept) < len(all_)


def test_odd_paths_are_kept_as_the_kernel_prints_them():
    paths = {m.path for m in parse_smaps(text("smaps_odd"))}
    assert "/tmp/where/odd dir/data file (deleted)" in paths  # spaces, deleted
    assert "/tmp/where/odd dir/new\\012line (deleted)" in paths  # newline escaped
    assert "/SYSV00000000 (deleted)" in paths and "/dev/zero (deleted)" in paths
    assert "/memfd:loadmem-fixture (deleted)" in paths and "[anon:loadmem fixture]" in paths
    assert "[vsyscall]" in paths and "" in paths


def test_vsyscall_address_above_int64_and_empty_input():
    ms = parse_smaps(text("smaps_c"))
    assert ms[-1].path == "[vsyscall]" and ms[-1].start == 0xFFFFFFFFFF600000
    assert parse_smaps("") == [] and parse_maps("") == [] and smaps_layout("") is None


def test_maps_headers_match_smaps():
    ms = parse_smaps(text("smaps_python"))
    heads = parse_maps(text("smaps_python"))
    assert [m.key for m in heads] == [m.key for m in ms]
    assert all(h.rss == 0 and h.pss_dirty is None for h in heads)
    live = parse_maps(Path("/proc/self/maps").read_text())
    assert any(m.path == "[stack]" for m in live)


# --- ELF program headers ----------------------------------------------------------------
def _readelf_loads(path: str) -> list[tuple[int, int, int, int, bool]]:
    out = subprocess.run(["readelf", "-lW", path], capture_output=True, text=True,
                         check=True).stdout
    rows = []
    for line in out.splitlines():
        f = line.split()
        if f and f[0] == "LOAD":
            rows.append((int(f[1], 16), int(f[2], 16), int(f[4], 16), int(f[5], 16),
                         "W" in line[line.index(f[5]) + len(f[5]):]))
    return rows


@pytest.mark.parametrize("path", [sys.executable, "/lib/x86_64-linux-gnu/libc.so.6"])
def test_load_segments_agree_with_readelf(path):
    assert shutil.which("readelf"), "binutils (readelf) is needed: apt-get install binutils"
    real = os.path.realpath(path)
    with open(real, "rb") as f:
        head = f.read(HEAD_BYTES)
    segs = parse_load_segments(head)
    assert segs is not None and phdr_extent(head) <= HEAD_BYTES
    assert [(s.offset, s.vaddr, s.filesz, s.memsz, s.writable) for s in segs] == \
        _readelf_loads(real)


def test_elf32_big_endian_and_not_elf():
    # an ELF32 big-endian header with one PT_LOAD (RW) program header right after it
    ehdr = bytearray(52)
    ehdr[:6] = b"\x7fELF\x01\x02"
    struct.pack_into(">I", ehdr, 28, 52)  # e_phoff
    struct.pack_into(">HH", ehdr, 42, 32, 1)  # e_phentsize, e_phnum
    phdr = struct.pack(">IIIIIIII", 1, 0x1000, 0x11000, 0x11000, 0x200, 0x3000, 6, 0x1000)
    segs = parse_load_segments(bytes(ehdr) + phdr)
    assert segs == [LoadSegment(0x1000, 0x11000, 0x200, 0x3000, 6)]
    assert parse_load_segments(b"#!/bin/sh\n" * 10) is None
    assert parse_load_segments(bytes(ehdr)) is None  # table cut off


def test_bss_end_from_the_writable_segment():
    # the cow binary of smaps_c: RW LOAD at offset 0x2dd0, vaddr 0x3dd0, filesz 0x8002b0,
    # memsz 0x10002f0 (readelf); mapped rw-p from file offset 0x3000 at 0x562fc3574000
    segs = [LoadSegment(0, 0, 0x8C0, 0x8C0, 4), LoadSegment(0x2DD0, 0x3DD0, 0x8002B0,
                                                             0x10002F0, 6)]
    assert bss_end(segs, 0x562FC3574000, 0x3000) == 0x562FC4575000
    assert bss_end(segs, 0x562FC3570000, 0) is None  # not the writable segment
    no_bss = [LoadSegment(0x5D90, 0x5D90, 0x740, 0x748, 6)]  # 8 bytes of .bss: same page
    assert bss_end(no_bss, 0x7F0000006000, 0x5000) is None


# --- the classifier ---------------------------------------------------------------------
def _kinds(name: str, bss: dict[int, int] | None = None):
    ms = parse_smaps(text(name))
    return ms, classify(ms, bss)


def test_c_program_kinds_with_and_without_the_elf_facts():
    ms, kinds = _kinds("smaps_c", {0x562FC3574000: 0x562FC4575000})
    by_start = {m.start: (m, k) for m, k in zip(ms, kinds, strict=True)}
    data_map, data = by_start[0x562FC3574000]
    assert data == ("data", "/tmp/where/cow") and data_map.perms == "rw-p"
    assert by_start[0x562FC3D75000][1] == ("data", "/tmp/where/cow")  # its .bss, 8 MiB
    heap_blk = by_start[0x7F5A9D67C000]  # the 8 MiB malloc block (mmap'd by glibc)
    assert heap_blk[1] == ("anon", None) and heap_blk[0].private_dirty >= 8 * MiB
    assert {k for _, (k, _) in by_start.values()} >= {"heap", "stack", "code", "file-readonly",
                                                     "other", "data", "anon"}
    # without the program headers, the anonymous mapping after .data is not guessed at
    _, plain = _kinds("smaps_c")
    assert dict(zip([m.start for m in ms], plain, strict=True))[0x562FC3D75000] == \
        ("anon", None)


def test_bss_merged_with_an_arena_is_anonymous():
    """The kernel merges the .bss with an adjacent anonymous mapping: past the ELF's end
    it is not the file's memory any more."""
    ms, kinds = _kinds("smaps_c", {0x562FC3574000: 0x562FC3D75000 + 4096})
    assert dict(zip([m.start for m in ms], kinds, strict=True))[0x562FC3D75000] == \
        ("anon", None)


def test_shared_memory_and_odd_files():
    ms, kinds = _kinds("smaps_odd")
    kind_of = {m.path: k for m, k in zip(ms, kinds, strict=True)}
    for shm in ("/dev/shm/loadmem-fixture", "/memfd:loadmem-fixture (deleted)",
                "/dev/zero (deleted)", "/SYSV00000000 (deleted)"):
        assert kind_of[shm] == ("shmem", shm), shm
    assert kind_of["/tmp/where/odd dir/data file (deleted)"][0] == "file-shared"
    assert kind_of["/tmp/where/odd dir/private"] == ("data", "/tmp/where/odd dir/private")
    assert kind_of["[anon:loadmem fixture]"] == ("anon", None)
    assert kind_of["/usr/lib/x86_64-linux-gnu/gconv/gconv-modules.cache"][0] == "file-shared"


def test_thread_and_fiber_stacks_sit_on_a_guard_page():
    ms, kinds = _kinds("smaps_ruby")
    stacks = [m for m, (k, _) in zip(ms, kinds, strict=True) if k == "stack"]
    assert any(m.path == "[stack]" for m in stacks)
    guarded = [m for m in stacks if m.path == ""]
    assert len(guarded) >= 8  # Ruby 3.1's fiber/thread stacks, each above a one-page guard
    by_end = {m.end: m for m in ms}
    for s in guarded:
        guard = by_end[s.start]
        assert guard.perms == "---p" and guard.end - guard.start <= STACK_GUARD_MAX
    # glibc malloc arenas (rw-p followed by a large ---p reserve) are not stacks
    arena = Mapping(0x7F5590000000, 0x7F5590021000, "rw-p", 0, "00:00", 0, "")
    reserve = Mapping(0x7F5590021000, 0x7F5594000000, "---p", 0, "00:00", 0, "")
    nxt = Mapping(0x7F5594000000, 0x7F5594021000, "rw-p", 0, "00:00", 0, "")
    assert [k for k, _ in classify([arena, reserve, nxt])] == ["anon", "other", "anon"]


@pytest.mark.parametrize("name", ["smaps_python", "smaps_python_static"])
def test_cpython_unsharing_is_in_anonymous_mappings(name):
    """The GC of a forked CPython child dirtied the object arenas: anonymous mappings."""
    ms, kinds = _kinds(name)
    dirty: dict[str, int] = {}
    for m, (k, _) in zip(ms, kinds, strict=True):
        dirty[k] = dirty.get(k, 0) + m.private_dirty
    assert set(dirty) <= set(KINDS)
    assert dirty["anon"] > 0.8 * sum(dirty.values())


def test_live_process_kinds_and_bss_from_its_own_files(tmp_path):
    """A C program compiled here: its .data and .bss (by its program headers) are named."""
    gcc = shutil.which("gcc")
    assert gcc, "gcc is needed to build tests/fixtures/cow.c"
    exe = tmp_path / "cow"
    subprocess.run([gcc, "-O1", "-o", str(exe), str(COW_C)], check=True)
    p = subprocess.Popen([str(exe), "heap", "4"], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        lines = {p.stdout.readline().split()[0] for _ in range(2)}
        assert lines == {"parent", "child"}
        ms = parse_smaps(Path(f"/proc/{p.pid}/smaps").read_text())
    finally:
        p.kill()
        p.wait()
    bss: dict[int, int] = {}
    for m in ms:
        if m.file_backed and m.perms == "rw-p":
            with open(m.path, "rb") as f:
                segs = parse_load_segments(f.read(HEAD_BYTES))
            end = bss_end(segs or [], m.start, m.offset)
            if end is not None:
                bss[m.start] = end
    kinds = classify(ms, bss)
    own = [(m, k) for m, (k, f) in zip(ms, kinds, strict=True) if f == str(exe)]
    data = [m for m, k in own if k == "data"]
    assert len(data) == 2  # .data (file) and .bss (anonymous), 8 MiB each
    assert data[0].path == str(exe) and data[1].path == "" and data[1].start == data[0].end
    assert all(m.size >= 8 * MiB for m in data)
