"""Failed requests and task errors: Locust exits with --exit-code-on-error's code."""

from locust import FastHttpUser, constant, task
from locust.exception import StopUser


class F(FastHttpUser):
    wait_time = constant(0.02)

    @task
    def f(self):
        self.n = getattr(self, "n", 0) + 1
        if self.n > 12:
            raise StopUser()
        with self.client.get("/f", catch_response=True) as r:
            if self.n % 3 == 0:
                r.failure("every third answer is judged wrong")
        if self.n % 4 == 0:
            raise ValueError("a task error on purpose")
