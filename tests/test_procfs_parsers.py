"""Parsers on /proc files captured from this machine (kernel 6.18) and hand-edited variants
(older kernels lacking fields, odd process names, zombies, kernel threads)."""

import subprocess
import sys
from pathlib import Path

import pytest

from loadmem.procfs.cgroup import (
    CgroupRef,
    parse_memory_stat,
    parse_mountinfo_cgroups,
    parse_proc_cgroup,
    parse_usage,
)
from loadmem.procfs.meminfo import MeminfoLayout, parse_meminfo
from loadmem.procfs.net_tcp import parse_listening_inodes
from loadmem.procfs.smaps_rollup import parse_smaps_rollup, smaps_columns
from loadmem.procfs.stat import parse_stat, parse_stat_identity
from loadmem.procfs.status import parse_status
from loadmem.recording.schema import SMAPS_COLUMNS

FIX = Path(__file__).parent / "fixtures" / "proc"


def text(name: str) -> str:
    return (FIX / name).read_text()


def kb_line(name: str, field: str) -> int:
    for line in text(name).splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


# --- meminfo ---------------------------------------------------------------------------
def test_meminfo_every_field_in_bytes():
    m = parse_meminfo(text("meminfo"))
    lines = [ln for ln in text("meminfo").splitlines() if ln.strip()]
    assert len(m) == len(lines)  # every field kept
    assert list(m)[:3] == ["MemTotal", "MemFree", "MemAvailable"]  # file order
    assert m["MemTotal"] == kb_line("meminfo", "MemTotal") * 1024
    assert m["Active(anon)"] == kb_line("meminfo", "Active(anon)") * 1024
    # page counts carry no unit and stay counts
    assert m["HugePages_Total"] == kb_line("meminfo", "HugePages_Total")
    assert m["Hugepagesize"] == kb_line("meminfo", "Hugepagesize") * 1024
    assert m["MemFree"] <= m["MemAvailable"] <= m["MemTotal"]


def test_meminfo_older_kernel_lacks_fields():
    m = parse_meminfo(text("meminfo_old_kernel"))
    assert "MemAvailable" not in m and "MemTotal" in m
    assert parse_meminfo("") == {}
    assert parse_meminfo("garbage line\nX:\nY: notanumber kB\nZ: 3 kB\n") == {"Z": 3072}


@pytest.mark.parametrize("name", ["meminfo", "meminfo_old_kernel"])
def test_meminfo_layout_reads_what_the_full_parse_reads(name):
    layout = MeminfoLayout.of(text(name))
    full = parse_meminfo(text(name))
    assert layout.keys == tuple(full)
    assert dict(zip(layout.keys, layout.values(text(name)), strict=True)) == full


def test_meminfo_layout_on_a_later_read_and_on_another_layout():
    layout = MeminfoLayout.of(text("meminfo"))
    later = text("meminfo").replace(f"MemFree:{' ' * 8}", f"MemFree:{' ' * 7}9", 1)
    assert later != text("meminfo")
    assert dict(zip(layout.keys, layout.values(later), strict=True)) == parse_meminfo(later)
    assert layout.values(text("meminfo_old_kernel")) is None  # fewer fields: a new layout
    live = Path("/proc/meminfo").read_text()
    assert MeminfoLayout.of(live).values(live) == list(parse_meminfo(live).values())


# --- smaps_rollup ----------------------------------------------------------------------
def test_smaps_rollup_all_fields():
    f = parse_smaps_rollup(text("pid_smaps_rollup"))
    assert set(SMAPS_COLUMNS) <= set(f)  # kernel 6.18 has every field the schema knows
    assert f["Pss"] == kb_line("pid_smaps_rollup", "Pss") * 1024
    assert f["Rss"] == (
        f["Shared_Clean"] + f["Shared_Dirty"] + f["Private_Clean"] + f["Private_Dirty"]
    )
    cols = smaps_columns(f)
    assert cols["smaps_rss"] == f["Rss"] and cols["pss_anon"] == f["Pss_Anon"]
    assert set(cols) == set(SMAPS_COLUMNS.values())


