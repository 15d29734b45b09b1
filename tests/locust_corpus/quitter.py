"""A listener that ends the test (runner.quit()) and sets the exit code (process_exit_code)."""

import json
import os

import gevent
from locust import FastHttpUser, constant, events, task

STOP_AFTER = 20
state = {"env": None, "n": 0}


def log(hook, **data):
    with open(os.environ["CORPUS_OUT"], "a") as f:
        f.write(json.dumps({"hook": hook, **data}) + "\n")


@events.init.add_listener
def _(environment, **kw):
    state["env"] = environment


@events.request.add_listener
def _(**kw):
    state["n"] += 1
    if state["n"] == STOP_AFTER:
        log("quit_called", after=state["n"])
        gevent.spawn(state["env"].runner.quit)  # a threshold checker ends the test


@events.quitting.add_listener
def _(environment, **kw):
    environment.process_exit_code = 3
    log("quitting", exit_code=3)


class Q(FastHttpUser):
    wait_time = constant(0.05)

    @task
    def q(self):
        self.client.get("/q")
