"""URL credentials reach Locust (basic auth) and never the recording or any output."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from _run_support import run_loadmem, write_scenario

pytestmark = pytest.mark.slow
SECRET = "s3cr3t-Pw-42"

AUTH_SERVER = r"""
import base64, http.server, os
EXPECTED = "Basic " + base64.b64encode(b"admin:" + os.environ["PW"].encode()).decode()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        ok = self.headers.get("Authorization") == EXPECTED
        body = b"ok" if ok else b"who are you?"
        self.send_response(200 if ok else 401)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
srv.daemon_threads = True
print(srv.server_address[1], flush=True)
srv.serve_forever()
"""


def _strings(path: Path) -> str:
    """Every text a recording holds: files as text, Parquet tables cell by cell."""
    out = []
    for f in path.rglob("*"):
        if f.suffix == ".parquet":
            out.append(str(pq.read_table(f).to_pylist()))
        elif f.is_file():
            out.append(f.read_text(errors="replace"))
    return "\n".join(out)


@pytest.mark.parametrize("how", ["--target", "-H"])
def test_credentials_reach_locust_and_nothing_else(tmp_path: Path, how: str):
    scenario = write_scenario(tmp_path, wait=0.05)
    out = tmp_path / "rec"
    # the secret in the server's environment, not its command line (which is recorded)
    server = subprocess.Popen([sys.executable, "-c", AUTH_SERVER], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PW": SECRET})
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        url = f"http://admin:{SECRET}@127.0.0.1:{port}"
        done = run_loadmem(str(scenario), how, url, "-u", "2", "--baseline", "1s",
                           "--load", "3s", "--observe", "1s", "--interval", "0.5s",
                           "--fail-on", "never", "--json", "--out", str(out), timeout=120)
    finally:
        server.kill()
        server.wait()
    assert done.returncode == 0, done.stderr  # 401s would be failures: exit 1
    assert '"failures": 0' in done.stdout and '"requests": 0' not in done.stdout
    assert SECRET not in done.stdout and SECRET not in done.stderr
    assert base64.b64encode(f"admin:{SECRET}".encode()).decode() not in _strings(out)
    assert SECRET not in _strings(out)
    assert f"127.0.0.1:{port}" in (out / "meta.json").read_text()
