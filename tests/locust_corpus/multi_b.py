"""Second locustfile of `-f multi_a.py,multi_b.py`."""

from locust import FastHttpUser, constant, task
from locust.exception import StopUser


class B(FastHttpUser):
    wait_time = constant(0.02)

    @task
    def b(self):
        self.n = getattr(self, "n", 0) + 1
        if self.n > 10:
            raise StopUser()
        self.client.get("/b")
