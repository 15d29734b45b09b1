"""Selecting a server in a container: real network namespaces, veth pairs and memory cgroups
(made under this test's own memory cgroup, removed afterwards), a pre-forking server inside,
userland proxies on this side.

- ``--port`` through ``docker-proxy`` (found by its command line), through a generic
  forwarder (found by the probe connection), through a forwarder that enters the
  container's namespace to connect (its socket lives there), and with no proxy at all;
  the server is watched with role ``target``, the proxy with role ``proxy``;
- ``--cgroup`` selects exactly the cgroup's processes, re-read every tick;
- ``--container`` by id prefix, by a name the runtime's CLI knows, in docker, systemd and
  Kubernetes cgroup layouts; ``--unit``;
- bad input: one line, exit 2, nothing recorded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _netns_support import (
    FORWARDER,
    PREFORK,
    docker_id,
    memory_cgroup,
    named_python,
    netns,
    spawn,
    stop,
    system_python,
    wait_listening,
)

from loadmem.cli.main import main
from loadmem.errors import LoadmemError
from loadmem.procfs.reader import ProcFS
from loadmem.recorder import cgroups as cg
from loadmem.recorder.selection import ProcessSelector, Selection

ME = {os.getpid()}


class Container:
    """A pre-forking server (master + 2 workers) in its own network namespace and memory
    cgroup ``<own>/docker/<id>``."""

    def __init__(self, ns, cgroup, proc, port, cid):
        self.ns, self.cgroup, self.proc, self.port, self.id = ns, cgroup, proc, port, cid

    @property
    def pids(self) -> set[int]:
        return self.cgroup.procs()


@pytest.fixture(scope="module")
def container():
    cid = docker_id()
    with netns() as ns, memory_cgroup(f"docker/{cid}", limit="256M") as cgroup:
        proc = spawn([system_python(), "-c", PREFORK, "0.0.0.0", "0", "2"], ns, cgroup)
        try:
            port = wait_listening(proc)
            deadline = time.monotonic() + 10
            while len(cgroup.procs()) < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            yield Container(ns, cgroup, proc, port, cid)
        finally:
            stop(proc)


def _selector(**kw) -> ProcessSelector:
    sel = ProcessSelector(Selection(**kw), ProcFS(), exclude_pids=ME)
    sel.check_initial()
    return sel


def _watch(sel: ProcessSelector, want: set[int], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sel.update()
        if want <= set(sel.watched):
            return
        time.sleep(0.05)
    raise AssertionError(f"not watched: {want - set(sel.watched)}; watched {set(sel.watched)}")


def _server_roles(sel: ProcessSelector, c: Container) -> None:
    master = c.proc.pid  # nsenter execs the server: the same pid
    for pid in c.pids:
        w = sel.watched[pid]
        assert w.role == "target"
        assert w.depth == (0 if pid == master else 1)


def test_port_through_docker_proxy_watches_the_server(container, tmp_path):
    proxy = spawn([named_python(tmp_path, "docker-proxy"), "-c", FORWARDER, "-proto", "tcp",
                   "-host-ip", "127.0.0.1", "-container-ip", container.ns.ns_ip,
                   "-container-port", str(container.port)])
    try:
        port = wait_listening(proxy)
        sel = _selector(ports=[port])
        _watch(sel, container.pids | {proxy.pid})
        _server_roles(sel, container)
        assert sel.watched[proxy.pid].role == "proxy" and sel.watched[proxy.pid].name == \
            "docker-proxy"
        (entry,) = sel.selected
        assert entry["how"] == "proxy" and entry["other_netns"] is True
        assert entry["proxies"][0]["kind"] == "docker-proxy"
        assert entry["proxies"][0]["found_by"] == "command line"
        assert entry["server"][0]["pid"] == container.proc.pid
        assert entry["server"][0]["workers"] == 2
        assert entry["container"] == {"id": container.id, "runtime": "docker"}
        assert entry["netns"] == f"net:[{container.ns.inode()}]"
        text = entry["text"]
        assert text.startswith(f"port {port}: published by docker-proxy (pid {proxy.pid}) for "
                               "a server in another network namespace: ")
        assert f"pid {container.proc.pid} and 2 workers, cgroup " in text
        assert text.endswith(f"/docker/{container.id[:12]}...")
        assert json.loads(json.dumps(sel.selected)) == sel.selected  # meta.json material
    finally:
        stop(proxy)


def test_two_docker_proxies_for_ipv4_and_ipv6_are_one_hop(container, tmp_path):
    """docker starts one docker-proxy per address family on the same port: both are the
    proxy (watched with role proxy), one hop in the line."""
    exe = named_python(tmp_path, "docker-proxy")
    flags = ["-container-ip", container.ns.ns_ip, "-container-port", str(container.port)]
    v4 = spawn([exe, "-c", FORWARDER, "-host-ip", "127.0.0.1", *flags])
    v6 = None
    try:
        port = wait_listening(v4)
        v6 = spawn([exe, "-c", FORWARDER, "-host-ip", "::1", "-host-port", str(port), *flags])
        wait_listening(v6)
        sel = _selector(ports=[port])
        _watch(sel, container.pids | {v4.pid, v6.pid})
        assert sel.watched[v4.pid].role == sel.watched[v6.pid].role == "proxy"
        _server_roles(sel, container)
        (entry,) = sel.selected
        assert sorted(p["pid"] for p in entry["proxies"]) == sorted([v4.pid, v6.pid])
        assert {p["hop"] for p in entry["proxies"]} == {0}
        a, b = sorted([v4.pid, v6.pid])
        assert f"published by docker-proxy (pid {a}) and docker-proxy (pid {b}) for a " \
               "server in another network namespace" in entry["text"]
    finally:
        stop(v4)
        if v6 is not None:
            stop(v6)


def test_port_through_a_generic_forwarder_is_found_by_the_probe(container):
    fwd = spawn([system_python(), "-c", FORWARDER, "-container-ip", container.ns.ns_ip,
                 "-container-port", str(container.port)])
    try:
        port = wait_listening(fwd)
        sel = _selector(ports=[port])
        _watch(sel, container.pids | {fwd.pid})
        _server_roles(sel, container)
        assert sel.watched[fwd.pid].role == "proxy"
        (entry,) = sel.selected
        assert entry["proxies"][0]["kind"] == "forwarder"
        assert entry["proxies"][0]["found_by"] == "probe"
    finally:
        stop(fwd)


def test_port_through_a_forwarder_that_enters_the_namespace(container):
    """containerd's port-forward: the upstream socket is made inside the container's
    namespace by a process that lives outside it."""
    fwd = spawn([system_python(), "-c", FORWARDER, "--netns", container.ns.path,
                 "--to", str(container.port)])
    try:
        port = wait_listening(fwd)
        sel = _selector(ports=[port])
        _watch(sel, container.pids | {fwd.pid})
        _server_roles(sel, container)
        (entry,) = sel.selected
        assert entry["proxies"][0]["found_by"] == "probe"
        assert entry["other_netns"]
    finally:
        stop(fwd)


def test_port_in_another_namespace_with_no_proxy(container):
    """`loadmem record --port P` for a server listening only in another namespace."""
    sel = _selector(ports=[container.port])
    _watch(sel, container.pids)
    _server_roles(sel, container)
    (entry,) = sel.selected
    assert entry["how"] == "other-netns" and entry["proxies"] == []
    assert "a server in another network namespace (nothing listens here)" in entry["text"]


def test_an_application_server_here_is_not_taken_for_a_proxy(container):
    """Another namespace listens, so the probe is made: a server that does not forward a
    bare connection stays the server."""
    srv = spawn([system_python(), "-c", PREFORK, "127.0.0.1", "0", "1"])
    try:
        port = wait_listening(srv)
        t0 = time.monotonic()
        sel = _selector(ports=[port])
        assert time.monotonic() - t0 < 10
        _watch(sel, {srv.pid})
        assert sel.watched[srv.pid].role == "target"
        (entry,) = sel.selected
        assert entry["how"] == "listener" and entry["proxies"] == []
        assert not set(sel.watched) & container.pids
    finally:
        stop(srv)


def test_the_same_port_in_two_namespaces_is_refused(container):
    with netns() as ns2, memory_cgroup(f"docker/{docker_id()}") as cg2:
        other = spawn([system_python(), "-c", PREFORK, "0.0.0.0", str(container.port), "1"],
                      ns2, cg2)
        try:
            wait_listening(other)
            with pytest.raises(LoadmemError, match="listened on in 2 network namespaces"):
                _selector(ports=[container.port])
        finally:
            stop(other)


def test_a_restarted_container_is_found_again_behind_its_proxy(tmp_path):
    cid = docker_id()
    with netns() as ns, memory_cgroup(f"docker/{cid}") as cgroup:
        srv = spawn([system_python(), "-c", PREFORK, "0.0.0.0", "0", "1"], ns, cgroup)
        srv_port = wait_listening(srv)
        proxy = spawn([named_python(tmp_path, "docker-proxy"), "-c", FORWARDER,
                       "-container-ip", ns.ns_ip, "-container-port", str(srv_port)])
        try:
            port = wait_listening(proxy)
            sel = _selector(ports=[port])
            _watch(sel, {srv.pid})
            stop(srv)
            srv = spawn([system_python(), "-c", PREFORK, "0.0.0.0", str(srv_port), "1"], ns,
                        cgroup)
            wait_listening(srv)
            _watch(sel, {srv.pid}, timeout=15)
            assert sel.watched[srv.pid].depth == 0 and sel.watched[srv.pid].role == "target"
            notes = sel.take_notes()
            assert any(m.startswith("looked up again: port") for m, _ in notes)
        finally:
            stop(srv)
            stop(proxy)


# --- cgroups -------------------------------------------------------------------------------
def test_cgroup_selects_exactly_its_processes_every_tick(container):
    with memory_cgroup(f"lmtest-{os.getpid()}") as group, \
            memory_cgroup(f"lmtest-{os.getpid()}/child") as child:
        sleep = [system_python(), "-c", "import time; time.sleep(60)"]
        a = spawn(sleep, cgroup=group)
        b = spawn(sleep, cgroup=child)
        outside = spawn(sleep)
        try:
            deadline = time.monotonic() + 5
            while {a.pid, b.pid} - group.procs() - child.procs() and time.monotonic() < deadline:
                time.sleep(0.02)
            sel = _selector(cgroups=[group.path])
            _watch(sel, {a.pid, b.pid})
            assert set(sel.watched) == {a.pid, b.pid}
            assert outside.pid not in sel.watched
            # moved out: gone at the next tick; moved in: watched at the next tick
            (group.directory.parent / "cgroup.procs").write_text(str(a.pid))
            (child.directory / "cgroup.procs").write_text(str(outside.pid))
            _, gone = sel.update()
            assert [w.pid for w in gone] == [a.pid]
            assert set(sel.watched) == {b.pid, outside.pid}
            (entry,) = sel.selected
            assert entry["selector"] == "cgroup" and entry["cgroup"] == group.path
            assert entry["hierarchy"] == "memory" and entry["processes"] == 2
            assert sel.selected_cgroups[0].path == group.path
        finally:
            for p in (a, b, outside):
                stop(p)


def test_cgroup_path_may_be_the_directory():
    own = cg.mounts_of(ProcFS()).v1_memory
    from _netns_support import own_memory_cgroup

    t = cg.resolve_cgroup(ProcFS(), own + own_memory_cgroup())
    assert t.path == own_memory_cgroup() and t.hierarchy == "memory"


@pytest.mark.parametrize("layout", ["docker/{id}", "system.slice/docker-{id}.scope",
                                    "kubepods/burstable/pod1234-ab/{id}",
                                    "machine.slice/libpod-{id}.scope/container"])
def test_container_by_id_prefix_in_each_layout(layout):
    cid = docker_id()
    rel = layout.format(id=cid)
    with memory_cgroup(rel) as group:
        p = spawn([system_python(), "-c", "import time; time.sleep(60)"], cgroup=group)
        try:
            deadline = time.monotonic() + 5
            while p.pid not in group.procs() and time.monotonic() < deadline:
                time.sleep(0.02)
            t = cg.resolve_container(ProcFS(), cid[:12])
            assert t.container is not None and t.container.id == cid
            want = {"docker/{id}": "docker", "system.slice/docker-{id}.scope": "docker",
                    "kubepods/burstable/pod1234-ab/{id}": "kubernetes",
                    "machine.slice/libpod-{id}.scope/container": "podman"}[layout]
            assert t.container.runtime == want
            assert t.directory.endswith(rel.removesuffix("/container"))
            sel = _selector(containers=[cid])
            _watch(sel, {p.pid})
        finally:
            stop(p)


def test_container_name_through_the_runtime_cli(container, tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "docker"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\n[ \"$6\" = web ] && echo {container.id} && exit 0\n"
                    "echo 'Error: No such container' >&2; exit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")
    t = cg.resolve_container(ProcFS(), "web")
    assert t.container.id == container.id and t.how == "docker (name -> id)"
    with pytest.raises(LoadmemError, match=r"no running container matches 'db'.*asked docker"):
        cg.resolve_container(ProcFS(), "db")


def test_unit_by_name(tmp_path):
    unit = f"lmtest-{os.getpid()}.service"
    with memory_cgroup(f"system.slice/{unit}") as group:
        p = spawn([system_python(), "-c", "import time; time.sleep(60)"], cgroup=group)
        try:
            deadline = time.monotonic() + 5
            while p.pid not in group.procs() and time.monotonic() < deadline:
                time.sleep(0.02)
            t = cg.resolve_unit(ProcFS(), unit.removesuffix(".service"))
            assert t.path == group.path and t.how == "process cgroups"
            sel = _selector(units=[unit])
            _watch(sel, {p.pid})
            assert sel.selected[0]["text"].startswith(f"unit {unit}: cgroup ")
        finally:
            stop(p)


# --- bad input: one line, exit 2, nothing recorded -----------------------------------------
@pytest.mark.parametrize("args, expect", [
    (["--cgroup", "/no/such/cgroup-lm"], "no cgroup /no/such/cgroup-lm"),
    (["--cgroup", "/a/../b"], "'..' is not allowed"),
    (["--container", "0123456789ab" * 5 + "cdef"], "no running container matches"),
    (["--unit", "no-such-unit-lm.service"], "no systemd unit no-such-unit-lm.service runs"),
    (["--unit", "bad/unit"], "invalid --unit"),
])
def test_bad_selection_is_one_line_exit_2(args, expect, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no docker CLI: nothing to wait for
    assert main(["record", *args, "--duration", "1", "--out", str(tmp_path / "rec")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("loadmem record: error: ") and expect in err
    assert not (tmp_path / "rec").exists()


def test_unreadable_cgroup_is_refused_before_recording(tmp_path):
    """As an unprivileged user, a cgroup whose directory only root may enter."""
    with memory_cgroup(f"lmtest-{os.getpid()}-private") as group:
        group.directory.chmod(0o700)
        out = tmp_path / "rec"
        tmp_path.chmod(0o777)
        r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                            sys.executable, "-m", "loadmem", "record", "--cgroup", group.path,
                            "--duration", "1", "--out", str(out)],
                           capture_output=True, text=True, timeout=60,
                           cwd=Path(__file__).parent.parent)
        assert r.returncode == 2, r.stderr
        errors = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(errors) == 1 and "permission denied" in errors[0], r.stderr
        assert not out.exists()


def test_record_a_container_by_id(container, tmp_path):
    """The real recorder: exactly the container's processes, what it found in meta.json and
    on stdout."""
    out = tmp_path / "rec"
    r = subprocess.run([sys.executable, "-m", "loadmem", "record", "--container",
                        container.id[:12], "--duration", "1.5", "--interval", "0.5s",
                        "--out", str(out)], capture_output=True, text=True, timeout=60,
                       cwd=Path(__file__).parent.parent)
    assert r.returncode == 0, r.stderr
    from loadmem.recording import open_recording

    rec = open_recording(out)
    assert rec.meta["selection"]["containers"] == [container.id[:12]]
    (entry,) = rec.meta["selected"]
    assert entry["selector"] == "container" and entry["container"]["id"] == container.id
    assert entry["how"] == "container id in /proc/PID/cgroup"
    assert r.stdout.startswith(f"watching: {entry['text']}\n")
    assert entry["text"].startswith(f"container {container.id[:12]}: docker {container.id[:12]}")
    pids = set(rec.table("processes").column("pid").to_pylist())
    assert pids == container.pids


@pytest.mark.parametrize("name, found_by", [("rootlesskit", "command line"),
                                            ("slirp4netns", "probe")])
def test_port_through_a_relay_whose_other_end_is_a_helper(container, tmp_path, name, found_by):
    """rootlesskit-style: the connection is handed to a helper inside the namespace. As
    `rootlesskit` it is found through its child's namespace; as `slirp4netns` with no
    namespace argument, by the probe: the one namespace whose listener got a new
    connection."""
    from _netns_support import RELAY

    relay = spawn([named_python(tmp_path, name), "-c", RELAY, f"--ns={container.ns.path}",
                   f"--to={container.port}"])
    try:
        port = wait_listening(relay)
        sel = _selector(ports=[port])
        _watch(sel, container.pids | {relay.pid})
        _server_roles(sel, container)
        assert sel.watched[relay.pid].role == "proxy"
        (entry,) = sel.selected
        assert entry["proxies"][0]["kind"] == name
        assert entry["proxies"][0]["found_by"] == found_by
        # the relay forwards for real
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            assert r.read() == b"ok"
    finally:
        stop(relay)


def test_a_proxy_whose_server_is_not_found_is_watched_alone(container, tmp_path):
    """docker-proxy for a container port nothing listens on: not an error; the proxy is
    watched, and the line says the server was not found."""
    proxy = spawn([named_python(tmp_path, "docker-proxy"), "-c", FORWARDER, "-container-ip",
                   container.ns.ns_ip, "-container-port", "9"])
    try:
        port = wait_listening(proxy)
        sel = _selector(ports=[port])
        _watch(sel, {proxy.pid})
        assert sel.watched[proxy.pid].role == "proxy"
        assert not set(sel.watched) & container.pids
        (entry,) = sel.selected
        assert entry["how"] == "unresolved" and entry["server"] == []
        assert entry["text"] == (f"port {port}: docker-proxy (pid {proxy.pid}) publishes port "
                                 f"{port}, but the server it forwards to was not found: "
                                 "watching the proxy only")
    finally:
        stop(proxy)
