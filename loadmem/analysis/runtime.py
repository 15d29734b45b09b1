"""Which runtime a process runs, from what the recording holds: its executable, the files it
maps and its command line. Names and paths only: the target is never asked (no exec of
``--version``, no reading of its memory).

``detect_runtime(exe, files, cmdline)`` returns a ``Runtime``: CPython, Ruby, Node.js,
PHP-FPM (PHP), a JVM, or ``native`` for anything else, with the version when the names say
it, the evidence it rests on, and the pre-fork server when the command line names one
(gunicorn, uWSGI, Celery, Puma, Unicorn, Passenger, PHP-FPM). Checks, first match wins:

=========  ====================================================================================
runtime    evidence (version from)
=========  ====================================================================================
CPython    ``libpython3.11.so`` mapped (uWSGI and other embedders); executable ``python3.11``;
           an executable named ``python*`` with ``lib/python3.11/`` or ``cpython-311`` files
           mapped. A patch version (``3.11.7``) from a ``/versions/3.11.7/`` directory
           (pyenv, asdf) when it agrees.
Ruby       ``libruby-3.1.so.3.1.2`` / ``libruby.so.3.3`` mapped; executable ``ruby3.1``; an
           executable named ``ruby`` with ``ruby/3.3.0/`` files mapped; ``/versions/3.3.1/``
           (rbenv, asdf).
Node.js    executable ``node``/``nodejs``, or ``libnode.so`` mapped; ``/versions/node/v20.1.0/``
           (nvm) or ``node-v20.1.0-linux-x64/``.
PHP        executable ``php-fpm8.2`` (or ``php8.2``); ``/php/8.2/`` or ``/php8.2/`` in paths or
           the command line (``php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)``).
JVM        ``libjvm.so`` mapped; ``java-17-openjdk``, ``jdk-21.0.2``, ``openjdk-17`` in its path.
=========  ====================================================================================
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

CPYTHON = "cpython"
RUBY = "ruby"
NODE = "node"
PHP = "php"
JVM = "jvm"
NATIVE = "native"

DISPLAY = {CPYTHON: "CPython", RUBY: "Ruby", NODE: "Node.js", PHP: "PHP", JVM: "JVM",
           NATIVE: "native"}


@dataclass(frozen=True)
class Runtime:
    name: str  # cpython | ruby | node | php | jvm | native
    version: str | None = None  # "3.11", "3.11.7", "3.1.2", "20.1.0", "17"; None: unknown
    evidence: str = ""  # what it was recognised by
    server: str | None = None  # gunicorn, uwsgi, celery, puma, unicorn, passenger, php-fpm
    program: str | None = None  # the executable's file name

    @property
    def display(self) -> str:
        """"CPython 3.11.7", "Ruby 3.1", "native (nginx)"."""
        if self.name == NATIVE:
            return f"native ({self.program})" if self.program else "native"
        base = DISPLAY.get(self.name, self.name)
        return f"{base} {self.version}" if self.version else base

    def version_tuple(self) -> tuple[int, ...] | None:
        if not self.version:
            return None
        try:
            return tuple(int(x) for x in self.version.split("."))
        except ValueError:
            return None


_LIBPYTHON = re.compile(r"(?:^|/)libpython(\d+)\.(\d+)[a-z]*\.so")
_PYTHON_EXE = re.compile(r"^python(\d+)\.(\d+)[a-z]*$")
_PYTHON_LIBDIR = re.compile(r"/lib(?:64)?/python(\d+)\.(\d+)/|\.cpython-(\d)(\d+)[-.]")
_LIBRUBY = re.compile(r"(?:^|/)libruby(?:-(\d+)\.(\d+))?\.so(?:\.(\d+)\.(\d+)(?:\.(\d+))?)?")
_RUBY_EXE = re.compile(r"^ruby(\d+)\.(\d+)$")
_RUBY_LIBDIR = re.compile(r"/ruby/(\d+)\.(\d+)\.\d+/")
_VERSIONS_DIR = re.compile(r"/versions/(?:[a-z]+/)?v?(\d+\.\d+(?:\.\d+)?)/")
_NODE_DIR = re.compile(r"/node-v(\d+\.\d+\.\d+)-")
_PHP_EXE = re.compile(r"^php(?:-fpm|-cgi)?(\d+\.\d+)?$")
_PHP_DIR = re.compile(r"/php/?(\d+\.\d+)/")
_LIBJVM = re.compile(r"(?:^|/)libjvm\.so$")
_JVM_DIR = re.compile(r"/(?:java-|jdk-?|openjdk-|jre-?|temurin-)(\d+)(?:\.(\d+)\.(\d+))?")

_SERVERS = ("gunicorn", "uwsgi", "celery", "puma", "unicorn", "passenger", "php-fpm",
            "hypercorn", "daphne", "sidekiq", "resque", "pitchfork")


def _basename(path: str | None) -> str:
    if not path:
        return ""
    return path.removesuffix(" (deleted)").rstrip("/").rsplit("/", 1)[-1]


def _server(cmdline: str | None, exe_name: str) -> str | None:
    """The pre-fork server a command line names: a word (between spaces, ``/``, ``:``,
    brackets, parentheses) that is a server's name, maybe followed by a version."""
    words = re.split(r"[\s/:\[\]()]+", f"{exe_name} {cmdline or ''}".lower())
    for name in _SERVERS:
        for w in words:
            if w == name or (w.startswith(name) and re.fullmatch(r"[\d.]+", w[len(name):])):
                return name
    return None


