"""The demo server's HTTP parsing, on bytes: keep-alive rules, pipelining, refusals."""

from __future__ import annotations

import pytest

from loadmem.demo.http import MAX_HEAD_BYTES, BadRequest, build_response, parse_request


def test_incomplete_head_needs_more_bytes() -> None:
    assert parse_request(bytearray(b"GET / HTTP/1.1\r\nHost: x\r\n")) is None


def test_http11_keeps_alive_unless_close() -> None:
    req, used = parse_request(bytearray(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert (req.method, req.target, req.keep_alive) == ("GET", "/a?b=1", True)
    assert used == len(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    req, _ = parse_request(bytearray(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n"))
    assert req.keep_alive is False


def test_http10_closes_unless_keep_alive() -> None:
    req, _ = parse_request(bytearray(b"GET / HTTP/1.0\r\n\r\n"))
    assert req.keep_alive is False
    req, _ = parse_request(bytearray(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"))
    assert req.keep_alive is True


def test_pipelined_requests_parse_one_after_the_other() -> None:
    buf = bytearray(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3")
    targets = []
    while (parsed := parse_request(buf)) is not None:
        req, used = parsed
        targets.append(req.target)
        del buf[:used]
    assert targets == ["/1", "/2"]
    assert buf == bytearray(b"GET /3")


def test_body_is_consumed_with_the_request() -> None:
    raw = b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n"
    assert parse_request(bytearray(raw[:-25])) is None  # body not complete yet
    req, used = parse_request(bytearray(raw))
    assert req.method == "POST"
    assert raw[used:].startswith(b"GET / ")


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / SPDY/3\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n", 413),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * (MAX_HEAD_BYTES + 10), 431),
    ],
)
def test_refusals(raw: bytes, status: int) -> None:
    with pytest.raises(BadRequest) as err:
        parse_request(bytearray(raw))
    assert err.value.status == status


def test_response_has_length_and_connection_header() -> None:
    resp = build_response(200, b"{}", "application/json", keep_alive=False)
    head, body = resp.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 2" in head
    assert b"Connection: close" in head
    assert body == b"{}"
    head_only = build_response(200, b"{}", "application/json", keep_alive=True, head_only=True)
    assert head_only.endswith(b"\r\n\r\n")
    assert b"Content-Length: 2" in head_only
