"""Just enough HTTP/1.1 for the demo: parse request heads from a buffer, build responses.

Pure functions over bytes, no sockets, so the worker's event loop stays small and this
part is testable on its own. Keep-alive is the HTTP/1.1 default (Locust's FastHttpUser
reuses connections; closing after each response would cost a TCP handshake per request
and cap throughput), ``Connection: close`` and HTTP/1.0 without ``keep-alive`` close.
Pipelined requests are answered in order. Request bodies are read and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

#: A request head larger than this is refused (431) and the connection closed.
MAX_HEAD_BYTES = 16 * 1024
#: A request body larger than this is refused (413): the demo only serves GETs.
MAX_BODY_BYTES = 1 << 20

REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
}


class BadRequest(Exception):
    """The bytes are not an HTTP/1.x request we can answer; reply with ``status`` and close."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    version: str
    keep_alive: bool


def parse_request(buf: bytearray) -> tuple[Request, int] | None:
    """Parse one request at the start of ``buf``.

    Returns ``(request, consumed)`` where ``consumed`` counts head and body bytes, or
    ``None`` if more bytes are needed. Raises ``BadRequest`` for what cannot be served.
    """
    end = buf.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4)
    if end < 0:
        if len(buf) > MAX_HEAD_BYTES:
            raise BadRequest(431, "request head too large")
        return None
    lines = bytes(buf[:end]).split(b"\r\n")
    try:
        method, target, version = lines[0].decode("latin-1").split(" ")
    except ValueError:
        raise BadRequest(400, "malformed request line") from None
    if not version.startswith("HTTP/1."):
        raise BadRequest(400, f"unsupported version {version!r}")
    connection = ""
    length = 0
    for raw in lines[1:]:
        name, sep, value = raw.partition(b":")
        if not sep:
            raise BadRequest(400, "malformed header line")
        key = name.strip().lower()
        if key == b"connection":
            connection = value.strip().decode("latin-1").lower()
        elif key == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                raise BadRequest(400, "bad Content-Length") from None
            if length < 0:
                raise BadRequest(400, "bad Content-Length")
            if length > MAX_BODY_BYTES:
                raise BadRequest(413, "request body too large")
        elif key == b"transfer-encoding":
            raise BadRequest(400, "chunked request bodies are not supported")
    consumed = end + 4 + length
    if len(buf) < consumed:
        return None
    # HTTP/1.1 keeps the connection by default, HTTP/1.0 only if asked.
    keep_alive: bool
    keep_alive = (
        ("keep-alive" in connection) if version == "HTTP/1.0" else ("close" not in connection)
    )
    return Request(method, target, version, keep_alive), consumed


def build_response(
    status: int,
    body: bytes,
    content_type: str,
    keep_alive: bool,
    head_only: bool = False,
) -> bytes:
    """A complete HTTP/1.1 response with Content-Length (no chunking needed)."""
    head = (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n"
        "Server: loadmem-demo\r\n"
        "\r\n"
    ).encode("latin-1")
    return head if head_only else head + body
