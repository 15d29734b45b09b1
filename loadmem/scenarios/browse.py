"""A plain browsing scenario for any site: the home page, then links of the same origin.

Each user fetches ``/``, collects the ``<a href>`` links that stay on the same scheme, host
and port, and then keeps visiting known pages, learning new links from each page it reads,
up to ``MAX_LINKS`` per user (so a large site does not turn the test into a crawl). Off-site
links, ``mailto:``/``javascript:`` links and fragments are ignored. Requests are grouped by
path in the statistics (query strings dropped) so the table stays readable.

    loadmem run scenarios/browse.py --target http://127.0.0.1:8080 --users 20 --load 2m
    locust --headless -f scenarios/browse.py --host http://127.0.0.1:8080 -u 20 -r 5 -t 1m
"""

from __future__ import annotations

import random
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

from locust import FastHttpUser, between, task

#: Links remembered per user.
MAX_LINKS = 200
#: Only pages up to this size are parsed for links.
MAX_PARSE_BYTES = 512 * 1024


class _LinkParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            for name, value in attrs:
                if name == "href" and value:
                    self.hrefs.append(value)


def same_origin_links(base_url: str, html: str) -> list[str]:
    """Paths (with query) of the links in ``html`` that stay on ``base_url``'s origin."""
    parser = _LinkParser()
    try:
        parser.feed(html)
    except Exception:  # a broken page must not break the load test
        return []
    origin = urlsplit(base_url)
    found: list[str] = []
    for href in parser.hrefs:
        url = urlsplit(urljoin(base_url, href.strip()))
        if (url.scheme, url.netloc) != (origin.scheme, origin.netloc):
            continue
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        found.append(path)
    return found


class Browser(FastHttpUser):
    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        self.links: list[str] = ["/"]
        self.known: set[str] = {"/"}
        self.visit("/")

    def visit(self, path: str) -> None:
        with self.client.get(path, name=path.split("?", 1)[0], catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}")
                return
            ctype = resp.headers.get("Content-Type", "") if resp.headers else ""
            text = resp.text or ""
            if "html" not in ctype or len(self.known) >= MAX_LINKS:
                return
            for link in same_origin_links(urljoin(self.host or "", path),
                                          text[:MAX_PARSE_BYTES]):
                if link not in self.known and len(self.known) < MAX_LINKS:
                    self.known.add(link)
                    self.links.append(link)

    @task
    def browse(self) -> None:
        self.visit(random.choice(self.links))
