"""Parsers behind container selection: TCP sockets with addresses, a namespace's local
addresses, container ids in cgroup paths, /proc/PID/cgroup lines, proxies' command lines."""

from __future__ import annotations

import socket

import pytest

from loadmem.procfs.cgroup import parse_cgroup_procs, parse_mountinfo_cgroups, parse_proc_cgroups
from loadmem.procfs.container_id import container_in_path
from loadmem.procfs.net_tcp import (
    parse_fib_trie_local,
    parse_if_inet6,
    parse_tcp_sockets,
)
from loadmem.procfs.reader import ProcFS
from loadmem.recorder.ports import Process, _forwarded_port, proxy_kind

ID = "4f3a" + "0123456789abcdef" * 3 + "cafebabe1234"
assert len(ID) == 64

HEAD = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  " \
       "timeout inode\n"


def test_tcp_sockets_with_addresses():
    text = HEAD + (
        "   0: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0 "
        "       0 239 1 0000000000000000 100 0 0 10 0\n"
        "   1: 0200D50A:1F40 0100D50A:A1B2 01 00000000:00000000 00:00000000 00000000     0 "
        "       0 4711 1 0000000000000000 20 4 30 10 -1\n"
        "   2: garbage\n"
    )
    listen, est = parse_tcp_sockets(text)
    assert listen.listening and listen.local == ("0.0.0.0", 8000) and listen.inode == 239
    assert est.established and est.local == ("10.213.0.2", 8000)
    assert est.remote == ("10.213.0.1", 0xA1B2) and est.inode == 4711


def test_tcp6_sockets_and_v4_mapped_peers():
    text = HEAD + (
        "   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A "
        "00000000:00000000 00:00000000 00000000     0        0 4242 1 0 100 0 0 10 0\n"
        "   1: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:C350 01 "
        "00000000:00000000 00:00000000 00000000     0        0 4243 1 0 100 0 0 10 0\n"
    )
    listen, est = parse_tcp_sockets(text)
    assert listen.local == ("::1", 8080)
    assert est.local == ("127.0.0.1", 8080) and est.remote == ("127.0.0.1", 50000)


def test_tcp_sockets_of_this_machine_agree_with_a_real_listener():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        socks = parse_tcp_sockets(ProcFS().read("net/tcp"))
        assert any(x.listening and x.local == ("127.0.0.1", port) and x.inode > 0 for x in socks)


FIB_TRIE = """Main:
  +-- 0.0.0.0/1 2 0 2
     +-- 10.213.7.0/30 2 0 1
        |-- 10.213.7.0
           /30 link UNICAST
        |-- 10.213.7.2
           /32 host LOCAL
        |-- 10.213.7.3
           /32 link BROADCAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
Local:
  +-- 0.0.0.0/1 2 0 2
"""


def test_fib_trie_local_addresses():
    assert parse_fib_trie_local(FIB_TRIE) == {"10.213.7.2", "127.0.0.0", "127.0.0.1"}
    assert parse_fib_trie_local("") == set()


def test_if_inet6():
    text = ("00000000000000000000000000000001 01 80 10 80       lo\n"
            "fe800000000000000c2bfffe1a2b3c4d 02 40 20 80     eth0\n")
    assert parse_if_inet6(text) == {"::1", "fe80::c2b:fffe:1a2b:3c4d"}