def test_smaps_rollup_older_kernel_gives_none():
    cols = smaps_columns(parse_smaps_rollup(text("smaps_rollup_kernel_5_4")))
    assert cols["pss_anon"] is None and cols["pss_dirty"] is None and cols["ksm"] is None
    assert cols["pss"] == kb_line("pid_smaps_rollup", "Pss") * 1024


def test_smaps_rollup_empty_for_no_address_space():
    assert parse_smaps_rollup("") == {}
    assert all(v is None for v in smaps_columns({}).values())


# --- stat ------------------------------------------------------------------------------
def test_stat_fields():
    raw = text("pid_stat")
    s = parse_stat(raw, clk_tck=100)
    f = raw.split()
    assert s.pid == int(f[0]) and s.comm == "bash" and s.state == f[2]
    assert s.ppid == int(f[3])
    assert s.minflt == int(f[9]) and s.majflt == int(f[11])
    assert s.utime == pytest.approx(int(f[13]) / 100) and s.stime == pytest.approx(int(f[14]) / 100)
    assert s.num_threads == int(f[19]) and s.starttime == int(f[21])
    assert s.rss_pages == int(f[23])
    assert parse_stat_identity(raw) == (s.ppid, s.starttime, "bash", s.state)


def test_stat_comm_with_spaces_and_parentheses():
    s = parse_stat(text("stat_odd_comm"))
    good = parse_stat(text("pid_stat"))
    assert s.comm == "my (odd) name"
    assert (s.ppid, s.starttime, s.minflt) == (good.ppid, good.starttime, good.minflt)


def test_stat_zombie_and_kernel_thread():
    z = parse_stat(text("zombie_stat"))
    assert z.state == "Z" and z.rss_pages == 0
    k = parse_stat(text("kthread_stat"))
    assert k.pid == 2 and k.comm == "kthreadd" and k.ppid == 0


# --- status ----------------------------------------------------------------------------
def test_status_fields():
    s = parse_status(text("pid_status"))
    assert s.rss == kb_line("pid_status", "VmRSS") * 1024
    assert s.rss == s.rss_anon + s.rss_file + s.rss_shmem
    assert s.swap == 0 and s.vm_size == kb_line("pid_status", "VmSize") * 1024
    assert s.rss_anon == kb_line("pid_status", "RssAnon") * 1024


def test_status_older_kernel_and_zombie_have_none():
    old = parse_status(text("status_kernel_4_4"))
    assert old.rss is not None and old.rss_anon is None and old.swap is None
    z = parse_status(text("zombie_status"))
    assert z.rss is None and z.vm_size is None and z.swap is None
    k = parse_status(text("kthread_status"))
    assert k.rss is None and k.rss_anon is None


STATUS_KEYS = {"VmRSS": "rss", "RssAnon": "rss_anon", "RssFile": "rss_file",
               "RssShmem": "rss_shmem", "VmSwap": "swap", "VmSize": "vm_size"}


def status_by_lines(status: str) -> dict[str, int | None]:
    """The reference: every line split at its colon, the six keys kept, kB -> bytes."""
    out: dict[str, int | None] = dict.fromkeys(STATUS_KEYS.values())
    for line in status.splitlines():
        key, sep, rest = line.partition(":")
        if sep and key in STATUS_KEYS:
            out[STATUS_KEYS[key]] = int(rest.split()[0]) * 1024
    return out


def _as_dict(s) -> dict[str, int | None]:
    return {col: getattr(s, col) for col in STATUS_KEYS.values()}


def test_status_matches_a_line_by_line_parse_on_fixtures():
    for name in ("pid_status", "status_kernel_4_4", "zombie_status", "kthread_status"):
        assert _as_dict(parse_status(text(name))) == status_by_lines(text(name)), name


def test_status_live_matches_a_line_by_line_parse():
    live = Path("/proc/self/status").read_text()
    ref = status_by_lines(live)
    assert all(v is not None for v in ref.values()), "a kernel >= 4.5 has all six lines"
    assert _as_dict(parse_status(live)) == ref
    assert ref["rss"] == ref["rss_anon"] + ref["rss_file"] + ref["rss_shmem"]


