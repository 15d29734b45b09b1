"""A step load that ends by itself: add users in steps, hold each step, then stop.

With the defaults: 10 users, +10 every 10 s, five steps (10, 20, 30, 40, 50 users), 50 s in
all; ``tick()`` then returns ``None`` and the load ends. Change the steps without editing
the file through environment variables: ``STEP_USERS`` (users added per step),
``STEP_SECONDS`` (length of a step), ``STEPS`` (number of steps).

Each user GETs ``/`` and, if the target is the loadmem demo, its JSON listing; both exist
on any site that serves ``/`` (a 404 on ``/api/items`` is not counted as a failure).

    loadmem run scenarios/step_load.py --target demo
    STEP_SECONDS=2 STEPS=3 locust --headless -f scenarios/step_load.py --host http://127.0.0.1:PORT
"""

from __future__ import annotations

import os

from locust import FastHttpUser, LoadTestShape, between, task


def _env_number(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


class StepUser(FastHttpUser):
    wait_time = between(0.01, 0.05)

    @task(3)
    def home(self) -> None:
        self.client.get("/")

    @task(1)
    def listing(self) -> None:
        with self.client.get("/api/items", catch_response=True) as resp:
            if resp.status_code == 404:
                resp.success()


class StepLoad(LoadTestShape):
    """``STEPS`` steps of ``STEP_USERS`` more users, ``STEP_SECONDS`` each, then stop."""

    step_users = int(_env_number("STEP_USERS", 10))
    step_seconds = _env_number("STEP_SECONDS", 10)
    steps = int(_env_number("STEPS", 5))

    def tick(self) -> tuple[int, float] | None:
        run_time = self.get_run_time()
        step = int(run_time // self.step_seconds)
        if step >= self.steps:
            return None
        users = (step + 1) * self.step_users
        return users, float(self.step_users)  # reach each step within about a second
