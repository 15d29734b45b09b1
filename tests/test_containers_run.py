"""``loadmem run`` against a server in a "container": the bundled pre-forking demo server in
its own network namespace and a memory cgroup with a limit, published on this side by a
userland forwarder that enters the server's namespace to connect (as containerd does for
``kubectl port-forward``). The load goes to the forwarder's 127.0.0.1 port, and from there
only into the namespace this test made.

The run must watch the demo's master and workers (not only the forwarder), record the
forwarder with role ``proxy``, say in one line what it found, and name copy-on-write
unsharing. Small sizes as in ``test_run_demo_e2e.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from _netns_support import (
    FORWARDER,
    docker_id,
    memory_cgroup,
    netns,
    spawn,
    stop,
    system_python,
    wait_listening,
)
from _run_support import loadmem_cmd, write_scenario

from loadmem.analysis import analyze
from loadmem.recording import open_recording

pytestmark = pytest.mark.slow


def test_run_through_a_proxy_watches_the_server_in_its_namespace(tmp_path):
    cid = docker_id()
    with netns() as ns, memory_cgroup(f"docker/{cid}", limit="512M") as cgroup:
        demo = spawn([sys.executable, "-m", "loadmem.demo", "--workers", "2", "--table-mb", "24",
                      "--idle-gc-after", "1s", "--idle-gc-stagger", "1s"], ns, cgroup)
        fwd = None
        try:
            assert demo.stdout is not None
            ready = json.loads(demo.stdout.readline())
            fwd = spawn([system_python(), "-c", FORWARDER, "--netns", ns.path,
                         "--to", str(ready["port"])])
            port = wait_listening(fwd)
            out = tmp_path / "rec"
            scenario = write_scenario(tmp_path, wait=0.01)
            t0 = time.monotonic()
            r = subprocess.run(loadmem_cmd(
                str(scenario), "--target", f"http://127.0.0.1:{port}", "--baseline", "2s",
                "--load", "4s", "--observe", "8s", "--users", "5", "--interval", "0.5s",
                "--pss-budget", "25%", "--pss-max-age", "2s", "--out", str(out),
                "--fail-on", "never"),  # a finding would exit 1: not what is tested here
                capture_output=True, text=True, timeout=150)
            assert r.returncode == 0, r.stderr + r.stdout
            assert time.monotonic() - t0 < 150
            said = [ln for ln in r.stderr.splitlines() if ln.startswith("watching: ")]
            assert len(said) == 1, r.stderr
            assert said[0].startswith(f"watching: port {port}: published by ")
            assert f"(pid {fwd.pid}) for a server in another network namespace: " in said[0]
            assert f"pid {demo.pid} and 2 workers, cgroup " in said[0]
            assert said[0].endswith(f"/docker/{cid[:12]}...")

            rec = open_recording(out)
            (entry,) = rec.meta["selected"]
            assert entry["how"] == "proxy" and entry["server"][0]["pid"] == demo.pid
            assert entry["container"]["id"] == cid
            rows = rec.table("processes").to_pylist()
            roles = {(x["pid"], x["role"], x["depth"]) for x in rows}
            workers = cgroup.procs() - {demo.pid}
            assert len(workers) == 2
            assert (demo.pid, "target", 0) in roles
            assert {(w, "target", 1) for w in workers} <= roles
            assert (fwd.pid, "proxy", 0) in roles
            assert not any(x["role"] == "target" and x["pid"] == fwd.pid for x in rows)

            analysis = analyze(rec)
            assert analysis.figures["watched.count"] == 3  # the proxy is not the server
            assert all(r["pid"] != fwd.pid for r in analysis.processes)
            cow = analysis.finding("cow-unsharing")
            assert cow is not None, analysis.headline
            assert "copy-on-write" in analysis.headline.lower() or "unshar" in \
                analysis.headline.lower(), analysis.headline
            assert "verdict:" in r.stdout
            # the container view: the working set rose with flat RSS, through copy-on-write
            v = analysis.container
            assert v is not None and v["container"]["id"] == cid
            assert v["limit"] == 512 * 2**20
            ws = analysis.finding("working-set")
            assert ws is not None and ws.severity == "warning", analysis.findings
            assert "stayed flat" in ws.statement and "copy-on-write" in ws.statement
            assert ws.evidence["component.anon_delta_bytes"] > 8 * 2**20
            limit = analysis.finding("cgroup-limit")
            assert limit is not None and limit.severity in ("info", "critical")
            assert analysis.figures["cgroup.limit_bytes"] == 512 * 2**20
            # what was selected, and how, is in every report
            import io

            from loadmem.presentation import markdown, text

            for renderer in (text, markdown):
                buf = io.StringIO()
                renderer.render(analysis, buf)
                assert f"watching: port {port}: published by " in buf.getvalue()
        finally:
            if fwd is not None:
                stop(fwd)
            stop(demo)
