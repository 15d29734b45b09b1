"""The demo application: four endpoints over the preloaded table.

The handlers must not undo what the ``frozen`` variant fixes: reading a table entry bumps
its reference count, which is a write to the page holding it. So ``/`` and ``/api/items``
serve bytes rendered once in the master before the fork, ``/health`` touches only the
worker's own counters, and only ``/item/<n>`` looks an entry up (one object, a page or two;
the demo scenario calls it rarely, like a detail page behind a listing).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from loadmem.demo.table import Item

HTML = "text/html; charset=utf-8"
JSON = "application/json"

#: How many entries ``/api/items`` lists (rendered once, in the master).
LISTING_SIZE = 20

Response = tuple[int, bytes, str]


def counts_as_traffic(target: str) -> bool:
    """Whether a request arms idle housekeeping: probes of ``/health`` do not."""
    return urlsplit(target).path != "/health"


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class App:
    """Routes a request path to ``(status, body, content type)``."""

    def __init__(self, table: Sequence[Item], variant: str):
        self._table = table
        #: Set by each worker after the fork: its own counters for ``/health``.
        self.stats: Callable[[], dict[str, object]] = dict
        n = len(table)
        sample = [table[i].as_dict(i) for i in range(min(LISTING_SIZE, n))]
        self._listing = _json({"count": n, "items": sample})
        links = "".join(
            f'<li><a href="/item/{i}">item {i}</a></li>' for i in range(min(LISTING_SIZE, n))
        )
        self._index = (
            "<!doctype html><html><head><title>loadmem demo</title></head><body>"
            f"<h1>loadmem demo ({variant})</h1>"
            f"<p>{n} items preloaded by the master before it forked its workers.</p>"
            '<p><a href="/api/items">/api/items</a> · <a href="/health">/health</a></p>'
            f"<ul>{links}</ul></body></html>"
        ).encode()

    def handle(self, method: str, target: str) -> Response:
        if method not in ("GET", "HEAD"):
            return 405, _json({"error": "method not allowed"}), JSON
        path = urlsplit(target).path
        if path == "/":
            return 200, self._index, HTML
        if path == "/api/items":
            return 200, self._listing, JSON
        if path == "/health":
            return 200, _json({"status": "ok", "pid": os.getpid(), **self.stats()}), JSON
        if path.startswith("/item/"):
            return self._item(path[len("/item/") :])
        return 404, _json({"error": "not found", "path": path}), JSON

    def _item(self, key: str) -> Response:
        if not key.isdigit() or int(key) >= len(self._table):
            return 404, _json({"error": "no such item", "id": key}), JSON
        n = int(key)
        return 200, _json(self._table[n].as_dict(n)), JSON
