"""Process-controlled text is shown, never obeyed: terminal, Markdown, HTML and plots.

Unit tests of ``loadmem.presentation.escape`` on the hostile strings of issue 14 item 12,
then one real recording of a process that names itself ``"\\x1b[31mRED\\nx) Z 1"`` (through
``/proc/self/comm``, as any local user can) under a label holding HTML, Markdown and a
terminal title sequence, read back by ``analyze`` (text and Markdown), ``ls``, ``gate``
(text and Markdown), ``report`` (HTML) and ``plot``.
"""

from __future__ import annotations

import html as html_module
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from loadmem.presentation import escape

HOSTILE_COMM = "\x1b[31mRED\nx) Z 1"  # 15 bytes: the kernel keeps all of it
HOSTILE_LABEL = "<b>bold</b> | *x* \x1b]0;pwned\x07 ![i](x.png) $a$"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (HOSTILE_COMM, "\\x1b[31mRED\\nx) Z 1"),
        ("tab\there\r", "tab\\there\\r"),
        ("\x9b31m", "\\x9b31m"),  # C1 CSI: a one-byte escape sequence on some terminals
        ("evil\u202e.txt", "evil\\u202e.txt"),  # right-to-left override
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("\x00\x7f", "\\x00\\x7f"),
        ("gunicorn: worker [app]", "gunicorn: worker [app]"),
        ("café 日本 😀", "café 日本 😀"),  # printable non-ASCII is kept
    ],
)
def test_terminal_shows_control_characters_as_escapes(text: str, shown: str) -> None:
    out = escape.terminal(text)
    assert out == shown
    assert "\n" not in out and "\x1b" not in out


def test_terminal_takes_any_object() -> None:
    assert escape.terminal(Path("/tmp/a\nb")) == "/tmp/a\\nb"
    assert escape.terminal(12345) == "12345"


@pytest.mark.parametrize(
    ("text", "md"),
    [
        ("<script>alert(1)</script>", "&lt;script&gt;alert\\(1\\)&lt;/script&gt;"),
        ("a|b", "a\\|b"),
        ("![i](http://x/t.png)", "\\!\\[i\\]\\(http://x/t.png\\)"),
        ("*x* `c` ~~s~~ $m$", "\\*x\\* \\`c\\` \\~\\~s\\~\\~ \\$m\\$"),
        ("gunicorn_worker", "gunicorn_worker"),  # intraword: cannot open emphasis
        ("_x_", "\\_x\\_"),
        ("R&D", "R&amp;D"),
        (HOSTILE_COMM, "\\\\x1b\\[31mRED\\\\nx\\) Z 1"),
    ],
)
def test_markdown_inline(text: str, md: str) -> None:
    assert escape.markdown(text) == md


@pytest.mark.parametrize(
    ("text", "md"),
    [("# big", "\\# big"), ("- item", "\\- item"), ("+1 MB", "\\+1 MB"), ("1. x", "1\\. x"),
     ("  = under", "  \\= under"), ("12 MB", "12 MB")],
)
def test_markdown_at_a_line_start_cannot_open_a_block(text: str, md: str) -> None:
    assert escape.markdown(text, line_start=True) == md
    assert escape.markdown(text) == text  # mid-line (a cell, a heading) they are inert


@pytest.mark.parametrize(
    ("text", "span"),
    [("v1.2.3", "`v1.2.3`"), ("a`b", "``a`b``"), ("`x", "`` `x ``"), ("a|b", "`a\\|b`")],
)
def test_markdown_code_span_cannot_be_closed_early(text: str, span: str) -> None:
    assert escape.markdown_code(text) == span


def test_html_and_plot() -> None:
    assert escape.html('<a href="x">&') == "&lt;a href=&quot;x&quot;&gt;&amp;"
    assert escape.html("http://127.0.0.1:8080/") == "http:&#47;/127.0.0.1:8080/"
    assert escape.html(HOSTILE_COMM) == "\\x1b[31mRED\\nx) Z 1"
    assert escape.plot("$x$ \x1b") == "\\$x\\$ \\x1b"


# ---------------------------------------------------------------------------------------
# End to end: a real hostile process, recorded by the real recorder, read by every command.

# The parent renames itself, forks a child that renames itself too, then both idle.
NAMER = r"""
import os, sys, time
name = sys.argv[1].encode("latin-1")
with open("/proc/self/comm", "wb") as f:
    f.write(name)
if os.fork() == 0:
    with open("/proc/self/comm", "wb") as f:
        f.write(name)
    time.sleep(60)
    os._exit(0)
print("ready", flush=True)
time.sleep(60)
"""