def _patch(major_minor: str, files: list[str]) -> str:
    """``3.11`` -> ``3.11.7`` when a ``/versions/3.11.7/`` directory agrees."""
    for f in files:
        m = _VERSIONS_DIR.search(f)
        if m and m.group(1).startswith(major_minor + ".") and m.group(1).count(".") == 2:
            return m.group(1)
    return major_minor


def detect_runtime(exe: str | None, files: Iterable[str], cmdline: str | None = None
                   ) -> Runtime:
    """The runtime of one process (see the module docstring); ``native`` when none fits."""
    exe_name = _basename(exe)
    paths = [f for f in files if f]
    if exe:
        paths.append(exe)
    server = _server(cmdline, exe_name)
    for check in (_cpython, _ruby, _node, _php, _jvm):
        found = check(exe_name, paths, cmdline or "")
        if found is not None:
            name, version, evidence = found
            return Runtime(name, version, evidence, server, exe_name or None)
    return Runtime(NATIVE, None, f"executable {exe_name}" if exe_name else "no runtime found",
                   server, exe_name or None)


Found = tuple[str, str | None, str] | None


def _cpython(exe_name: str, paths: list[str], cmdline: str) -> Found:
    for p in paths:
        m = _LIBPYTHON.search(p)
        if m:
            v = f"{m.group(1)}.{m.group(2)}"
            return CPYTHON, _patch(v, paths), f"{_basename(p)} mapped"
    m = _PYTHON_EXE.match(exe_name)
    if m:
        v = f"{m.group(1)}.{m.group(2)}"
        return CPYTHON, _patch(v, paths), f"executable {exe_name}"
    if exe_name.startswith("python"):
        for p in paths:
            d = _PYTHON_LIBDIR.search(p)
            if d:
                v = f"{d.group(1)}.{d.group(2)}" if d.group(1) else f"{d.group(3)}.{d.group(4)}"
                return CPYTHON, _patch(v, paths), f"executable {exe_name}, {_basename(p)}"
        return CPYTHON, None, f"executable {exe_name}"
    return None


def _ruby(exe_name: str, paths: list[str], cmdline: str) -> Found:
    for p in paths:
        m = _LIBRUBY.search(p)
        if m and (m.group(1) or m.group(3)):
            if m.group(1):  # libruby-3.1.so[.3.1.2]: the name says major.minor
                v = f"{m.group(1)}.{m.group(2)}"
                if m.group(5) and f"{m.group(3)}.{m.group(4)}" == v:
                    v = f"{v}.{m.group(5)}"
            else:  # libruby.so.3.3[.N]: major.minor
                v = f"{m.group(3)}.{m.group(4)}"
            return RUBY, _patch(v, paths) if v.count(".") == 1 else v, f"{_basename(p)} mapped"
    m = _RUBY_EXE.match(exe_name)
    if m:
        v = f"{m.group(1)}.{m.group(2)}"
        return RUBY, _patch(v, paths), f"executable {exe_name}"
    if exe_name == "ruby":
        for p in paths:
            d = _RUBY_LIBDIR.search(p)
            if d:
                v = f"{d.group(1)}.{d.group(2)}"
                return RUBY, _patch(v, paths), f"executable ruby, {_basename(p)}"
        return RUBY, None, "executable ruby"
    return None


def _node(exe_name: str, paths: list[str], cmdline: str) -> Found:
    lib = next((p for p in paths if re.search(r"(?:^|/)libnode\.so", p)), None)
    if exe_name not in ("node", "nodejs") and lib is None:
        return None
    version = None
    for p in paths:
        m = _NODE_DIR.search(p) or (_VERSIONS_DIR.search(p) if "/node/" in p else None)
        if m:
            version = m.group(1)
            break
    evidence = f"executable {exe_name}" if exe_name in ("node", "nodejs") else \
        f"{_basename(lib)} mapped"
    return NODE, version, evidence


def _php(exe_name: str, paths: list[str], cmdline: str) -> Found:
    m = _PHP_EXE.match(exe_name)
    if not m:
        return None
    version = m.group(1)
    if version is None:
        for text in [*paths, cmdline]:
            d = _PHP_DIR.search(text)
            if d:
                version = d.group(1)
                break
    return PHP, version, f"executable {exe_name}"


def _jvm(exe_name: str, paths: list[str], cmdline: str) -> Found:
    lib = next((p for p in paths if _LIBJVM.search(p)), None)
    if lib is None:
        return None
    m = _JVM_DIR.search(lib)
    version = None
    if m:
        version = m.group(1) if m.group(1) != "1" or not m.group(2) else m.group(2)
    return JVM, version, "libjvm.so mapped"
