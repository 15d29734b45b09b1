"""Locust scenario for the bundled demo target (``loadmem run scenarios/demo.py --target demo``).

A shopper's mix: the listing most often, the home page, now and then a detail page of an
item seen in the listing. FastHttpUser keeps one keep-alive connection per user and is
several times faster than HttpUser, so one Locust process can push the demo server hard.

Detail pages pick ids from the listing only (20 popular items): a lookup bumps the
reference count of the entry it reads, which writes to its page, so random ids over the
whole table would slowly unshare it even in the ``frozen`` variant, and the comparison
between variants would measure the scenario instead of the garbage collector.

Works as a plain locustfile too:
    locust --headless -f scenarios/demo.py --host http://127.0.0.1:PORT -u 20 -r 20 -t 10s
"""

from __future__ import annotations

import random

from locust import FastHttpUser, between, task


class DemoShopper(FastHttpUser):
    # Short think time: a busy site, not a benchmark loop (use wait_time = 0 for that).
    wait_time = between(0.001, 0.01)

    def on_start(self) -> None:
        self.item_ids: list[int] = [0]
        self.listing()

    @task(5)
    def listing(self) -> None:
        with self.client.get("/api/items", catch_response=True) as resp:
            try:
                ids = [item["id"] for item in resp.json()["items"]]
            except (ValueError, KeyError, TypeError):
                resp.failure("listing is not the expected JSON")
                return
            if ids:
                self.item_ids = ids

    @task(3)
    def home(self) -> None:
        self.client.get("/")

    @task(1)
    def detail(self) -> None:
        self.client.get(f"/item/{random.choice(self.item_ids)}", name="/item/[id]")
