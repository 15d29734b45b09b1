"""First of two locustfiles given as `-f multi_a.py,multi_b.py` (with locust.conf and LOCUST_*)."""

import json
import os

from locust import FastHttpUser, constant, events, task
from locust.exception import StopUser


@events.test_start.add_listener
def _(environment, **kw):
    o = environment.parsed_options
    with open(os.environ["CORPUS_OUT"], "a") as f:
        f.write(json.dumps({"hook": "options", "users": o.num_users, "rate": o.spawn_rate,
                            "run_time": o.run_time, "host": o.host,
                            "stop_timeout": o.stop_timeout}) + "\n")


class A(FastHttpUser):
    wait_time = constant(0.02)

    @task
    def a(self):
        self.n = getattr(self, "n", 0) + 1
        if self.n > 10:
            raise StopUser()
        self.client.get("/a")
