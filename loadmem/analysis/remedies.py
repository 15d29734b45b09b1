"""The documented remedy for copy-on-write unsharing, per runtime, with its version condition
and where it is documented.

``remedy_for(runtime)`` gives a ``Remedy``: what the runtime's (or its servers') own
documentation says to do before forking, whether the recorded version meets the condition
(``applies``: True, False, or None when the version is unknown), the sources, and what the
remedy does *not* cover. It is advice from documentation, not a measurement: the verdict
never says a remedy was applied or would work; a recording made after the change, compared
with ``loadmem compare``, shows its effect.

The catalogue (``docs/analysis.md`` lists it with its sources):

- **CPython >= 3.7**: ``gc.disable()`` early in the parent, ``gc.freeze()`` right before
  forking, ``gc.enable()`` in each child, so the cyclic collector stops writing to the
  headers of the objects the workers inherit. Reference counts are still written by code
  that touches those objects. gunicorn: ``gc.freeze()`` in the ``pre_fork`` server hook,
  ``gc.enable()`` in ``post_fork``.
- **Ruby >= 3.3**: ``Process.warmup`` in the parent before the first fork (a major GC,
  heap compaction, surviving objects promoted to the old generation). Puma: in a
  ``before_fork`` block; Unicorn: in ``before_fork``. Before 3.3: run the GC before forking
  so that young objects are promoted (the ``nakayoshi_fork`` gem; Puma 5+'s
  ``nakayoshi_fork`` option).
- **Node.js**: cluster workers are separate processes started with
  ``child_process.fork()``, each with its own heap: nothing inherited to unshare, no remedy.
- **PHP-FPM**: compiled scripts live in OPcache's shared memory; what a worker writes per
  request is its own. No runtime switch against copy-on-write is documented;
  ``pm.max_requests`` respawns a worker after that many requests.
- **JVM**: a JVM does not fork workers; no copy-on-write remedy is claimed.
- **native**: no runtime remedy is claimed; the mapping kinds say which memory the program
  writes after fork.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from loadmem.analysis.runtime import CPYTHON, JVM, NATIVE, NODE, PHP, RUBY, Runtime

PY_GC_FREEZE = "https://docs.python.org/3/library/gc.html#gc.freeze"
GUNICORN_HOOKS = "https://docs.gunicorn.org/en/stable/settings.html#server-hooks"
RUBY_WARMUP = "https://docs.ruby-lang.org/en/3.3/Process.html#method-c-warmup"
PUMA_DSL = "https://puma.io/puma/Puma/DSL.html"
UNICORN_CONFIG = "https://yhbt.net/unicorn/Unicorn/Configurator.html"
NAKAYOSHI_FORK = "https://github.com/ko1/nakayoshi_fork"
NODE_CLUSTER = "https://nodejs.org/api/cluster.html"
PHP_OPCACHE = "https://www.php.net/manual/en/opcache.configuration.php"
PHP_FPM_CONFIG = "https://www.php.net/manual/en/install.fpm.configuration.php"


@dataclass(frozen=True)
class Remedy:
    runtime: str  # Runtime.name
    display: str  # "CPython 3.11.7"
    remedy: str | None  # the documented remedy, one or two sentences; None: none claimed
    condition: str | None = None  # "CPython >= 3.7"
    applies: bool | None = None  # the recorded version meets the condition (None: unknown)
    caveat: str | None = None  # what the remedy does not cover
    sources: tuple[str, ...] = field(default_factory=tuple)  # URLs

    @property
    def line(self) -> str:
        """The remedy line of the copy-on-write finding (plain text; links in ``sources``):
        ``CPython 3.11.7: documented remedy (needs CPython >= 3.7): call gc.disable() ...``."""
        if self.remedy is None:
            return f"{self.display}: {self.caveat}" if self.caveat else self.display
        if self.condition is None:
            head = f"{self.display}: documented remedy"
        elif self.applies is True:
            head = f"{self.display}: documented remedy (needs {self.condition})"
        elif self.applies is False:
            head = f"{self.display}: the documented remedy needs {self.condition}, newer " \
                   "than this"
        else:
            head = f"{self.display} (version not recorded): documented remedy (needs " \
                   f"{self.condition})"
        text = f"{head}: {self.remedy}"
        return f"{text} {self.caveat}" if self.caveat else text

    def to_dict(self) -> dict[str, object]:
        return {"runtime": self.runtime, "display": self.display, "remedy": self.remedy,
                "condition": self.condition, "applies": self.applies, "caveat": self.caveat,
                "sources": list(self.sources), "line": self.line}


def _meets(rt: Runtime, minimum: tuple[int, ...]) -> bool | None:
    v = rt.version_tuple()
    if v is None:
        return None
    return v[: len(minimum)] >= minimum


def remedy_for(rt: Runtime) -> Remedy:
    """The catalogue entry for ``rt`` (see the module docstring)."""
    if rt.name == CPYTHON:
        hook = (" With gunicorn: gc.freeze() in the pre_fork server hook and gc.enable() in "
                "post_fork." if rt.server == "gunicorn" else "")
        return Remedy(
            CPYTHON, rt.display,
            "call gc.disable() early in the parent, gc.freeze() right before the workers "
            "are forked and gc.enable() in each worker, so the garbage collector stops "
            "writing to the objects the workers inherit." + hook,
            "CPython >= 3.7", _meets(rt, (3, 7)),
            "It does not stop reference-count writes by code that touches those objects.",
            (PY_GC_FREEZE, *((GUNICORN_HOOKS,) if rt.server == "gunicorn" else ())),
        )
    if rt.name == RUBY:
        applies = _meets(rt, (3, 3))
        hook = {"puma": " With Puma: in a before_fork block.",
                "unicorn": " With Unicorn: in before_fork."}.get(rt.server or "", "")
        if applies is False:
            older = ("before 3.3, run the garbage collector before forking so young objects "
                     "are promoted (the nakayoshi_fork gem"
                     + ("; Puma 5+'s nakayoshi_fork option" if rt.server == "puma" else "")
                     + "), or upgrade to use Process.warmup.")
            return Remedy(RUBY, rt.display, older, "Ruby >= 3.3 for Process.warmup", False,
                          None, (RUBY_WARMUP, NAKAYOSHI_FORK,
                                 *((PUMA_DSL,) if rt.server == "puma" else ())))
        return Remedy(
            RUBY, rt.display,
            "call Process.warmup in the parent once the application is loaded, before the "
            "first fork (it runs a major GC, compacts the heap and promotes surviving "
            "objects to the old generation)." + hook,
            "Ruby >= 3.3", applies, None,
            (RUBY_WARMUP, *({"puma": (PUMA_DSL,), "unicorn": (UNICORN_CONFIG,)}
                            .get(rt.server or "", ()))),
        )
    if rt.name == NODE:
        return Remedy(NODE, rt.display, None, caveat=(
            "cluster workers are separate processes started with child_process.fork(), "
            "each with its own heap, so there is nothing inherited to unshare; no "
            "copy-on-write remedy applies."), sources=(NODE_CLUSTER,))
    if rt.name == PHP:
        return Remedy(PHP, rt.display, None, caveat=(
            "compiled scripts live in OPcache's shared memory (opcache.enable) and what a "
            "worker writes per request is its own; PHP documents no switch against "
            "copy-on-write. pm.max_requests respawns a worker after that many requests."),
            sources=(PHP_OPCACHE, PHP_FPM_CONFIG))
    if rt.name == JVM:
        return Remedy(JVM, rt.display, None, caveat=(
            "a JVM does not fork workers; no copy-on-write remedy is claimed."))
    return Remedy(NATIVE, rt.display, None, caveat=(
        "no runtime remedy is claimed; the mapping kinds show which memory the program "
        "writes after fork."))