def test_status_key_in_a_process_name_is_not_a_field():
    """A name is escaped in ``status`` (a newline shows as ``\\n``), so a process named
    like a line of it does not fool the search for ``"\\nVmRSS:"``."""
    code = ("import sys\nopen('/proc/self/comm', 'w').write('\\nVmRSS:\\t1 kB')\n"
            "print('ok', flush=True)\nsys.stdin.readline()")
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ok"
        live = Path(f"/proc/{p.pid}/status").read_text()
    finally:
        p.kill()
        p.wait()
    assert live.startswith("Name:\t\\nVmRSS:")  # the name, escaped
    s = parse_status(live)
    assert _as_dict(s) == status_by_lines(live)
    assert s.rss is not None and s.rss > 1024 * 1024  # the real VmRSS line, not "1 kB"


# --- cgroup ----------------------------------------------------------------------------
def test_cgroup_v1_memory_controller_wins_on_hybrid_host():
    mounts = parse_mountinfo_cgroups(text("mountinfo"))
    assert mounts.v1_memory == "/sys/fs/cgroup/memory"
    assert mounts.v2 == "/sys/fs/cgroup/unified"
    ref = parse_proc_cgroup(text("pid_cgroup"), mounts)
    assert ref is not None and ref.version == 1
    line = next(ln for ln in text("pid_cgroup").splitlines() if ":memory:" in ln)
    assert ref.path == line.split(":", 2)[2]


def test_cgroup_v2_only():
    mounts = parse_mountinfo_cgroups(text("mountinfo_v2"))
    assert mounts.v1_memory is None and mounts.v2 == "/sys/fs/cgroup"
    assert parse_proc_cgroup(text("cgroup_v2_pid"), mounts) == CgroupRef(
        2, "/system.slice/app.service"
    )
    assert parse_proc_cgroup("", mounts) is None


def test_memory_stat_v1_and_v2():
    v1 = parse_memory_stat(text("cgroup_v1_memory.stat"))
    assert {"rss", "cache", "shmem", "mapped_file", "total_rss"} <= set(v1)
    assert parse_usage(text("cgroup_v1_memory.usage_in_bytes")) > 0
    v2 = parse_memory_stat(text("memory_v2.stat"))
    assert v2["anon"] == 104857600
    assert v2["slab"] == v2["slab_reclaimable"] + v2["slab_unreclaimable"]
    assert next(iter(v2)) == "anon"


def _memory_stat_line_by_line(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-+").isdigit():
            out[parts[0]] = int(parts[1])
    return out


@pytest.mark.parametrize("raw", [
    text("cgroup_v1_memory.stat"),
    text("memory_v2.stat"),
    "a 1\nb 2\n",
    "a 1\nthree words here\nb 2\n",  # not two words a line: taken line by line
    "a 1\nb x\nc 3\n",  # not a number
    "a 1 2\n3\n",  # as many words as two a line, but not on every line
    "  a\t-1 \nb +2\n",  # spaces and signs
    "",
])
def test_memory_stat_fast_split_agrees_with_a_line_by_line_parse(raw):
    assert parse_memory_stat(raw) == _memory_stat_line_by_line(raw)


# --- net/tcp ---------------------------------------------------------------------------
def test_listening_inodes():
    raw = text("net_tcp")
    listen = [ln.split() for ln in raw.splitlines()[1:] if ln.split()[3] == "0A"]
    assert listen, "fixture should hold at least one listener"
    port = int(listen[0][1].rsplit(":", 1)[1], 16)
    assert int(listen[0][9]) in parse_listening_inodes(raw, port)
    # established connections on the same port are not listeners
    assert all(
        int(f[9]) not in parse_listening_inodes(raw, port)
        for f in (ln.split() for ln in raw.splitlines()[1:])
        if f[3] != "0A"
    )
    assert parse_listening_inodes(raw, 1) == set()
    v6 = (
        "  sl  local_address                         remote_address  st x x x x uid tmo inode\n"
        "   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A "
        "00000000:00000000 00:00000000 00000000     0        0 4242 1 0000 100 0 0 10 0\n"
    )
    assert parse_listening_inodes(v6, 8080) == {4242}
