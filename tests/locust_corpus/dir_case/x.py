"""One of the locustfiles of `-f dir_case/` (a directory), with [tool.locust] in pyproject.toml."""

import os

from locust import HttpUser, constant, task
from locust.exception import StopUser


class X(HttpUser):
    host = os.environ["CORPUS_HOST"]
    wait_time = constant(0.02)

    @task
    def x(self):
        self.n = getattr(self, "n", 0) + 1
        if self.n > 8:
            raise StopUser()
        self.client.get("/x")
