"""The one place that makes process-controlled text safe to show: terminal, Markdown, HTML, plots.

Anything a watched process, a recording or a user's file decides (process names, command
lines, labels, scenario names, targets, paths, notes quoting them, statements built from
them) is untrusted: any local user can name their own process ``"\\x1b[31mRED\\nx) Z 1"``
by writing to ``/proc/self/comm``. Every renderer passes such text through one of these
functions at the point where it is written out, never earlier (the data stays as recorded).

- ``terminal(text)``: control characters become visible escapes (``\\x1b``, ``\\n``,
  ``\\t``, ``\\u202e``), so nothing a process names itself can move the cursor, change
  colours, set the window title, hide text or start a new line. Printable text, including
  non-ASCII letters, is left as it is.
- ``markdown(text)``: for inline Markdown (a table cell, a heading, a list item): the
  terminal escaping, then ``<``, ``>`` and ``&`` as HTML entities (no raw HTML, whatever
  the renderer), then a backslash before every character that could start Markdown
  syntax (emphasis, links, images, code, tables, math, strikethrough; ``_`` only where it
  is not between two letters); for text that opens a line, also before a leading ``#``,
  ``+``, ``-``, ``=`` or ``1.`` that would start a heading or a list.
- ``markdown_code(text)``: the same text as an inline code span, fenced with more
  backticks than it contains (so it cannot close the span early).
- ``html(text)``: ``html.escape`` (element content and attribute values alike) after the
  terminal escaping; a URL's ``://`` is written ``:&#47;/``, which shows and copies the
  same but is not a reference anything would fetch.
- ``plot(text)``: for matplotlib text: the terminal escaping, and ``$`` escaped so a name
  cannot switch on (or break) matplotlib's math rendering.
"""

from __future__ import annotations

import html as _html
import re
import unicodedata
from typing import Any

__all__ = ["html", "markdown", "markdown_code", "plot", "terminal"]

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

# Unicode "format" characters that change how the text around them is shown: bidirectional
# overrides and isolates (the "Trojan Source" characters), zero-width joiners and spaces,
# the BOM. Category Cf holds them all, plus a few harmless ones (soft hyphen) that we
# escape too: a name has no business containing any of them.


def _is_unsafe(ch: str) -> bool:
    cat = unicodedata.category(ch)
    return cat in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn")


def _visible(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


# Printable ASCII plus the space is by far the common case: skip the per-character check.
_PLAIN = re.compile(r"[ -~]*")


def terminal(text: Any) -> str:
    """``text`` (``str()`` of it) with every control and format character shown as an
    escape: ``"\\x1b[31mRED\\nx"`` -> ``"\\\\x1b[31mRED\\\\nx"``. One line, always."""
    s = text if isinstance(text, str) else str(text)
    if _PLAIN.fullmatch(s):
        return s
    return "".join(_visible(ch) if _is_unsafe(ch) else ch for ch in s)


# Inline Markdown syntax (CommonMark, GitHub/GitLab flavoured): every ASCII punctuation
# character may be backslash-escaped, and the escaped character is shown literally.
_MD_INLINE = re.compile(r"([\\`*{}\[\]()!|~$])")
# "_" only where it can open or close emphasis: not between two letters or digits
# (GitHub and CommonMark ignore intraword underscores), so gunicorn_worker stays readable.
_MD_UNDERSCORE = re.compile(r"(?<![^\W_])_|_(?![^\W_])")
# At the start of a line: a heading, a bullet, a setext underline (a quote's ">" is an
# entity by then), or the "1." of an ordered list (whose ")" the inline rule escapes).
_MD_LEADING = re.compile(r"^(\s*)(?:([#+\-=])|(\d+)\.)")
_MD_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def markdown(text: Any, line_start: bool = False) -> str:
    """``text`` as inert inline Markdown: shows as written, in a table cell or a heading,
    and can neither break the table, link, embed an image nor inject HTML. With
    ``line_start=True`` (text that opens a line, a list item or a quote) it cannot start a
    heading or a list either."""
    s = terminal(text)
    s = "".join(_MD_ENTITIES.get(ch, ch) for ch in s)
    s = _MD_INLINE.sub(r"\\\1", s)
    s = _MD_UNDERSCORE.sub(r"\\_", s)
    return _MD_LEADING.sub(_leading, s, count=1) if line_start else s


def _leading(m: re.Match[str]) -> str:
    if m.group(2):
        return f"{m.group(1)}\\{m.group(2)}"
    return f"{m.group(1)}{m.group(3)}\\."


def markdown_code(text: Any, table: bool = True) -> str:
    """``text`` as an inline code span. Inside a code span nothing is interpreted but the
    backtick fence, so the fence is one backtick longer than the longest run inside; in a
    table (``table=True``, the default) ``|`` is escaped too, as GitHub requires there."""
    s = terminal(text)
    if table:
        s = s.replace("|", "\\|")
    longest = max((len(r) for r in re.findall(r"`+", s)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if s.startswith("`") or s.endswith("`") or not s.strip() else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def html(text: Any) -> str:
    """``text`` escaped for HTML element content and quoted attribute values."""
    return _html.escape(terminal(text), quote=True).replace("://", ":&#47;/")


def plot(text: Any) -> str:
    """``text`` for a matplotlib label or title: one line, no math mode."""
    return terminal(text).replace("$", r"\$")