@pytest.mark.parametrize("path, runtime, cgroup", [
    (f"/docker/{ID}", "docker", f"/docker/{ID}"),
    (f"/system.slice/docker-{ID}.scope", "docker", f"/system.slice/docker-{ID}.scope"),
    (f"/machine.slice/libpod-{ID}.scope/container", "podman",
     f"/machine.slice/libpod-{ID}.scope"),
    (f"/libpod_parent/libpod-{ID}", "podman", f"/libpod_parent/libpod-{ID}"),
    (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope", "podman",
     f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"),
    (f"/kubepods/burstable/pod8a7b-11/{ID}", "kubernetes", f"/kubepods/burstable/pod8a7b-11/{ID}"),
    ("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod8a7b_11.slice/"
     f"cri-containerd-{ID}.scope", "kubernetes (containerd)",
     "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod8a7b_11.slice/"
     f"cri-containerd-{ID}.scope"),
    (f"/kubepods.slice/kubepods-pod1.slice/crio-{ID}.scope", "kubernetes (cri-o)",
     f"/kubepods.slice/kubepods-pod1.slice/crio-{ID}.scope"),
    (f"/default/{ID}", "containerd", f"/default/{ID}"),
    (f"/system.slice/nerdctl-{ID}.scope", "containerd", f"/system.slice/nerdctl-{ID}.scope"),
])
def test_container_ids_in_cgroup_paths(path, runtime, cgroup):
    ref = container_in_path(path)
    assert ref is not None and ref.id == ID and ref.runtime == runtime and ref.cgroup == cgroup


@pytest.mark.parametrize("path", [
    "/", "/system.slice/nginx.service", f"/machine.slice/libpod-conmon-{ID}.scope",
    f"/system.slice/crio-conmon-{ID}.scope", "/process_api/cbdad04d70746fe95b559d58f8341772",
    f"/system.slice/backup-{ID}.service",  # some unit that ends in 64 hex digits
])
def test_no_container_in_other_paths(path):
    assert container_in_path(path) is None


def test_proc_cgroup_lines_and_mounts():
    text = ("12:memory:/docker/abc\n9:name=systemd:/system.slice/docker-abc.scope\n"
            "3:cpu,cpuacct:/x\n0::/system.slice/docker-abc.scope\n")
    cg = parse_proc_cgroups(text)
    assert cg.v1_memory == "/docker/abc" and cg.v1_systemd == "/system.slice/docker-abc.scope"
    assert cg.v2 == "/system.slice/docker-abc.scope"
    mountinfo = (
        "30 25 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
        "31 25 0:27 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd\n"
        "32 25 0:28 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
    )
    m = parse_mountinfo_cgroups(mountinfo)
    assert (m.v1_memory, m.v2, m.v1_systemd) == (
        "/sys/fs/cgroup/memory", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd")
    assert m.directory(1, "/docker/abc/") == "/sys/fs/cgroup/memory/docker/abc"
    assert parse_cgroup_procs("12\n345\n\n") == [12, 345]


def _p(name: str, *argv: str) -> Process:
    return Process(1, 1, 0, name, list(argv))


@pytest.mark.parametrize("proc, kind", [
    (_p("docker-proxy", "/usr/bin/docker-proxy", "-proto", "tcp"), "docker-proxy"),
    (_p("rootlesskit-doc", "rootlesskit-docker-proxy"), "rootlesskit"),
    (_p("rootlesskit", "rootlesskit", "--net=slirp4netns"), "rootlesskit"),
    (_p("slirp4netns", "slirp4netns", "--configure", "4242", "tap0"), "slirp4netns"),
    (_p("pasta.avx2", "/usr/bin/pasta.avx2", "-t", "8080"), "pasta"),
    (_p("kubectl", "kubectl", "port-forward", "pod/web", "8080:80"), "kubectl port-forward"),
    (_p("kubectl", "kubectl", "get", "pods"), None),
    (_p("gunicorn", "gunicorn", "app:app"), None),
])
def test_known_proxies(proc, kind):
    assert proxy_kind(proc) == kind


@pytest.mark.parametrize("specs, port, remote", [
    (["8080:80"], 8080, 80),
    (["8080"], 8080, 8080),
    (["127.0.0.1/8000-8010:9000-9010"], 8003, 9003),
    (["22,8080:80"], 8080, 80),
    (["5000:5000"], 8080, None),
])
def test_forwarded_port_specs(specs, port, remote):
    assert _forwarded_port(specs, port) == remote


# --- sock_diag ----------------------------------------------------------------------------
def _diag_msg(family: int, state: int, sport: int, src: bytes, inode: int) -> bytes:
    import struct

    body = struct.pack("=BBBB", family, state, 0, 0)
    body += struct.pack("!HH16s16s", sport, 0, src.ljust(16, b"\0"), bytes(16))
    body += struct.pack("=I8s", 0, bytes(8)) + struct.pack("=IIIII", 0, 0, 0, 0, inode)
    return struct.pack("=IHHII", 16 + len(body), 20, 2, 1, 0) + body


def test_sock_diag_messages():
    import struct

    from loadmem.procfs.sock_diag import parse_diag_messages

    data = (_diag_msg(socket.AF_INET, 10, 8080, bytes([127, 0, 0, 1]), 4242)
            + _diag_msg(socket.AF_INET6, 10, 443, bytes(15) + b"\1", 4343))
    socks, done = parse_diag_messages(data)
    assert not done
    assert [(s.local, s.listening, s.inode) for s in socks] == [
        (("127.0.0.1", 8080), True, 4242), (("::1", 443), True, 4343)]
    done_msg = struct.pack("=IHHII", 20, 3, 2, 1, 0) + bytes(4)
    assert parse_diag_messages(done_msg) == ([], True)
    err = struct.pack("=IHHIIi", 36, 2, 0, 1, 0, -1) + bytes(16)
    with pytest.raises(OSError):
        parse_diag_messages(err)


def test_sock_diag_agrees_with_proc_net_tcp():
    from loadmem.procfs.sock_diag import tcp_listeners

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        fs = ProcFS()
        by_file = {(x.local, x.inode) for x in parse_tcp_sockets(fs.read("net/tcp"))
                   + parse_tcp_sockets(fs.read("net/tcp6")) if x.listening}
        got = tcp_listeners()
        assert got is not None
        assert {(x.local, x.inode) for x in got} == by_file
        assert ("127.0.0.1", s.getsockname()[1]) in {x.local for x in got}


def test_slirp4netns_target_argument():
    from loadmem.recorder.ports import _SLIRP_VALUED, _positional

    argv = ["--configure", "--mtu=65520", "-e", "3", "-r", "4", "--disable-host-loopback",
            "4242", "tap0"]
    assert _positional(argv, _SLIRP_VALUED) == ["4242", "tap0"]
    assert _positional(["--netns-type=path", "/run/netns/x"], _SLIRP_VALUED) == ["/run/netns/x"]
