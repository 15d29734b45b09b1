"""A LoadTestShape: 1 user, then 3, then the end (tick() returns None after 3 s)."""

import json
import os

from locust import FastHttpUser, LoadTestShape, constant, events, task
from locust.exception import StopUser


@events.spawning_complete.add_listener
def _(user_count, **kw):
    with open(os.environ["CORPUS_OUT"], "a") as f:
        f.write(json.dumps({"hook": "spawning_complete", "user_count": user_count}) + "\n")


class S(FastHttpUser):
    wait_time = constant(0.05)

    @task
    def s(self):
        self.n = getattr(self, "n", 0) + 1
        if self.n > 10:
            raise StopUser()
        self.client.get("/s")


class Steps(LoadTestShape):
    def tick(self):
        t = self.get_run_time()
        if t < 1.0:
            return (1, 10)
        if t < 3.0:
            return (3, 10)
        return None
