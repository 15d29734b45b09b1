"""The other locustfile of `-f dir_case/`."""

import os

from locust import HttpUser, constant, task
from locust.exception import StopUser


class Y(HttpUser):
    host = os.environ["CORPUS_HOST"]
    wait_time = constant(0.02)

    @task
    def y(self):
        self.n = getattr(self, "n", 0) + 1
        if self.n > 8:
            raise StopUser()
        self.client.get("/y")
