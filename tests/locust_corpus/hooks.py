"""Every event hook, a custom argument, tags, two User classes with weights and `host`.

Each hook appends one JSON line to the file named by $CORPUS_OUT (the side effects the
corpus test compares between `locust --headless` and `loadmem run`). Each user sends a
bounded number of requests, then stops: counts do not depend on timing.
"""

import json
import os

from locust import FastHttpUser, HttpUser, SequentialTaskSet, constant, events, tag, task
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner

HOST = os.environ["CORPUS_HOST"]
PER_USER = 12


def log(hook, **data):
    with open(os.environ["CORPUS_OUT"], "a") as f:
        f.write(json.dumps({"hook": hook, "pid": os.getpid(), **data}) + "\n")


@events.init_command_line_parser.add_listener
def _(parser, **kw):
    parser.add_argument("--my-arg", type=int, default=0, help="a custom argument")
    log("init_command_line_parser")


@events.init.add_listener
def _(environment, runner, **kw):
    kind = ("master" if isinstance(runner, MasterRunner)
            else "worker" if isinstance(runner, WorkerRunner) else "local")
    log("init", runner=kind, my_arg=environment.parsed_options.my_arg,
        users=environment.parsed_options.num_users, tags=environment.parsed_options.tags)


@events.test_start.add_listener
def _(environment, **kw):
    log("test_start", my_arg=environment.parsed_options.my_arg)


@events.spawning_complete.add_listener
def _(user_count, **kw):
    log("spawning_complete", user_count=user_count)


@events.request.add_listener
def _(request_type, name, exception, **kw):
    log("request", name=name, failed=exception is not None)


@events.report_to_master.add_listener
def _(client_id, data, **kw):
    data["corpus"] = os.getpid()
    if not getattr(_, "logged", False):
        _.logged = True
        log("report_to_master")


@events.worker_report.add_listener
def _(client_id, data, **kw):
    if "corpus" in data:
        log("worker_report", worker=data["corpus"])


@events.test_stop.add_listener
def _(environment, **kw):
    log("test_stop")


@events.quitting.add_listener
def _(environment, **kw):
    log("quitting")


class Bounded:
    def count(self):
        self.sent = getattr(self, "sent", 0) + 1
        if self.sent > PER_USER:
            raise StopUser()


class ReaderTasks(SequentialTaskSet):
    """In order (so the counts per name do not depend on chance): /items 3x, health 1x."""

    @tag("api")
    @task(3)
    def items(self):
        self.user.count()
        self.client.get("/items")

    @tag("api")
    @task(1)
    def health(self):
        self.user.count()
        self.client.get("/health", name="health")

    @tag("slow")
    @task(1)
    def excluded(self):  # never runs with --tags api
        self.client.get("/excluded")


class Reader(Bounded, FastHttpUser):
    host = HOST
    weight = 2
    wait_time = constant(0.02)
    tasks = [ReaderTasks]  # noqa: RUF012  (Locust's documented spelling)


class Writer(Bounded, HttpUser):
    host = HOST
    weight = 1
    wait_time = constant(0.02)

    @tag("api")
    @task
    def orders(self):
        self.count()
        self.client.get("/orders", name="orders")