def _loadmem(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "loadmem", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hostile") / "recordings" / "hostile-rec"
    work = subprocess.Popen([sys.executable, "-c", NAMER, HOSTILE_COMM], stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        assert work.stdout is not None
        assert work.stdout.readline().strip() == "ready"
        comm = Path(f"/proc/{work.pid}/comm").read_bytes()
        assert comm == HOSTILE_COMM.encode() + b"\n", comm  # the kernel kept it all
        done = _loadmem("record", "--pid", str(work.pid), "--interval", "0.25s", "--duration",
                        "2.5s", "--pss-max-age", "1s", "--out", str(out), "--label",
                        HOSTILE_LABEL)
        assert done.returncode == 0, done.stderr
    finally:
        os.killpg(work.pid, signal.SIGKILL)
        work.wait(timeout=10)
    return out


def _no_raw_control(text: str) -> None:
    for ch in ("\x1b", "\x07", "\x9b", "\r"):
        assert ch not in text, f"raw {ch!r} in output"


def test_recording_holds_the_name_as_the_kernel_gave_it(hostile: Path) -> None:
    from loadmem.recording import open_recording

    names = set(open_recording(hostile).table("processes", ["name"]).column("name").to_pylist())
    assert HOSTILE_COMM in names  # stored raw: escaping is the renderers' job


def test_analyze_text_shows_the_name_escaped_on_one_line(hostile: Path) -> None:
    done = _loadmem("analyze", str(hostile), "--fail-on", "never")
    assert done.returncode == 0, done.stderr
    _no_raw_control(done.stdout)
    assert "\\x1b[31mRED\\nx) Z 1" in done.stdout
    assert not any(line.startswith("x) Z 1") for line in done.stdout.splitlines())
    assert "\\x1b]0;pwned\\x07" in done.stdout.splitlines()[0]  # the label, in the title


def test_analyze_markdown_has_no_raw_html_in_the_heading(hostile: Path) -> None:
    done = _loadmem("analyze", str(hostile), "--fail-on", "never", "--markdown")
    assert done.returncode == 0, done.stderr
    _no_raw_control(done.stdout)
    heading = done.stdout.splitlines()[0]
    assert heading.startswith("### loadmem analyze: ")
    assert "<b>" not in done.stdout and "&lt;b&gt;bold&lt;/b&gt;" in heading
    assert "\\|" in heading and "\\!\\[i\\]" in heading and "\\$a\\$" in heading
    _tables_keep_their_columns(done.stdout)


def _tables_keep_their_columns(markdown: str) -> None:
    """Every row of every Markdown table has as many (unescaped) cell separators as its
    header: no name broke out of its cell."""
    widths: set[int] = set()
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            widths.add(line.count("|") - line.count("\\|"))
        else:
            assert len(widths) <= 1, f"a table row has another column count: {markdown}"
            widths = set()


def test_ls_and_gate(hostile: Path, tmp_path: Path) -> None:
    done = _loadmem("ls", str(hostile.parent))
    assert done.returncode == 0, done.stderr
    _no_raw_control(done.stdout)
    assert "\\x1b]0;pwned\\x07" in done.stdout
    assert len(done.stdout.splitlines()) == 3  # header, rule, one recording

    config = tmp_path / "loadmem.toml"
    config.write_text('[gates]\nrss = { metric = "watched.rss_end_bytes", max = "1G" }\n')
    for fmt in ((), ("--markdown",)):
        done = _loadmem("gate", str(hostile), "--config", str(config), *fmt)
        assert done.returncode == 0, done.stdout + done.stderr
        _no_raw_control(done.stdout)
        if not fmt:  # JUnit XML: a raw control character would make the file unparsable
            done = _loadmem("gate", str(hostile), "--config", str(config), "--junit",
                            str(tmp_path / "j.xml"))
            assert done.returncode == 0, done.stderr
            props = {p.get("name"): p.get("value")
                     for p in ElementTree.parse(tmp_path / "j.xml").iter("property")}
            assert props["label"] == escape.terminal(HOSTILE_LABEL)
        if fmt:  # the label as a code span (literal: no HTML, no Markdown inside one)
            heading = done.stdout.splitlines()[0]
            assert heading.endswith(" — `<b>bold</b> | *x* \\x1b]0;pwned\\x07 ![i](x.png) $a$`")
            assert "<b>" not in done.stdout.replace(heading, "")
            _tables_keep_their_columns(done.stdout)


def test_report_and_plot(hostile: Path, tmp_path: Path) -> None:
    report = tmp_path / "r.html"
    done = _loadmem("report", str(hostile), "-o", str(report))
    assert done.returncode == 0, done.stderr
    _no_raw_control(done.stdout)
    page = report.read_text()
    _no_raw_control(page)
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert html_module.escape("\\x1b[31mRED\\nx) Z 1") in page
    png = tmp_path / "p.png"
    done = _loadmem("plot", str(hostile), "-o", str(png))  # "$a$" must not break mathtext
    assert done.returncode == 0, done.stderr
    assert png.stat().st_size > 10_000
