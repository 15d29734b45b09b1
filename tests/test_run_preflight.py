"""``loadmem run`` preflight: each problem is one clear line and exit 2, before any recording."""

from __future__ import annotations

from pathlib import Path

import pytest
from _run_support import free_port, http_server, write_scenario

from loadmem.cli.main import main
from loadmem.errors import LoadmemError
from loadmem.load.target import check_recordable, is_loopback, parse_target


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["run", *args])
    err = capsys.readouterr().err.strip()
    return code, err


def test_syntax_error_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    bad = tmp_path / "broken.py"
    bad.write_text("from locust import HttpUser\n\nclass U(HttpUser):\n"
                   "    def x(self)\n        pass\n")
    out = tmp_path / "rec"
    code, err = _run(capsys, str(bad), "--target", f"http://127.0.0.1:{free_port()}",
                     "--out", str(out))
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "syntax error" in err and "broken.py" in err and "line 4" in err
    assert not out.exists()  # nothing recorded


def test_no_user_class(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    empty = tmp_path / "nousers.py"
    empty.write_text("from locust import HttpUser\n\nclass Base(HttpUser):\n    abstract = True\n")
    out = tmp_path / "rec"
    code, err = _run(capsys, str(empty), "--target", f"http://127.0.0.1:{free_port()}",
                     "--out", str(out))
    assert code == 2
    assert f"no User class in {empty}" in err
    assert not out.exists()


def test_connection_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    scenario = write_scenario(tmp_path)
    port = free_port()
    out = tmp_path / "rec"
    code, err = _run(capsys, str(scenario), "--target", f"http://127.0.0.1:{port}",
                     "--out", str(out))
    assert code == 2
    assert f"connection refused at 127.0.0.1:{port}: is the server running?" in err
    assert len(err.splitlines()) == 1
    assert not out.exists()


def test_remote_target_refused_without_record_plan(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]):
    # Refused before any connection is attempted: no packet leaves this machine.
    scenario = write_scenario(tmp_path)
    code, err = _run(capsys, str(scenario), "--target", "http://192.0.2.10:8080",
                     "--out", str(tmp_path / "rec"))
    assert code == 2
    assert "not on this machine" in err and "docs/multi-machine.md" in err


def test_missing_scenario_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    with http_server() as (_proc, port):
        code, err = _run(capsys, str(tmp_path / "nope.py"), "--target",
                         f"http://127.0.0.1:{port}", "--out", str(tmp_path / "rec"))
    assert code == 2 and "no scenario file" in err


def test_bad_duration_is_a_usage_error(tmp_path: Path):
    with pytest.raises(SystemExit) as e:
        main(["run", "x.py", "--target", "demo", "--load", "5 minutes"])
    assert e.value.code == 2


def test_parse_target_and_loopback():
    t = parse_target("http://127.0.0.1:8080/app/")
    assert (t.host, t.port, t.url, t.is_local) == ("127.0.0.1", 8080, "http://127.0.0.1:8080/app",
                                                   True)
    assert parse_target("https://localhost").port == 443
    assert parse_target("127.0.0.1:9000").url == "http://127.0.0.1:9000"
    assert parse_target("demo").is_demo
    assert parse_target("http://u:secret@127.0.0.1:81").url == "http://127.0.0.1:81"
    assert is_loopback("::1") and is_loopback("127.3.4.5") and is_loopback("localhost")
    assert not is_loopback("10.0.0.5") and not is_loopback("example.com")
    with pytest.raises(LoadmemError):
        parse_target("ftp://127.0.0.1/")
    remote = parse_target("http://10.1.2.3:8080")
    check_recordable(remote, [], [], no_record=True)
    check_recordable(remote, [123], [], no_record=False)
    with pytest.raises(LoadmemError, match="multi-machine"):
        check_recordable(remote, [], [], no_record=False)


def test_slow_import_shows_progress_then_names_the_line(tmp_path: Path):
    """A locustfile that hangs at import: progress every 5 s, then where it hung (item 10)."""
    import os
    import subprocess
    import sys

    hang = tmp_path / "hang.py"
    hang.write_text("import time\ntime.sleep(600)  # fetching test data, forever\n"
                    "from locust import HttpUser\n")
    out = tmp_path / "rec"
    with http_server() as (_proc, port):
        done = subprocess.run(
            [sys.executable, "-m", "loadmem", "run", str(hang), "--target",
             f"http://127.0.0.1:{port}", "--out", str(out)],
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "LOADMEM_READY_TIMEOUT": "7"})
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert any(ln.startswith("still loading the locustfile (5s") for ln in lines), lines
    assert "took more than 7s" in lines[-1] and f"{hang}, line 2" in lines[-1], lines[-1]
    assert not out.exists()


def test_the_parent_never_imports_locust(tmp_path: Path):
    """Locust's gevent monkey-patching would turn the parent's threads (stats reader, log
    pump) into greenlets blocked by pipe reads: every path of the parent stays Locust-free."""
    import subprocess
    import sys

    empty = tmp_path / "nousers.py"
    empty.write_text("from locust import HttpUser\n\nclass Base(HttpUser):\n    abstract = True\n")
    good = write_scenario(tmp_path)
    probe = (
        "import sys\n"
        "from loadmem.cli.main import main\n"
        f"main(['run', {str(empty)!r}, '--target', 'http://127.0.0.1:{free_port()}'])\n"
        f"main(['run', {str(good)!r}, '--target', 'http://127.0.0.1:{free_port()}'])\n"
        "main(['run', '-f', 'missing.py', '--target', 'demo', '--userz', '1'])\n"
        "assert 'gevent' not in sys.modules and 'locust' not in sys.modules, 'imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("loadmem run: error: ") == 3, done.stderr
