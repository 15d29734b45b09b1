"""Runtime detection from names and paths (captured smaps, live processes, the layouts of
common installs) and the remedy catalogue's version conditions."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loadmem.analysis.remedies import (
    GUNICORN_HOOKS,
    NODE_CLUSTER,
    PUMA_DSL,
    PY_GC_FREEZE,
    RUBY_WARMUP,
    remedy_for,
)
from loadmem.analysis.runtime import Runtime, detect_runtime
from loadmem.procfs.smaps import parse_maps, parse_smaps

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "proc"


def files_of(fixture: str) -> list[str]:
    return [m.path for m in parse_smaps((FIX / fixture).read_text()) if m.path.startswith("/")]


# --- detection from captured processes ---------------------------------------------------
def test_cpython_with_libpython_and_a_pyenv_patch_version():
    rt = detect_runtime("/root/.pyenv/versions/3.11.7/bin/python3.11", files_of("smaps_python"),
                        "python3 app.py")
    assert (rt.name, rt.version, rt.display) == ("cpython", "3.11.7", "CPython 3.11.7")
    assert "libpython3.11.so.1.0" in rt.evidence


def test_cpython_static_binary():
    rt = detect_runtime("/usr/bin/python3.11", files_of("smaps_python_static"),
                        "/usr/bin/python3 -m gunicorn -w 4 app:app")
    assert (rt.name, rt.version, rt.server) == ("cpython", "3.11", "gunicorn")


def test_ruby_from_libruby_with_its_release():
    rt = detect_runtime("/usr/bin/ruby3.1", files_of("smaps_ruby"),
                        "puma 5.6.5 (tcp://127.0.0.1:9292) [app]")
    assert (rt.name, rt.version, rt.server) == ("ruby", "3.1.2", "puma")


def test_c_program_is_native():
    rt = detect_runtime("/tmp/where/cow", files_of("smaps_c"), "./cow heap 8")
    assert (rt.name, rt.version, rt.display) == ("native", None, "native (cow)")


# --- detection from the layouts of common installs ---------------------------------------
@pytest.mark.parametrize(("exe", "files", "cmdline", "expected"), [
    # uWSGI embeds CPython: the library decides, not the executable
    ("/usr/bin/uwsgi-core", ["/usr/lib/x86_64-linux-gnu/libpython3.12.so.1.0",
                             "/usr/lib/uwsgi/plugins/python3_plugin.so"],
     "uwsgi --ini app.ini", ("cpython", "3.12", "uwsgi")),
    # the official python image: /usr/local/bin/python3.12 and its libpython
    ("/usr/local/bin/python3.12", ["/usr/local/lib/libpython3.12.so.1.0"],
     "/usr/local/bin/python /usr/local/bin/celery -A proj worker", ("cpython", "3.12", "celery")),
    # a venv's python resolves to the base interpreter; lib-dynload tells the version
    ("/opt/py/bin/python",
     ["/opt/py/lib/python3.9/lib-dynload/_ssl.cpython-39-x86_64-linux-gnu.so"],
     "gunicorn: master [app:app]", ("cpython", "3.9", "gunicorn")),
    ("/usr/bin/python2.7", [], "python2.7 old.py", ("cpython", "2.7", None)),
    # rbenv: upstream libruby.so.3.3 (major.minor) and the rbenv directory (patch)
    ("/home/u/.rbenv/versions/3.3.1/bin/ruby", ["/home/u/.rbenv/versions/3.3.1/lib/libruby.so.3.3"],
     "unicorn master -c config/unicorn.rb", ("ruby", "3.3.1", "unicorn")),
    # a static ruby: its gem extension directory
    ("/usr/local/bin/ruby", ["/usr/local/lib/ruby/3.2.0/x86_64-linux/monitor.so"],
     "puma: cluster worker 0: 1 [app]", ("ruby", "3.2", "puma")),
    ("/home/u/.nvm/versions/node/v20.11.1/bin/node", [], "node server.js",
     ("node", "20.11.1", None)),
    ("/usr/bin/node", [], "node app.js", ("node", None, None)),
    ("/opt/node-v18.19.0-linux-x64/bin/node", [], "node a.js", ("node", "18.19.0", None)),
    ("/usr/sbin/php-fpm8.2", ["/usr/lib/php/20220829/opcache.so"],
     "php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)", ("php", "8.2", "php-fpm")),
    ("/usr/local/sbin/php-fpm", [], "php-fpm: pool www (/usr/local/etc/php/8.3/x)",
     ("php", "8.3", "php-fpm")),
    ("/usr/lib/jvm/java-17-openjdk-amd64/bin/java",
     ["/usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so"], "java -jar app.jar",
     ("jvm", "17", None)),
    ("/opt/jdk-21.0.2/bin/java", ["/opt/jdk-21.0.2/lib/server/libjvm.so"], "java -jar x.jar",
     ("jvm", "21", None)),
    ("/usr/sbin/nginx", ["/usr/lib/x86_64-linux-gnu/libc.so.6"],
     "nginx: worker process", ("native", None, None)),
    ("/usr/lib/postgresql/15/bin/postgres", [], "postgres: checkpointer", ("native", None, None)),
    (None, [], None, ("native", None, None)),
])
def test_detection_on_common_layouts(exe, files, cmdline, expected):
    rt = detect_runtime(exe, files, cmdline)
    assert (rt.name, rt.version, rt.server) == expected


def test_a_pyenv_directory_of_another_minor_version_is_not_taken():
    rt = detect_runtime("/usr/bin/python3.11", ["/root/.pyenv/versions/3.12.1/lib/x.so"], None)
    assert rt.version == "3.11"


# --- live processes ------------------------------------------------------------------------
def _live(cmd: list[str]) -> Runtime:
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        exe = os.readlink(f"/proc/{p.pid}/exe")
        files = [m.path for m in parse_maps(Path(f"/proc/{p.pid}/maps").read_text())]
        cmdline = Path(f"/proc/{p.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    finally:
        p.kill()
        p.wait()
    return detect_runtime(exe, files, cmdline)


def test_live_cpython():
    rt = _live([sys.executable, "-c", "print('ready', flush=True); input()"])
    assert rt.name == "cpython"
    assert rt.version is not None
    assert rt.version.startswith(f"{sys.version_info.major}.{sys.version_info.minor}")


def test_live_ruby():
    ruby = shutil.which("ruby")
    assert ruby, "ruby is needed (apt-get install ruby)"
    rt = _live([ruby, "-e", "puts 'ready'; STDOUT.flush; STDIN.gets"])
    version = subprocess.run([ruby, "-e", "print RUBY_VERSION"], capture_output=True,
                             text=True, check=True).stdout
    assert rt.name == "ruby" and rt.version is not None
    assert version.startswith(rt.version)


def test_live_node():
    node = shutil.which("node")
    assert node, "node is needed"
    rt = _live([node, "-e", "console.log('ready'); process.stdin.on('data', () => {})"])
    assert rt.name == "node"


# --- remedies -----------------------------------------------------------------------------
def test_cpython_remedy_and_its_version_condition():
    r = remedy_for(Runtime("cpython", "3.11.7", server="gunicorn"))
    assert r.applies is True and r.condition == "CPython >= 3.7"
    assert "gc.freeze()" in r.line and "gc.disable()" in r.line and "gc.enable()" in r.line
    assert "pre_fork" in r.line and GUNICORN_HOOKS in r.sources and PY_GC_FREEZE in r.sources
    assert "reference-count" in r.line  # what it does not cover
    old = remedy_for(Runtime("cpython", "3.6"))
    assert old.applies is False and "newer than this" in old.line
    unknown = remedy_for(Runtime("cpython", None))
    assert unknown.applies is None and "version not recorded" in unknown.line
    assert remedy_for(Runtime("cpython", "3.10")).applies is True  # 3.10 > 3.7, not "3.1"


def test_ruby_remedy_before_and_after_3_3():
    new = remedy_for(Runtime("ruby", "3.3.1", server="puma"))
    assert new.applies is True and "Process.warmup" in new.line and "before_fork" in new.line
    assert RUBY_WARMUP in new.sources and PUMA_DSL in new.sources
    old = remedy_for(Runtime("ruby", "3.1.2", server="puma"))
    assert old.applies is False and old.condition == "Ruby >= 3.3 for Process.warmup"
    assert "nakayoshi_fork" in old.line and "Ruby 3.1.2" in old.line


@pytest.mark.parametrize(("name", "words"), [
    ("node", "nothing inherited"), ("php", "pm.max_requests"), ("jvm", "does not fork"),
    ("native", "no runtime remedy is claimed"),
])
def test_runtimes_without_a_remedy_say_so(name, words):
    r = remedy_for(Runtime(name, None, program="nginx"))
    assert r.remedy is None and r.applies is None and words in r.line
    if name == "node":
        assert NODE_CLUSTER in r.sources
