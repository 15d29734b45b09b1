"""The corpus' load: every user fetches ``/`` (or ``CORPUS_PATHS``, comma-separated) in a loop.

Bounded by ``loadmem run --load`` and the short constant wait; loopback targets only.
"""

import os
import random

from locust import FastHttpUser, constant, task

PATHS = [p for p in os.environ.get("CORPUS_PATHS", "/").split(",") if p]


class Visitor(FastHttpUser):
    wait_time = constant(float(os.environ.get("CORPUS_WAIT", "0.01")))

    @task
    def get(self):
        path = random.choice(PATHS)
        self.client.get(path, name=path if len(PATHS) < 10 else "/file")
