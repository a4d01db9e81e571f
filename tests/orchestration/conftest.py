"""Orchestration fixtures: pause the session worker's consumer of a queue, start extra worker processes on the
test broker and database, as an operator would start another worker host, an action whose answer PostgreSQL or
JSON cannot hold as it is, and one that lets a test act while an action runs (registered here, before the session
worker starts)."""
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from contextlib import contextmanager

import pytest
from django.conf import settings
from django.db import connection

from agents.core.actions import ActionContext, action
from agents.core.params import Param
from agentsite.celery import app as celery_app
from tests.conftest import PROJECT_DIR

SESSION_WORKER = "tests@localhost"


@action("test.odd_answer", params={"kind": Param("string", required=True)})
def odd_answer(context: ActionContext, *, kind: str):
    """Answer what PostgreSQL cannot store as it is (a NUL) or JSON cannot hold at all (a set)."""
    return {"text": "a\x00b"} if kind == "nul" else {1, 2}


#: What the next run of ``test.meanwhile`` does while it runs (a second delivery of its message), and its runs.
meanwhile_hooks: list[Callable[[], None]] = []
meanwhile_runs: list[str] = []


@action("test.meanwhile")
def meanwhile(context: ActionContext):
    """Count the run, do what a test queued to happen while it runs (each thing once), and answer the run's number."""
    meanwhile_runs.append(context.step_id)
    while meanwhile_hooks:
        meanwhile_hooks.pop(0)()
    return {"run": len(meanwhile_runs)}


@pytest.fixture
def while_acting():
    """The list of what ``test.meanwhile`` does during its next run; the action starts each test with no runs."""
    meanwhile_hooks.clear()
    meanwhile_runs.clear()
    yield meanwhile_hooks
    meanwhile_hooks.clear()


def on_another_connection(call: Callable[[], object], answers: list) -> Callable[[], None]:
    """Something for ``while_acting`` to do: ``call()`` on a thread of its own, so on a database connection of its
    own (closed after), as another worker would; its answer is appended to ``answers``."""
    def run() -> None:
        try:
            answers.append(call())
        finally:
            connection.close()

    def in_a_thread() -> None:
        thread = threading.Thread(target=run)
        thread.start()
        thread.join()

    return in_a_thread


@contextmanager
def consumer_paused(queue: str):
    """The session's worker stops taking messages from ``queue`` for the block: no agent of that type is up."""
    replies = celery_app.control.cancel_consumer(queue, destination=[SESSION_WORKER], reply=True, timeout=5)
    assert replies, f"the session worker did not confirm it stopped consuming {queue!r}"
    try:
        yield
    finally:
        celery_app.control.add_consumer(queue, destination=[SESSION_WORKER], reply=True, timeout=5)


@contextmanager
def worker_process(hostname: str, queues: list[str], *, concurrency: int = 1):
    """A real worker process on the test database and broker; stopped with SIGTERM (a warm shutdown)."""
    database = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "AGENTS_STATUS_INTERVAL_S": "0.1",
        "AGENTS_HEARTBEAT_INTERVAL_S": "0.5",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "agentsite", "worker", "-Q", ",".join(queues), "-n", hostname,
         "-c", str(concurrency), "--loglevel", "WARNING", "--without-mingle", "--without-gossip"],
        cwd=PROJECT_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
